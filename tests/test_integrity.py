"""Issue 21: the integrity model on synthetic sketches (no compiled code).

The sealed manifest names every edit; file names stay inside the folder;
stamps let a file verified once skip re-hashing until it changes; derived
results are dropped when their inputs change and refused when the sketch's
files are corrupt; a failed compile start leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

import runtime.store as store_mod
from runtime import files as files_mod
from runtime import resources
from runtime.integrity import STAMPS, check_seal
from runtime.sources.documents import read_document_lines, read_documents
from runtime.store import MANIFEST, Sketch, SketchError, SketchWriter, chunk_name, write_manifest
from tests.test_runtime_store import CONFIG, _write_sketch


@pytest.fixture
def sk(tmp_path):
    _write_sketch(tmp_path / "sk")
    return tmp_path / "sk"


def edit(path, change, reseal=False):
    """Apply `change` to the manifest's JSON, written by hand (or resealed, as a writer)."""
    m = json.loads((path / MANIFEST).read_text())
    change(m)
    if reseal:
        write_manifest(path, m)
    else:
        (path / MANIFEST).write_text(json.dumps(m))


# ---------------------------------------------------------------- the seal
def test_manifest_is_sealed_and_formatting_is_not_content(sk):
    m = json.loads((sk / MANIFEST).read_text())
    assert len(m["checksum"]) == 64 and m["field_checksums"]["config.num_docs"]
    check_seal(m, "x")
    # other key order and whitespace: the same canonical content
    (sk / MANIFEST).write_text(json.dumps(dict(reversed(m.items())), indent=None))
    Sketch.open(sk).verify_all()


@pytest.mark.parametrize(
    "change, named",
    [
        (lambda m: m["config"].__setitem__("num_docs", 4), "field config.num_docs"),
        (lambda m: m["config"].__setitem__("degree", 3), "field config.degree"),
        (lambda m: m["config"]["init"].__setitem__("seed", 1), "field config.init.seed"),
        (lambda m: m["config"].__setitem__("extra", 1), "field config.extra (added)"),
        (lambda m: m["config"].pop("seed"), "field config.seed (removed)"),
        (lambda m: m.__setitem__("complete", False), "field complete"),
        (
            lambda m: m["files"]["docs.npy"].__setitem__("sha256", "0" * 64),
            'field files["docs.npy"].sha256',
        ),
        (lambda m: m["files"].pop("losses.npy"), 'field files["losses.npy"] (removed)'),
        (lambda m: m["config"].__setitem__("seed", float("nan")), "field config.seed"),
        (lambda m: m.__setitem__("checksum", "1" * 64), "its checksum or field_checksums"),
        (lambda m: m.pop("field_checksums"), "carries no checksum"),
    ],
)
def test_every_edit_is_refused_naming_the_field(sk, change, named):
    edit(sk, change)
    for attempt in (lambda: Sketch.open(sk), lambda: SketchWriter(sk, CONFIG).open()):
        with pytest.raises(SketchError) as e:
            attempt()
        assert named in str(e.value) and "manifest.json" in str(e.value), str(e.value)
        assert "\n" not in str(e.value)


def test_a_resealed_manifest_is_trusted(sk):
    """What a writer seals is accepted (so the refusals above come from the edits)."""
    edit(sk, lambda m: m["info"].__setitem__("note", "mine"), reseal=True)
    assert Sketch.open(sk).manifest["info"]["note"] == "mine"


def put(sk, name, arr):
    """Replace array file `name` and reseal its entry (a writer's legitimate-looking state)."""
    entry = files_mod.atomic_save(sk / name, arr)
    edit(sk, lambda m: m["files"].__setitem__(name, entry), reseal=True)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda sk: edit(sk, lambda m: m["config"].__setitem__("num_docs", 4), reseal=True),
         "config.num_docs is 4 but docs.npy holds 3 documents"),
        (lambda sk: edit(sk, lambda m: m["config"].__setitem__("steps", 99), reseal=True),
         "config.steps is 99 but losses.npy holds the losses of 3 steps"),
        (lambda sk: edit(sk, lambda m: m["config"].__setitem__("chunk_size", 0), reseal=True),
         "manifest.json: config.chunk_size is 0, expected >= 1"),
        (lambda sk: put(sk, "losses.npy", np.zeros(2)),
         "config.steps is 3 but losses.npy holds the losses of 2 steps"),
        (lambda sk: put(sk, "directions.npy", np.ones((4, 3), np.complex128)),
         "config.num_directions is 5 but directions.npy holds 4 directions"),
    ],
    ids=["num_docs", "steps", "chunk_size", "losses.npy", "directions.npy"],
)
def test_a_resealed_configuration_must_agree_with_the_arrays(sk, change, message):
    """N, M, T and the chunk size are read from the configuration: a resealed edit that
    contradicts the arrays' shapes is refused at open, naming the field and the file."""
    change(sk)
    with pytest.raises(SketchError, match=message) as e:
        Sketch.open(sk)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("name", ["params0.npy", chunk_name(1)])
