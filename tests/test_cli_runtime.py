"""The runtime's CLI: compile, query, coefficients, retrain, influence, stability, verify, demo.

Commands run in-process through ``runtime.cli.main`` (fast); one case
goes through a real subprocess to check the console entry point end to end.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from circuitsketch.models import microgpt
from compiler.compiled import CompiledProgram
from runtime.cli import main
from runtime.directions import gaussian_directions
from runtime.query import coefficients
from runtime.retrain import retrain
from runtime.sources import MicrogptSource as TrainingSpec
from runtime.store import Sketch, chunk_name
from tests import estimator_reference as ref
from tests.cli_helpers import run, run_json
from tests.conftest import NAMES20

ROOT = Path(__file__).resolve().parents[1]
DOCS = list(NAMES20)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cli")
    docs = d / "docs.txt"
    docs.write_text("".join(x + "\n" for x in DOCS))
    other = d / "other.txt"
    other.write_text("".join(x + "\n" for x in reversed(DOCS)))
    empty = d / "empty.txt"
    empty.write_text("\n  \n")
    digits = d / "digits.txt"
    digits.write_text("ann\nb0b\n")
    return {
        "dir": d,
        "docs": docs,
        "other": other,
        "empty": empty,
        "digits": digits,
        "sketch": d / "sketch",
    }


@pytest.fixture(scope="module")
def sketch(files) -> Path:
    rc = main(
        [
            "compile",
            "--docs",
            str(files["docs"]),
            "--degree",
            "3",
            "--directions",
            "8",
            "--seed",
            "1",
            "--workers",
            "1",
            "--out",
            str(files["sketch"]),
            "--no-progress",
        ]
    )
    assert rc == 0
    return files["sketch"]


def test_compile_resume_is_a_no_op(capsys, files, sketch):
    s = run_json(
        capsys,
        "compile",
        "--docs",
        files["docs"],
        "--degree",
        "3",
        "--directions",
        "8",
        "--seed",
        "1",
        "--out",
        sketch,
        "--workers",
        "1",
    )
    assert s["chunks_computed"] == 0 and s["chunks_reused"] == 1 and s["directions"] == 8
    assert (s["degree"], s["num_docs"], s["steps"]) == (3, 20, 20)


def test_query_json(capsys, sketch):
    r = run_json(capsys, "query", sketch, "--doc", "zoe", "--delete-contains", "y")
    for key in ("prediction", "c0", "terms", "stderr", "median_of_means", "n_deleted"):
        assert key in r
    assert r["n_deleted"] == 5 and len(r["terms"]) == 3 and len(r["stderr"]["terms"]) == 3
    assert r["prediction"] == pytest.approx(r["c0"] + sum(r["terms"]), rel=1e-14)
    sk = Sketch.open(sketch)
    w = np.zeros(20)
    w[[7, 8, 11, 18, 19]] = 1
    e = ref.estimate(coefficients(sk, ["zoe"])["zoe"], sk.directions(), w, 3)
    assert r["prediction"] == pytest.approx(e["prediction"][0], rel=1e-13)
    assert r["stderr"]["total"] == pytest.approx(e["stderr"][0], rel=1e-12)
    both = run_json(
        capsys, "query", sketch, "--doc", "zoe", "--doc", "max", "--delete-indices", "1,3-4"
    )
    assert [x["doc"] for x in both] == ["zoe", "max"] and both[0]["n_deleted"] == 3
    half = run_json(
        capsys, "query", sketch, "--doc", "zoe", "--delete-indices", "2", "--weight", "0.5"
    )
    low = run_json(
        capsys, "query", sketch, "--doc", "zoe", "--delete-indices", "2", "--degree", "1"
    )
    assert len(low["terms"]) == 1 and half["weight"] == 0.5
    coefs, psi, e2 = coefficients(sk, ["zoe"])["zoe"], sk.directions(), np.eye(20)[2]
    for got, w, k in ((half, 0.5 * e2, 3), (low, e2, 1)):
        want = ref.estimate(coefs, psi, w, k)
        assert got["prediction"] == pytest.approx(want["prediction"][0], rel=1e-13)
        assert got["stderr"]["total"] == pytest.approx(want["stderr"][0], rel=1e-12)


def test_query_text_and_unreliable_warning(capsys, sketch):
    rc, out, err = run(capsys, "query", sketch, "--doc", "zoe", "--delete-contains", "a")
    assert rc == 0
    assert "undeleted loss c0" in out and "predicted loss" in out and "term r = 3" in out
    # 8 directions cannot answer a 16-document deletion: warned, with the estimated error
    assert err.startswith("warning: the prediction for 'zoe' is unreliable: estimated error ±")


def test_repeated_query_uses_the_cache(capsys, sketch, monkeypatch):
    import runtime.query as rq

    run(capsys, "query", sketch, "--doc", "liam", "--delete-indices", "0")

    def no_program(_sketch):
        raise AssertionError("a repeated doc must not build or run the compiled program")

    monkeypatch.setattr(rq, "sketch_program", no_program)
    rc, _, _ = run(capsys, "query", sketch, "--doc", "liam", "--delete-indices", "1")
    assert rc == 0


def test_coefficients_json(capsys, sketch):
    r = run_json(capsys, "coefficients", sketch, "--doc", "emma")
    c = np.array(r["coefficients"])
    assert c.shape == (8, 4, 2)
    want = coefficients(Sketch.open(sketch), ["emma"])["emma"]
    np.testing.assert_array_equal(c[..., 0] + 1j * c[..., 1], want)
    rc, out, _ = run(capsys, "coefficients", sketch, "--doc", "emma")
    assert rc == 0 and "c_0 =" in out and len(out.splitlines()) == 2 + 8


def test_retrain_json_matches_api(capsys, files):
    r = run_json(
        capsys, "retrain", "--docs", files["docs"], "--delete-indices", "3", "--doc", "zoe"
    )
    w = np.zeros(20)
    w[3] = 1
    (want,), _ = retrain(TrainingSpec(tuple(DOCS), 20), w, ["zoe"])
    assert r["loss"] == want and r["n_deleted"] == 1
    rc, out, _ = run(
        capsys, "retrain", "--docs", files["docs"], "--delete-contains", "y", "--doc", "zoe"
    )
    assert rc == 0 and "'zoe': test loss" in out


def test_influence(capsys, sketch):
    r = run_json(capsys, "influence", sketch, "--doc", "emma", "--top", "5")
    rows = r["influence"]
    assert len(rows) == 5 and r["num_docs"] == 20
    effects = [x["effect"] for x in rows]
    assert effects == sorted(effects, reverse=True)
    everything = run_json(capsys, "influence", sketch, "--doc", "emma", "--top", "0")["influence"]
    assert len(everything) == 20 and everything[:5] == rows
    one = run_json(
        capsys, "query", sketch, "--doc", "emma", "--delete-indices", str(rows[0]["index"])
    )
    assert one["prediction"] - one["c0"] == pytest.approx(rows[0]["effect"], rel=1e-9)
    assert one["stderr"]["total"] == pytest.approx(rows[0]["stderr"], rel=1e-9)
    rc, out, _ = run(capsys, "influence", sketch, "--doc", "emma", "--top", "3")
    assert rc == 0 and len(out.splitlines()) == 2 + 3


def test_stability(capsys, sketch, tmp_path):
    png = tmp_path / "s.png"
    r = run_json(capsys, "stability", sketch, "--doc", "emma", "--plot", png)
    assert r["degrees"] == [0, 1, 2, 3] and len(r["per_direction"]) == 8
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the definition, log2(sqrt(binom(N+r-1, r)) |c_r|), on the sketch's coefficients
    c = coefficients(Sketch.open(sketch), ["emma"])["emma"]
    binom = np.array([math.comb(20 + r - 1, r) for r in range(4)])
    want = np.log2(np.sqrt(binom) * np.abs(c))
    np.testing.assert_allclose(r["per_direction"], want, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(r["mean"], want.mean(axis=0), rtol=1e-13, atol=1e-13)
    rc, out, _ = run(capsys, "stability", sketch, "--doc", "emma")
    assert rc == 0 and "mean" in out


def test_verify(capsys, sketch):
    rc, out, _ = run(capsys, "verify", sketch)
    assert rc == 0 and "ok" in out


# ---------------------------------------------------------------- bad input
def _corrupt_copy(sketch: Path, dest: Path) -> Path:
    shutil.copytree(sketch, dest, ignore=shutil.ignore_patterns("cache"))
    f = dest / chunk_name(0)
    data = bytearray(f.read_bytes())
    data[-5] ^= 0x40
    f.write_bytes(bytes(data))
    return dest


def _bad_dirs(tmp: Path, kind: str) -> Path:
    f = tmp / f"{kind}.npy"
    arr = {
        "shape": np.ones((2, 7), np.complex128),
        "dtype": np.ones((2, 20), np.float32),
        "nan": np.full((1, 20), np.nan, np.complex128),
    }[kind]
    np.save(f, arr)
    return f


BAD = {
    "unknown character in --doc": (
        lambda f, s, t: ["query", s, "--doc", "bob1", "--delete-indices", "0"],
        "character '1' at position 3 is not in the vocabulary",
    ),
    "non-ascii --doc": (
        lambda f, s, t: ["coefficients", s, "--doc", "Émile"],
        "character 'É'",
    ),
    "deletion index out of range": (
        lambda f, s, t: ["query", s, "--doc", "zoe", "--delete-indices", "3,20"],
        "index 20 is out of range: there are 20 training documents",
    ),
    "deletion selects nothing": (
        lambda f, s, t: ["query", s, "--doc", "zoe", "--delete-contains", "q"],
        "no training document contains 'q'",
    ),
    "no deletion option": (
        lambda f, s, t: ["query", s, "--doc", "zoe"],
        "one of the arguments --delete-indices --delete-file --delete-contains --sets is required",
    ),
    "weight outside [0, 1]": (
        lambda f, s, t: ["query", s, "--doc", "zoe", "--delete-indices", "1", "--weight", "2"],
        "expected a weight in [0, 1]",
    ),
    "query degree above the sketch's": (
        lambda f, s, t: ["query", s, "--doc", "zoe", "--delete-indices", "1", "--degree", "4"],
        "between 1 and the sketch's degree 3",
    ),
    "too many groups": (
        lambda f, s, t: ["query", s, "--doc", "zoe", "--delete-indices", "1", "--groups", "9"],
        "--groups must be between 1 and the number of directions 8",
    ),
    "unknown character in the documents file": (
        lambda f, s, t: ["retrain", "--docs", f["digits"], "--delete-indices", "0", "--doc", "zoe"],
        "document 1: document 'b0b': character '0' at position 1 is not in the vocabulary",
    ),
    "empty documents file": (
        lambda f, s, t: ["retrain", "--docs", f["empty"], "--delete-indices", "0", "--doc", "zoe"],
        "holds no documents",
    ),
    "missing documents file": (
        lambda f, s, t: ["compile", "--docs", t / "nope.txt", "--degree", "2", "--directions", "2",
                         "--out", t / "o"],
        "does not exist",
    ),
    "directions file of the wrong shape": (
        lambda f, s, t: ["compile", "--docs", f["docs"], "--degree", "2", "--directions-file",
                         _bad_dirs(t, "shape"), "--out", t / "o"],
        "has shape (2, 7), expected (M, 20)",
    ),
    "directions file of the wrong dtype": (
        lambda f, s, t: ["compile", "--docs", f["docs"], "--degree", "2", "--directions-file",
                         _bad_dirs(t, "dtype"), "--out", t / "o"],
        "has dtype float32, expected complex128",
    ),
    "directions file with NaN": (
        lambda f, s, t: ["compile", "--docs", f["docs"], "--degree", "2", "--directions-file",
                         _bad_dirs(t, "nan"), "--out", t / "o"],
        "non-finite value at row 0, column 0",
    ),
    "K < 1": (
        lambda f, s, t: ["compile", "--docs", f["docs"], "--degree", "0", "--directions", "2",
                         "--out", t / "o"],
        "the degree K must be >= 1, got 0",
    ),
    "M < 1": (
        lambda f, s, t: ["compile", "--docs", f["docs"], "--degree", "2", "--directions", "0",
                         "--out", t / "o"],
        "the number of directions must be >= 1, got 0",
    ),
    "no directions at all": (
        lambda f, s, t: ["compile", "--docs", f["docs"], "--degree", "2", "--out", t / "o"],
        "give the number of directions",
    ),
    "corrupt sketch": (
        lambda f, s, t: ["query", _corrupt_copy(s, t / "bad"), "--doc", "noah",
                         "--delete-indices", "1"],
        "file chunks/phi_00000.npy: corrupt (sha256",
    ),
    "missing sketch": (
        lambda f, s, t: ["influence", t / "nothing", "--doc", "noah"],
        "does not exist",
    ),
    "another documents file into an existing sketch": (
        lambda f, s, t: ["compile", "--docs", f["other"], "--degree", "3", "--directions", "8",
                         "--seed", "1", "--out", s],
        "was compiled with another documents file",
    ),
    "another degree into an existing sketch": (
        lambda f, s, t: ["compile", "--docs", f["docs"], "--degree", "2", "--directions", "8",
                         "--seed", "1", "--out", s],
        "another degree (degree: sketch has 3, asked for 2)",
    ),
    "an init file that is not an npz": (
        lambda f, s, t: ["retrain", "--docs", f["docs"], "--init", f["docs"], "--delete-indices",
                         "0", "--doc", "zoe"],
        "is not a readable .npz",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_and_exit_2(capsys, files, sketch, tmp_path, case):
    make, words = BAD[case]
    rc, out, err = run(capsys, *make(files, sketch, tmp_path))
    assert rc == 2, (out, err)
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert words in err, err
    assert "Traceback" not in err


def test_console_script_error_has_no_traceback(sketch):
    res = subprocess.run(
        [sys.executable, "-m", "circuitsketch", "query", str(sketch), "--doc", "x y",
         "--delete-indices", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert res.returncode == 2
    assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, res.stderr


def test_inspect_still_works(capsys):
    rc, out, _ = run(capsys, "inspect", "--json")
    assert rc == 0 and json.loads(out)["source"].startswith("microgpt step circuit")


def test_small_demo(capsys, tmp_path):
    r = run_json(
        capsys,
        "demo",
        "--num-docs",
        "20",
        "--directions",
        "4",
        "--letter",
        "y",
        "--test",
        "zoe",
        "--workers",
        "1",
        "--out",
        tmp_path / "demo",
    )
    names = microgpt.read_docs(microgpt.corpus_path())[:20]
    w = np.array([float("y" in d) for d in names])
    assert r["deleted"] == [d for d in names if "y" in d] == ["evelyn", "emily", "avery"]
    assert r["n_deleted"] == 3 and r["directions"] == 4
    # the undeleted and the retrained loss: plain compiled training of the first 20 names
    cp = CompiledProgram(microgpt.build(names, steps=20, seed=0), 0)
    for key, weights in (("c0", np.zeros(20)), ("retrained", w)):
        state, _ = cp.train(weights)
        assert r[key] == pytest.approx(cp.output(state, "zoe"), rel=1e-13, abs=0), key
    # the prediction: the documented estimator on the stored sketch of seed 0
    sk = Sketch.open(tmp_path / "demo" / "sketch")
    np.testing.assert_array_equal(sk.directions(), gaussian_directions(0, 0, 4, 20))
    want = ref.estimate(coefficients(sk, ["zoe"])["zoe"], sk.directions(), w, 3)
    assert r["prediction"] == pytest.approx(want["prediction"][0], rel=1e-13)
    assert r["stderr"] == pytest.approx(want["stderr"][0], rel=1e-12)
    assert r["error"] == r["prediction"] - r["retrained"]
    assert r["true_change"] == r["retrained"] - r["c0"]
    rc, out, _ = run(
        capsys, "demo", "--num-docs", "20", "--directions", "4", "--letter", "y", "--test",
        "zoe", "--workers", "1", "--out", tmp_path / "demo",
    )  # fmt: skip
    assert rc == 0 and "retrained without them" in out and "predicted by the sketch" in out
