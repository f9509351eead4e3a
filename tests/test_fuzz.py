"""Issue 21: property-based tests (hypothesis) of the inputs a user controls.

The command line's parsers, documents files, deletion sets and manifests get
generated inputs; each either works as its model says or fails with a
one-line error naming what is wrong (the option as typed, the file and line,
the field).  No compiled code runs here: a modest number of examples each.
"""

from __future__ import annotations

import argparse
import json
import shutil
import string
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from runtime.cli import COMMANDS, build_parser
from runtime.cli.common import CLIError
from runtime.integrity import check_file_name, check_seal, field_checksums
from runtime.query import deletion_weights, parse_indices
from runtime.sources.documents import read_document_lines
from runtime.store import MANIFEST, Sketch, SketchError
from tests.test_runtime_store import _write_sketch

FEW = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


# ---------------------------------------------------------------- command-line parsers
def _subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def _typed_options(name: str) -> list[tuple[str, argparse.Action]]:
    """(option string, action) of every option of command `name` that takes a typed value."""
    out = []
    for a in _subparser(name)._actions:
        if a.option_strings and a.type is not None and a.nargs is None:
            out.extend((s, a) for s in a.option_strings if s.startswith("--"))
    return out


TYPED = [(c, o) for c in COMMANDS for o, _ in _typed_options(c)]
token = st.one_of(
    st.text(string.ascii_letters + string.digits + "-_.,:=/ ", max_size=12),
    st.integers(-(10**12), 10**12).map(str),
    st.sampled_from(["--", "-", "--json", "--doc", "nan", "inf", "1e3", "0x10", ""]),
)


@FEW
@given(command=st.sampled_from(sorted(COMMANDS)), argv=st.lists(token, max_size=8))
def test_any_argv_parses_or_fails_in_one_line(command, argv):
    """Whatever is typed after a command: a namespace, or one CLIError line (never
    another exception, never argparse's exit)."""
    assume("-h" not in argv and "--help" not in argv)
    try:
        build_parser().parse_args([command, *argv])
    except CLIError as e:
        assert str(e) and "\n" not in str(e).strip()


def _required(command: str, skip: str) -> list[str]:
    """Arguments that make `command`'s parse succeed, without option `skip`."""
    parser = _subparser(command)
    argv = []
    for a in parser._actions:
        if not a.option_strings and a.nargs is None:
            argv.append("SK")
        elif a.required and skip not in a.option_strings:
            argv += [a.option_strings[0], "1"]
    for g in parser._mutually_exclusive_groups:
        if g.required and not any(skip in a.option_strings for a in g._group_actions):
            argv += [g._group_actions[0].option_strings[0], "1"]
    return argv


@FEW
@given(case=st.sampled_from(TYPED), value=st.one_of(token, st.integers(-5, 5).map(str)))
def test_a_bad_option_value_names_the_option_typed(case, value):
    """A value the option's type refuses is an error naming that option ('--' excluded:
    argparse reads it as the end of the options, whatever it follows)."""
    command, option = case
    assume(value != "--")
    action = dict(_typed_options(command))[option]
    try:
        action.type(value)
    except (argparse.ArgumentTypeError, ValueError, TypeError):
        ok = False
    else:
        ok = True
    if ok:
        return
    with pytest.raises(CLIError) as e:
        build_parser().parse_args([command, *_required(command, option), f"{option}={value}"])
    assert option in str(e.value), str(e.value)


@FEW
@given(
    command=st.sampled_from(sorted(COMMANDS)),
    word=st.text(string.ascii_lowercase + "-", min_size=1, max_size=12),
)
def test_an_unknown_or_abbreviated_option_is_named_as_typed(command, word):
    option = f"--{word}"
    known = {s for a in _subparser(command)._actions for s in a.option_strings}
    assume(option not in known)
    with pytest.raises(CLIError) as e:
        build_parser().parse_args([command, option, "1"])
    assert f"unrecognized option {option}" in str(e.value)


# ---------------------------------------------------------------- documents files
line = st.one_of(
    st.text(string.ascii_lowercase, min_size=1, max_size=8),
    st.sampled_from(["", "  ", "\t", " ava ", "emma\r"]),
    st.binary(min_size=1, max_size=4).filter(lambda b: b"\n" not in b),
)


def _encode(x) -> bytes:
    return x if isinstance(x, bytes) else x.encode()


