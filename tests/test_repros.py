"""Issue 21: one test per row of its repro list, through the command line.

Each bad input or damaged sketch gives one line ``error: ...`` and exit
status 2 naming what is wrong (rows 1 and 2: the altered file or field).
The sketch is the session's microgpt setting (tests/conftest.py), so its
compiled modules come from the cache the rest of the suite fills.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runtime import parallel
from runtime.cli import main
from runtime.store import MANIFEST, Sketch
from tests import conftest as ct
from tests.cli_helpers import one_line_error, run, run_json

ROOT = Path(__file__).resolve().parents[1]
K, M = 3, 8
TEST = ct.HELD_OUT


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("repros")
    docs = d / "docs.txt"
    docs.write_text("".join(x + "\n" for x in ct.DOCS))
    return {"dir": d, "docs": docs}


def compile_argv(docs: Path, out: Path, *extra) -> list[str]:
    argv = ["compile", "--docs", docs, "--steps", ct.T, "--seed", ct.INIT_SEED, "--degree", K]
    return [str(a) for a in (*argv, "--directions", M, "--workers", 1, "--out", out, *extra)]


@pytest.fixture(scope="module")
def sk1(files) -> Path:
    """A sketch queried once for TEST, so its coefficients are cached."""
    out = files["dir"] / "sk1"
    assert main(compile_argv(files["docs"], out, "--no-progress")) == 0
    assert main(["query", str(out), "--doc", TEST, "--delete-indices", "1", "--json"]) == 0
    assert list((out / "cache").glob("*.npy"))
    return out


def copy(sk: Path, tmp_path: Path, name: str = "copy") -> Path:
    shutil.copytree(sk, tmp_path / name)  # `cp -r`: new files, new mtimes
    return tmp_path / name


def flip_byte(path: Path, at: int = 5000) -> None:
    with open(path, "r+b") as f:  # the repro, byte for byte
        f.seek(at)
        b = f.read(1)
        f.seek(at)
        f.write(bytes([b[0] ^ 1]))


def edit_manifest(sk: Path, change) -> None:
    m = json.loads((sk / MANIFEST).read_text())
    change(m)
    (sk / MANIFEST).write_text(json.dumps(m, indent=1))


# ---------------------------------------------------------------- row 1
def test_row1_cached_query_of_a_corrupt_sketch_is_refused(capsys, sk1, tmp_path):
    flipped = copy(sk1, tmp_path, "sk_flip")
    flip_byte(flipped / "chunks" / "phi_00000.npy")
    for argv in (
        ["query", flipped, "--doc", TEST, "--delete-indices", "1"],  # cached before the flip
        ["query", flipped, "--doc", "emma", "--delete-indices", "1"],  # never queried
        ["coefficients", flipped, "--doc", TEST],
        ["influence", flipped, "--doc", TEST],
        ["verify", flipped],
    ):
        err = one_line_error(capsys, *argv)
        assert "file chunks/phi_00000.npy: corrupt" in err, (argv, err)
    # the original still answers, from its cache
    assert run_json(capsys, "query", sk1, "--doc", TEST, "--delete-indices", "1")["c0"] > 0


# ---------------------------------------------------------------- row 2
@pytest.mark.parametrize(
    "change, field",
    [
        (lambda m: m["config"].__setitem__("num_docs", 41), "config.num_docs"),
        (
            lambda m: m["config"]["hyperparameters"]["optimizer"].__setitem__("lr", 0.02),
            "config.hyperparameters.optimizer.lr",
        ),
        (lambda m: m["config"].__setitem__("degree", 2), "config.degree"),
    ],
    ids=["num_docs", "lr", "degree"],
)
def test_row2_edited_manifest_values_are_named(capsys, sk1, tmp_path, change, field):
    sk = copy(sk1, tmp_path)
    edit_manifest(sk, change)
    for argv in (["verify", sk], ["query", sk, "--doc", TEST, "--delete-indices", "1"]):
        err = one_line_error(capsys, *argv)
        assert f"manifest.json was altered: field {field} " in err, err
        assert "the program or the compiler changed" not in err


# ---------------------------------------------------------------- row 3
@pytest.mark.parametrize(
    "extra, named",
    [
        (["--degree", "100000"], "--degree 100000"),
        (["--directions", "1000000000"], "--directions 1000000000"),
    ],
)
def test_row3_a_job_too_big_for_memory_is_refused_before_it_starts(
    capsys, files, tmp_path, extra, named
):
    out = tmp_path / "big"
    argv = compile_argv(files["docs"], out)
    for flag, value in zip(extra[::2], extra[1::2], strict=True):
        argv[argv.index(flag) + 1] = value
    err = one_line_error(capsys, *argv)
    assert named in err and "of memory, and this machine has" in err and "available" in err
    assert not out.exists()


HUGE_MODEL = """
import numpy as np
import circuitsketch as cs