def test_a_resealed_non_finite_array_is_refused_when_read(sk, name):
    """A NaN would make every result NaN, with exit status 0."""
    arr = np.load(sk / name).copy()
    arr.flat[1] = np.nan
    put(sk, name, arr)
    for read in (lambda s: s.load(name), lambda s: s.verify_all()):
        with pytest.raises(SketchError, match=f"file {name}: holds a non-finite value"):
            read(Sketch.open(sk))


@pytest.mark.parametrize(
    "name, change, want",
    [
        ("directions.npy", lambda a: a.real.copy(), "complex128"),
        (chunk_name(1), lambda a: a.real.copy(), "complex128"),
        ("params0.npy", lambda a: a.astype(np.complex128), "float64"),
        ("docs.npy", lambda a: np.arange(3), "str"),
    ],
    ids=["directions", "chunk", "params0", "docs"],
)
def test_a_resealed_array_of_another_dtype_is_refused_at_open(sk, capsys, name, change, want):
    """A real directions.npy or chunk (the imaginary parts dropped, the manifest resealed)
    passed every check and gave other numbers, with exit status 0: the configuration
    decides each file's dtype, as it decides N, M and T."""
    from tests.cli_helpers import one_line_error

    arr = change(np.load(sk / name))
    put(sk, name, arr)
    message = f"sketch '{sk}': file {name} has dtype {arr.dtype}, expected {want}"
    with pytest.raises(SketchError) as e:
        Sketch.open(sk)
    assert str(e.value) == message
    assert one_line_error(capsys, "verify", sk) == f"error: {message}\n"


@pytest.mark.parametrize(
    "change, named",
    [
        (lambda a: np.where(np.arange(a.size).reshape(a.shape) == 1, np.nan, a),
         "holds a non-finite value (NaN or infinity) at index (0, 0, 1)"),
        (lambda a: a.real.copy(), "has dtype float64, expected complex128"),
    ],
    ids=["nan", "real"],
)
def test_a_resume_recomputes_a_chunk_it_cannot_vouch_for(sk, change, named):
    """A compile resuming a sketch hashed a listed chunk and stamped it, so a NaN in it
    (or a real chunk) was trusted by every later read: it is dropped and recomputed."""
    name = chunk_name(1)
    put(sk, name, change(np.load(sk / name)))
    warnings = []
    with SketchWriter(sk, CONFIG, warn=warnings.append) as w:
        assert w.done_chunks() == {0, 2}
    assert len(warnings) == 1 and f"file {name}" in warnings[0] and named in warnings[0]
    assert "it will be recomputed" in warnings[0]
    with pytest.raises(SketchError, match=r"incomplete \(2 of 3 chunks\)"):
        Sketch.open(sk)


@pytest.mark.parametrize(
    "name", ["../x.npy", "/etc/passwd", "chunks/../../x.npy", ".hidden.npy", "a\\b.npy", ""]
)
def test_file_names_outside_the_folder_are_refused(sk, name):
    edit(sk, lambda m: m["files"].__setitem__(name, m["files"].pop("docs.npy")), reseal=True)
    with pytest.raises(SketchError, match="lists a file outside the sketch folder"):
        Sketch.open(sk)


def test_a_symlink_out_of_the_folder_is_refused(sk, tmp_path):
    outside = tmp_path / "elsewhere.npy"
    shutil.copy(sk / "docs.npy", outside)
    (sk / "docs.npy").unlink()
    (sk / "docs.npy").symlink_to(outside)
    with pytest.raises(SketchError, match=r"outside the sketch folder: 'docs\.npy'"):
        Sketch.open(sk)