def _decodes(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@FEW
@given(lines=st.lists(line, max_size=10), final_newline=st.booleans())
def test_documents_file_model(tmp_path_factory, lines, final_newline):
    """Document i is line i + 1; the first undecodable line, else the first blank line
    before the last document, is named; trailing blank lines are ignored."""
    raw = [_encode(x) for x in lines]
    assume(not raw or not raw[0].startswith(b"\xef\xbb\xbf"))
    f = tmp_path_factory.mktemp("docs") / "d.txt"
    f.write_bytes(b"\n".join(raw) + (b"\n" if final_newline and raw else b""))
    bad = [i for i, b in enumerate(raw, 1) if not _decodes(b)]
    texts = [(i, b.decode().strip()) for i, b in enumerate(raw, 1) if _decodes(b)]
    kept = [(i, t) for i, t in texts if t]
    blanks = [i for i, t in texts if not t and kept and i < kept[-1][0]]
    if bad:
        with pytest.raises(ValueError, match=rf"d\.txt', line {bad[0]}: not UTF-8"):
            read_document_lines(f)
    elif not kept:
        with pytest.raises(ValueError, match="holds no documents"):
            read_document_lines(f)
    elif blanks:
        with pytest.raises(ValueError, match=rf"line {blanks[0]}: blank line"):
            read_document_lines(f)
        assert read_document_lines(f, skip_blank=True, warn=lambda m: None) == kept
    else:
        assert read_document_lines(f) == kept


# ---------------------------------------------------------------- deletion sets
@FEW
@given(n=st.integers(1, 40), data=st.data())
def test_index_lists_and_ranges(n, data):
    parts = data.draw(
        st.lists(
            st.one_of(
                st.integers(0, n - 1).map(lambda i: (i, i)),
                st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)).map(sorted).map(tuple),
            ),
            min_size=1,
            max_size=6,
        )
    )
    text = ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in parts)
    every = sorted(i for a, b in parts for i in range(a, b + 1))
    want = sorted(set(every))
    if every != want:  # an index given twice is refused, as --sets refuses it
        with pytest.raises(ValueError, match="appears more than once"):
            parse_indices(text, n)
        return
    assert parse_indices(text, n) == want
    w, sel, _ = deletion_weights(["d"] * n, indices=text, weight=0.5)
    assert sel == want and np.flatnonzero(w).tolist() == want and set(w[want]) == {0.5}


@FEW
@given(n=st.integers(1, 30), text=st.text(string.digits + ",- x", max_size=12))
def test_any_index_text_is_in_range_or_refused_naming_the_option(n, text):
    try:
        got = parse_indices(text, n)
    except ValueError as e:
        assert str(e).startswith("--delete-indices: "), str(e)
    else:
        assert got and all(0 <= i < n for i in got) and got == sorted(set(got))


@FEW
@given(
    docs=st.lists(st.text("abc", min_size=1, max_size=4), min_size=1, max_size=12),
    sub=st.text("abc", min_size=1, max_size=2),
)
def test_delete_contains_model(docs, sub):
    want = [i for i, d in enumerate(docs) if sub in d]
    if not want:
        with pytest.raises(ValueError, match="--delete-contains"):
            deletion_weights(docs, contains=sub)
    else:
        assert deletion_weights(docs, contains=sub)[1] == want


# ---------------------------------------------------------------- manifests
@pytest.fixture(scope="module")
def manifest_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("manifest") / "sk"
    _write_sketch(d)
    return d


json_value = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(-2, 2), st.text(max_size=4)),
    lambda inner: (
        st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=3), inner, max_size=2)
    ),
    max_leaves=4,
)


def _leaf_paths(obj, prefix=()):
    if isinstance(obj, dict) and obj:
        for k, v in obj.items():
            yield from _leaf_paths(v, (*prefix, k))
    else:
        yield prefix


@FEW
@given(data=st.data())
def test_any_value_edit_is_named(manifest_dir, data):
    """Replace one leaf of the manifest's content with another JSON value: opening the
    sketch is refused, naming exactly that field."""
    m = json.loads((manifest_dir / MANIFEST).read_text())
    content = {k: v for k, v in m.items() if k not in ("checksum", "field_checksums")}
    paths = sorted(_leaf_paths(content), key=repr)
    path = data.draw(st.sampled_from(paths))
    new = data.draw(json_value)
    target = m
    for k in path[:-1]:
        target = target[k]
    assume(json.dumps(target[path[-1]], sort_keys=True) != json.dumps(new, sort_keys=True))
    assume(not (isinstance(new, dict) and new))  # a dict is several leaves
    target[path[-1]] = new
    stored, now = m["field_checksums"], field_checksums(m)
    (changed,) = [p for p in now if stored.get(p) != now[p]]  # one leaf, as edited
    with pytest.raises(SketchError) as e:
        check_seal(m, "manifest.json")
    assert f"manifest.json was altered: field {changed} " in str(e.value), (changed, str(e.value))


@FEW
@given(name=st.text(string.ascii_letters + string.digits + "._-/\\ ", min_size=1, max_size=16))
def test_file_name_rule(manifest_dir, name):
    """A name is accepted exactly when it is a plain relative path inside the folder."""
    parts = name.split("/")
    allowed = set(string.ascii_letters + string.digits + "._-")
    plain = all(p and p[0] not in ".-" and set(p) <= allowed for p in parts)
    try:
        check_file_name(name, manifest_dir, "m")
    except SketchError as e:
        assert not plain, (name, str(e))
        assert "outside the sketch folder" in str(e)
    else:
        assert plain, name


@FEW
@given(indent=st.sampled_from([None, 0, 1, 4]), reverse=st.booleans())
def test_formatting_of_a_manifest_is_not_an_edit(tmp_path_factory, manifest_dir, indent, reverse):
    m = json.loads((manifest_dir / MANIFEST).read_text())
    d = tmp_path_factory.mktemp("fmt") / "sk"
    shutil.copytree(manifest_dir, d)
    items = list(m.items())
    (d / MANIFEST).write_text(
        json.dumps(dict(reversed(items) if reverse else items), indent=indent)
    )
    Sketch.open(d)