def loss(params, x, t):
    return ((params["theta"][:3] * x).sum() - t) ** 2

def build():
    X = np.ones((4, 3))
    return cs.training_program(
        name="huge", params={"theta": np.zeros(20_000_000)}, loss=loss,
        docs=[{"x": X[i], "t": np.array(1.0)} for i in range(4)],
        optimizer=cs.SGD(lr=0.05, momentum=0.0), steps=4)
"""


def test_row3_a_huge_model_is_refused_before_it_starts(capsys, tmp_path):
    prog = tmp_path / "huge.py"
    prog.write_text(HUGE_MODEL)
    out = tmp_path / "sk"
    err = one_line_error(
        capsys, "compile", "--program", f"{prog}:build", "--degree", 6, "--directions", 8,
        "--out", out,
    )  # fmt: skip
    assert "20000000 state values" in err and "of memory" in err
    assert not out.exists()


# ---------------------------------------------------------------- rows 4 and 5
def test_row4_blank_lines_are_an_error_naming_the_line(capsys, files, sk1, tmp_path):
    docs = tmp_path / "blank.txt"
    lines = list(ct.DOCS)
    docs.write_text("\n".join([*lines[:2], "", *lines[2:]]) + "\n")
    err = one_line_error(capsys, *compile_argv(docs, tmp_path / "sk"))
    assert "blank.txt', line 3: blank line" in err and "--skip-blank-lines" in err
    assert not (tmp_path / "sk").exists()
    err = one_line_error(capsys, "retrain", "--docs", docs, "--doc", TEST, "--delete-indices", 0)
    assert "line 3: blank line" in err
    # with the flag: skipped with a warning, the same sketch as without the blank line
    rc, _, stderr = run(capsys, *compile_argv(docs, tmp_path / "sk", "--skip-blank-lines"))
    assert rc == 0 and "skipped 1 blank line(s) (line 3)" in stderr
    assert Sketch.open(tmp_path / "sk").manifest["files"] == Sketch.open(sk1).manifest["files"]


def test_row5_undecodable_documents_name_file_and_line(capsys, sk1, tmp_path):
    docs = tmp_path / "latin1.txt"
    docs.write_bytes("emma\nava\nzoé\n".encode("latin-1"))
    err = one_line_error(capsys, *compile_argv(docs, tmp_path / "sk"))
    assert "latin1.txt', line 3: not UTF-8 text (byte 0xe9 at column 3)" in err
    delete = tmp_path / "delete.txt"
    delete.write_bytes(b"1\n\xff\n")
    err = one_line_error(capsys, "query", sk1, "--doc", TEST, "--delete-file", delete)
    assert "--delete-file" in err and "delete.txt', line 2: not UTF-8" in err


# ---------------------------------------------------------------- row 6
def test_row6_unreachable_scheduler_leaves_nothing_behind(capsys, files, tmp_path, monkeypatch):
    monkeypatch.setattr(parallel, "CONNECT_TIMEOUT", "1s")
    out = tmp_path / "sk"
    argv = compile_argv(files["docs"], out, "--scheduler", "tcp://127.0.0.1:9")
    err = one_line_error(capsys, *argv)
    assert "cannot connect to the Dask scheduler" in err
    assert not out.exists()


@pytest.mark.parametrize("address", ["tcp://127.0.0.1", "not a url", "tcp://127.0.0.1:abc"])
def test_row6_malformed_scheduler_address_fails_at_once(files, tmp_path, address):
    """A real process: a half-built Dask client would hang 30 s at exit and print a traceback."""
    out = tmp_path / "sk"
    argv = compile_argv(files["docs"], out, "--scheduler", address, "--no-progress")
    res = subprocess.run([sys.executable, "-m", "circuitsketch", *argv], cwd=ROOT,
                         capture_output=True, text=True, timeout=20)
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, res.stderr
    assert f"--scheduler {address!r} is not a Dask scheduler address" in res.stderr
    assert not out.exists()


def test_row6_demo_names_its_own_options(capsys):
    err = one_line_error(capsys, "demo", "--letter", "1", "--num-docs", 20)
    assert "--letter '1'" in err and "--delete-contains" not in err
    err = one_line_error(capsys, "demo", "--test", "x1")
    assert err.startswith("error: --test 'x1'") and "--doc" not in err
    import argparse

    from runtime.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    undescribed = [a.option_strings for a in sub.choices["demo"]._actions if not a.help]
    assert undescribed == []
    rc, out, _ = run(capsys, "demo", "--help")
    assert rc == 0 and "series degree (default 3)" in out


def test_row6_one_document_is_singular(capsys, sk1):
    rc, out, err = run(capsys, "query", sk1, "--doc", TEST, "--delete-indices", "1")
    assert rc == 0 and "deleting 1 document at index 1 (weight 1)" in out
    assert "1 documents" not in out + err
    rc, out, _ = run(capsys, "query", sk1, "--doc", TEST, "--delete-indices", "1-2")
    assert "deleting 2 documents at indices 1-2" in out


def test_row6_readme_says_how_long_the_suite_takes():
    text = (ROOT / "README.md").read_text()
    assert "the test suite takes about" in text.lower()


def test_row3_a_metagradient_too_big_for_memory_is_refused(capsys, files):
    # the sweep's memory grows like sqrt(T) (issue 18): what no longer fits is a budget
    # asking for every state of 300,000 steps at once
    err = one_line_error(
        capsys, "metagrad", "--docs", files["docs"], "--steps", 300000, "--doc", TEST,
        "--memory-budget", "10TB",
    )  # fmt: skip
    assert "the metagradient (--steps 300000: 1 kept states and a buffer of 300000" in err
    assert "of memory, and this machine has" in err and "smaller --memory-budget" in err


# ---------------------------------------------------------------- later fuzzing
@pytest.mark.parametrize("command", ["influence", "stability"])
def test_a_second_doc_is_refused_where_one_is_taken(capsys, sk1, command):
    """The second --doc used to replace the first silently."""
    err = one_line_error(capsys, command, sk1, "--doc", TEST, "--doc", "zoe")
    assert "this command takes one test input (one --doc)" in err


def test_demo_refuses_an_empty_test_name(capsys, tmp_path):
    """'' was taken for "not given" and the default name 'fiona' predicted."""
    err = one_line_error(capsys, "demo", "--test", "", "--num-docs", 20, "--out", tmp_path / "d")
    assert "--test: empty test name" in err
    assert not (tmp_path / "d").exists()


def test_demo_refuses_a_file_as_its_out_directory(capsys, tmp_path):
    """It failed later, naming an internal temporary file inside it."""
    (tmp_path / "f.txt").write_text("mine\n")
    err = one_line_error(capsys, "demo", "--num-docs", 20, "--out", tmp_path / "f.txt")
    assert f"--out '{tmp_path / 'f.txt'}' is a file, not a directory" in err
    assert (tmp_path / "f.txt").read_text() == "mine\n"


@pytest.mark.parametrize(
    "text, named",
    [
        ("1_0", "'1_0' is not an index"),  # int() reads 10
        ("+1", "'+1' is not an index"),
        ("\uff11", "'\uff11' is not an index"),  # full-width 1
        ("\u0661", "'\u0661' is not an index"),  # Arabic-Indic 1
        ("1,", "an empty item in '1,'"),
        ("1, 2", "' 2' is not an index"),
        ("1,1", "index 1 appears more than once"),  # silently one document
        ("1-3,2", "index 2 appears more than once"),
    ],
)
def test_delete_indices_are_ascii_digits_given_once(capsys, sk1, text, named):
    err = one_line_error(capsys, "query", sk1, "--doc", TEST, "--delete-indices", text)
    assert f"--delete-indices: {named}" in err


def test_a_test_document_longer_than_the_context_is_warned_about(capsys, sk1):
    """Cut to the context as a training document is: the same loss, said once."""
    long, cut = "abcdefghijklmnopqrstuvwxyz", "abcdefghijklmnop"
    rc, out, err = run(capsys, "query", sk1, "--doc", long, "--delete-indices", 1, "--json")
    assert rc == 0 and err.count("\n") == 1, err
    assert f"test document {long!r} has 26 characters: microgpt's context is 16 positions" in err
    rc, out2, err = run(capsys, "query", sk1, "--doc", cut, "--delete-indices", 1, "--json")
    assert json.loads(out2)["c0"] == json.loads(out)["c0"] and "has 16 characters" in err
    rc, _, err = run(capsys, "query", sk1, "--doc", cut[:15], "--delete-indices", 1)
    assert rc == 0 and "context" not in err  # 15 characters and the end: 16 predictions