# ---------------------------------------------------------------- stamps
def test_a_verified_file_is_not_hashed_again_until_it_changes(sk, monkeypatch):
    Sketch.open(sk).verify_all()
    assert (sk / STAMPS).is_file()
    hashed = []
    real = store_mod.check_file
    monkeypatch.setattr(
        store_mod, "check_file", lambda p, e, lab: (hashed.append(p), real(p, e, lab))
    )
    names = [chunk_name(c) for c in range(3)]
    Sketch.open(sk).ensure_verified(names)  # another process: stamps still hold
    assert hashed == []
    f = sk / chunk_name(1)
    data = bytearray(f.read_bytes())
    data[-1] ^= 1  # same size; mtime (and ctime) move
    f.write_bytes(bytes(data))
    with pytest.raises(SketchError, match=r"chunks/phi_00001\.npy: corrupt"):
        Sketch.open(sk).ensure_verified(names)
    assert hashed == [sk / chunk_name(1)]
    # even with the old mtime restored, the ctime gives the change away
    st = os.stat(sk / chunk_name(0))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(SketchError, match="corrupt"):
        Sketch.open(sk).ensure_verified(names)


def test_stamps_of_the_old_format_are_verified_again(sk, monkeypatch):
    """Stamps written before a hash also checked the values vouch for no finiteness: a file
    they cover is hashed (and its values checked) once more, then stamped anew."""
    from runtime.files import stamp_of

    arr = np.load(sk / "params0.npy").copy()
    arr[1] = np.nan
    put(sk, "params0.npy", arr)
    entries = json.loads((sk / MANIFEST).read_text())["files"]
    old = {n: [e["sha256"], *stamp_of(sk / n)] for n, e in entries.items()}  # the old format
    (sk / STAMPS).write_text(json.dumps(old))
    for read in (lambda s: s.load("params0.npy"), lambda s: s.ensure_verified(["params0.npy"])):
        with pytest.raises(SketchError, match=r"file params0\.npy: holds a non-finite value"):
            read(Sketch.open(sk))
    hashed = []
    real = files_mod.sha256_of
    monkeypatch.setattr(files_mod, "sha256_of", lambda f: (hashed.append(1), real(f))[1])
    name = chunk_name(0)
    Sketch.open(sk).load(name)  # a finite file under an old stamp: hashed once
    Sketch.open(sk).load(name)  # ... then trusted on its new stamp
    assert hashed == [1]


def test_a_copy_is_verified_afresh(sk, tmp_path):
    Sketch.open(sk).verify_all()
    shutil.copytree(sk, tmp_path / "copy")  # stamps copied too, but inodes differ
    f = tmp_path / "copy" / chunk_name(2)
    data = bytearray(f.read_bytes())
    data[-2] ^= 4
    f.write_bytes(bytes(data))
    with pytest.raises(SketchError, match="corrupt"):
        Sketch.open(tmp_path / "copy").ensure_verified([chunk_name(2)])


# ---------------------------------------------------------------- derived results
def test_derived_result_roundtrip_and_inputs(sk):
    s = Sketch.open(sk)
    d = s.derived("thing", inputs=["params0.npy"])
    assert d.get("k") is None
    arr = np.arange(4.0)
    assert d.put("k", arr, {"note": 1}) is not None
    hit = Sketch.open(sk).derived("thing", inputs=["params0.npy"]).get("k")
    np.testing.assert_array_equal(hit.array, arr)
    assert hit.meta == {"note": 1}
    calls = []
    got = s.derived("thing", ["params0.npy"]).get_or_compute("k", lambda: calls.append(1))
    np.testing.assert_array_equal(got, arr)
    assert calls == []


def test_derived_result_is_dropped_when_an_input_changes(sk):
    warnings = []
    Sketch.open(sk).derived("thing").put("k", np.ones(3))
    # a legitimate new state of the sketch (a writer recomputed a chunk): resealed
    edit(sk, lambda m: m["files"][chunk_name(0)].__setitem__("sha256", "f" * 64), reseal=True)
    d = Sketch.open(sk, require_complete=False).derived("thing", warn=warnings.append)
    assert d.get("k") is None
    assert "another version of the sketch's file chunks/phi_00000.npy" in warnings[0]
    assert not list((sk / "thing").glob("*.npy"))  # dropped


def test_derived_result_is_refused_when_the_sketch_is_corrupt(sk):
    Sketch.open(sk).derived("thing").put("k", np.ones(3))
    f = sk / chunk_name(2)
    data = bytearray(f.read_bytes())
    data[-1] ^= 1
    f.write_bytes(bytes(data))
    with pytest.raises(SketchError, match=r"chunks/phi_00002\.npy: corrupt"):
        Sketch.open(sk).derived("thing").get("k")
    # a result that never read that chunk is not concerned by it
    Sketch.open(sk).derived("other", ["docs.npy"]).put("k", np.ones(2))
    assert Sketch.open(sk).derived("other", ["docs.npy"]).get("k") is not None


def test_corrupt_or_misshapen_result_is_recomputed(sk):
    d = Sketch.open(sk).derived("thing")
    npy = d.put("k", np.ones(3))
    data = bytearray(npy.read_bytes())
    data[-1] ^= 1
    npy.write_bytes(bytes(data))
    warnings = []
    assert Sketch.open(sk).derived("thing", warn=warnings.append).get("k") is None
    assert "corrupt" in warnings[0] and "sidecar says" in warnings[0]
    d.put("k", np.ones(3))
    assert Sketch.open(sk).derived("thing", warn=warnings.append).get("k", shape=(4,)) is None
    assert "expected" in warnings[-1]


DEEP = "[" * 100_000 + "]" * 100_000  # json.loads raises RecursionError, not a decode error


def test_json_nested_too_deeply_is_a_bad_file_not_a_traceback(sk, tmp_path):
    """Every reader of a JSON file treats RecursionError as read_manifest does: unreadable."""
    from runtime.batch_retrain import read_results
    from runtime.deletion_sets import parse_sets
    from runtime.findings import findings_path, read_findings

    with pytest.raises(ValueError, match="line 1: not valid JSON"):
        parse_sets('{"delete": ' + DEEP + "}", 5, "--sets 'f.jsonl'")
    out = tmp_path / "results.jsonl"
    out.write_text(DEEP + "\n")
    sets = parse_sets('{"delete": [1]}', 5, "--sets 'f.jsonl'")
    with pytest.raises(ValueError, match="line 1 is not a retrain result record"):
        read_results(out, sets, "run", print)
    sketch = Sketch.open(sk)
    findings_path(sketch).parent.mkdir()
    findings_path(sketch).write_text(DEEP)
    with pytest.raises(SketchError, match="are unreadable"):
        read_findings(sketch)
    (sk / STAMPS).write_text(DEEP)
    Sketch.open(sk).verify_all()  # the stamps are only a cache: verified afresh
    warnings = []
    d = Sketch.open(sk).derived("thing", warn=warnings.append)
    npy = d.put("k", np.ones(3))
    npy.with_suffix(".json").write_text(DEEP)
    assert d.get("k") is None and "is unreadable" in warnings[0]


def test_read_only_sketch_answers_without_storing(sk, monkeypatch):
    import runtime.derived as derived_mod

    def read_only(path, arr):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(derived_mod, "atomic_save", read_only)
    warnings = []
    d = Sketch.open(sk).derived("thing", warn=warnings.append)
    assert d.get_or_compute("k", lambda: np.ones(2)).tolist() == [1.0, 1.0]
    assert "cannot store the stored thing result" in warnings[0] and "Read-only" in warnings[0]


# ---------------------------------------------------------------- writer
def test_failed_start_leaves_nothing_behind(tmp_path):
    out = tmp_path / "new"
    with pytest.raises(RuntimeError), SketchWriter(out, CONFIG) as w, w.discarding():
        w.ensure("directions.npy", np.ones((5, 3), np.complex128))
        raise RuntimeError("scheduler unreachable")
    assert not out.exists()


def test_an_interrupted_write_leaves_nothing_behind(tmp_path, monkeypatch):
    """Ctrl-C while a write's temporary file exists: the write removes it, and a writer
    discarding its empty start removes what such a write left (an interrupt can land
    before the write knows the file's name), so the folder goes."""
    real_fdopen = os.fdopen

    def interrupted(fd, *a, **k):
        real_fdopen(fd, *a, **k).close()
        raise KeyboardInterrupt

    out = tmp_path / "new"
    with SketchWriter(out, CONFIG) as w:
        monkeypatch.setattr(files_mod.os, "fdopen", interrupted)
        with pytest.raises(KeyboardInterrupt):
            files_mod.atomic_write_bytes(out / "manifest.json", b"{}")
        monkeypatch.setattr(files_mod.os, "fdopen", real_fdopen)
        assert not list(out.glob(".*.tmp"))
        (out / ".manifest.json.abc123.tmp").write_bytes(b"{")  # what an earlier cut left
        assert w.discard()
    assert not out.exists()


def test_an_array_written_before_the_manifest_lists_it_is_discarded(tmp_path, monkeypatch):
    """Ctrl-C after an array's file is in place but before the manifest names it (what
    .ci/run once caught with directions.npy): discarding the empty start removes it."""
    out = tmp_path / "new"
    with SketchWriter(out, CONFIG) as w:
        monkeypatch.setattr(w.stamps, "record", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
        with pytest.raises(KeyboardInterrupt):
            w.put("directions.npy", np.ones((2, 3), np.complex128))
        assert (out / "directions.npy").is_file()
        assert w.discard()
    assert not out.exists()


def test_failed_resume_keeps_finished_chunks(tmp_path):
    _write_sketch(tmp_path / "sk", chunks=(0,), finish=False)
    with pytest.raises(RuntimeError), SketchWriter(tmp_path / "sk", CONFIG) as w, w.discarding():
        raise RuntimeError("killed worker")
    with SketchWriter(tmp_path / "sk", CONFIG) as w:
        assert w.done_chunks() == {0}


# ---------------------------------------------------------------- documents and resources
def test_documents_file_lines(tmp_path):
    f = tmp_path / "d.txt"
    f.write_bytes(b"\xef\xbb\xbfemma\r\n ava \n\n\n")
    assert read_document_lines(f) == [(1, "emma"), (2, "ava")]  # BOM, CRLF, trailing blanks
    f.write_bytes(b"emma\n\n  \nava\n")
    with pytest.raises(ValueError, match=r"line 2: blank line .*--skip-blank-lines"):
        read_documents(f)
    warnings = []
    assert read_documents(f, skip_blank=True, warn=warnings.append) == ["emma", "ava"]
    assert "skipped 2 blank line(s) (line 2, 3)" in warnings[0]
    f.write_bytes(b"emma\nav\xe9\n")
    with pytest.raises(ValueError, match=r"'.*d\.txt', line 2: not UTF-8 text \(byte 0xe9"):
        read_documents(f)
    f.write_bytes(b"\n \n")
    with pytest.raises(ValueError, match="holds no documents"):
        read_documents(f)


def test_resource_guard_names_estimate_and_available(monkeypatch):
    monkeypatch.setattr(resources, "available_memory", lambda: 2 << 30)
    resources.require(1 << 30, "job", "smaller")
    with pytest.raises(resources.ResourceError) as e:
        resources.require(3 << 30, "compile (--degree 9)", "lower --degree")
    assert str(e.value) == (
        "compile (--degree 9) needs about 3.0 GiB of memory, and this machine has 2.0 GiB "
        "available: lower --degree"
    )


def test_available_memory_is_known_here():
    avail = resources.available_memory()
    assert avail is not None and 0 < avail < 1 << 50


def test_files_lock_is_reentrant_across_descriptors(tmp_path):
    with (
        files_mod.file_lock(tmp_path / "l", shared=True) as a,
        files_mod.file_lock(tmp_path / "l", shared=True) as b,
    ):
        assert a and b
    assert not files_mod.lock_is_held(tmp_path / "l")


def test_verify_checks_the_seal_and_reports_stale_results(sk, capsys):
    from tests.cli_helpers import one_line_error, run

    Sketch.open(sk).derived("cache").put("a", np.ones(2))
    Sketch.open(sk).derived("metagrad", ["docs.npy"]).put("b", np.ones(2))
    rc, out, _ = run(capsys, "verify", sk)
    assert rc == 0 and "manifest checksum and 7 array files verified" in out
    assert "cache/: 1 stored results\n" in out and "metagrad/: 1 stored results\n" in out
    # a recomputed chunk (new bytes, resealed: a legitimate new state) makes the cache stale
    entry = files_mod.atomic_save(sk / chunk_name(0), np.full((2, 2, 6), 9 + 0j))
    edit(sk, lambda m: m["files"].__setitem__(chunk_name(0), entry), reseal=True)
    rc, out, _ = run(capsys, "verify", sk)
    assert rc == 0 and "cache/: 1 stored results, 1 stale or damaged" in out
    assert "metagrad/: 1 stored results\n" in out  # computed from docs.npy only
    edit(sk, lambda m: m["config"].__setitem__("num_docs", 4))
    err = one_line_error(capsys, "verify", sk)
    assert "field config.num_docs" in err


def test_a_query_too_big_for_memory_is_refused_before_reading(tmp_path):
    """A (synthetic) sketch of 10^9 directions: the query refuses before it loads or builds
    anything, naming the sketch's size."""
    from runtime.query import coefficients

    config = {**CONFIG, "num_directions": 10**9, "chunk_size": 10**9}
    with SketchWriter(tmp_path / "sk", config) as w:  # no directions.npy: 10^9 rows
        w.ensure("docs.npy", np.array(["ava", "bo", "cy"]))
        w.add_chunk(0, np.zeros((1, 2, 6), np.complex128), np.zeros(6), np.zeros(3))
        w.finish()
    with pytest.raises(resources.ResourceError) as e:
        coefficients(Sketch.open(tmp_path / "sk"), ["ava"])
    assert "M = 1000000000 directions x N = 3 documents" in str(e.value)
    assert "of memory, and this machine has" in str(e.value)
