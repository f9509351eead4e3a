"""Issue #6: user programs from the command line (``--program FILE.py:FN``).

The program below is written only against the public API (``import
circuitsketch as cs``): softmax regression on 24 seeded points, two epochs of
SGD with momentum.  It is compiled, sketched and queried through the CLI
exactly as a user would, and the answers are checked against exact
retraining; the tracer's refusals must reach the user as one line naming the
construct and the line of their file.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from runtime.cli import main
from runtime.spec import sha256_file
from runtime.store import Sketch
from tests.cli_helpers import one_line_error, run_json

PROGRAM = """\
import numpy as np
import circuitsketch as cs

N, CLASSES, FEATURES = 24, 3, 4


def data():
    rng = np.random.default_rng(0)
    centres = rng.normal(0.0, 1.5, size=(CLASSES, FEATURES))
    labels = np.arange(N) % CLASSES
    return centres[labels] + rng.normal(size=(N, FEATURES)), labels


def loss(params, x, label):
    logits = params["W"] @ x + params["b"]
    z = logits - cs.shift_max(logits, axis=0)
    logp = z - cs.log(cs.exp(z).sum())
    return -(cs.one_hot(label.reshape(1), CLASSES).reshape(CLASSES) * logp).sum()


def build():
    x, y = data()
    docs = [{"x": x[i], "label": np.array(y[i])} for i in range(N)]
    params = {"W": np.zeros((CLASSES, FEATURES)), "b": np.zeros(CLASSES)}
    return cs.training_program(
        name="softmax24", params=params, loss=loss, docs=docs,
        optimizer=cs.SGD(lr=0.05, momentum=0.5), steps=2 * N,
    )
"""

# three things the tracer refuses; each marked line is where the error must point
BAD = """\
import numpy as np
import circuitsketch as cs

X = np.random.default_rng(1).normal(size=(6, 4))


def loss_if(params, x, label):
    s = (params["W"] @ x).sum()
    if s > 0:  # MARK:if
        return s
    return -s


def loss_sin(params, x, label):
    return np.sin(params["W"] @ x).sum()  # MARK:sin


def loss_mutation(params, x, label):
    z = params["W"] @ x
    z[0] = 1.0  # MARK:mutation
    return z.sum()


def make(loss):
    docs = [{"x": X[i], "label": np.array(i % 3)} for i in range(6)]
    return cs.training_program(name="bad", params={"W": np.zeros((3, 4))}, loss=loss,
                               docs=docs, optimizer=cs.SGD(lr=0.1, momentum=0.0))


def build_if():
    return make(loss_if)


def build_sin():
    return make(loss_sin)


def build_mutation():
    return make(loss_mutation)


def build_not_a_program():
    return 42
"""

N, K, M = 24, 3, 64


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("user")
    prog = d / "softmax.py"
    prog.write_text(PROGRAM)
    bad = d / "bad.py"
    bad.write_text(BAD)
    return {"dir": d, "program": prog, "bad": bad, "sketch": d / "sketch"}


@pytest.fixture(scope="module")
def sketch(files) -> Path:
    argv = [
        "compile",
        "--program",
        f"{files['program']}:build",
        "--degree",
        K,
        "--directions",
        M,
        "--workers",
        1,
        "--out",
        files["sketch"],
        "--no-progress",
    ]
    assert main([str(a) for a in argv]) == 0
    return files["sketch"]


def build_ref(files) -> str:
    return f"{files['program']}:build"


# ---------------------------------------------------------------- compile / query / retrain
def test_manifest_records_the_program_file_and_function(sketch, files):
    sk = Sketch.open(sketch)
    assert sk.config["program"] == "user"
    assert sk.config["program_sha256"] == sha256_file(files["program"])
    assert sk.config["function"] == "build"
    assert sk.manifest["info"]["program_file"] == str(files["program"].resolve())
    assert (sk.num_docs, sk.steps, sk.degree, sk.num_directions) == (N, 2 * N, K, M)
    assert len(sk.docs()) == N and sk.docs()[0].startswith("#0 ")


# (deleted point, test point): single deletions where the 64-direction sketch's error bar
# covers the truth; (0, 0) deletes the test point itself, a large effect
CASES = [(0, 0), (5, 0), (0, 2), (2, 2), (5, 2)]


@pytest.mark.parametrize(("i", "j"), CASES)
def test_query_matches_retraining_within_its_error_bars(capsys, sketch, files, i, j):
    q = run_json(capsys, "query", sketch, "--delete-indices", i, "--test-index", j, "--no-hybrid")
    t = run_json(
        capsys, "retrain", "--program", build_ref(files), "--delete-indices", i, "--test-index", j
    )
    assert q["doc"] == t["doc"] == f"training document {j}"
    assert q["n_deleted"] == t["n_deleted"] == 1 and len(q["terms"]) == K
    se = q["stderr"]["total"]
    assert np.isfinite(se) and se > 0
    assert abs(q["prediction"] - t["loss"]) <= 3 * se, (q["prediction"], t["loss"], se)
    if (i, j) == (0, 0):  # not vacuous: a large predicted effect, well outside the error bar
        assert q["prediction"] - q["c0"] > 4 * se


def test_test_npz_is_the_same_input_as_test_index(capsys, sketch, files):
    from runtime.sources import UserProgramSource as UserProgramSpec

    arrays = UserProgramSpec.load(files["program"], "build").training_doc(2)
    npz = files["dir"] / "point2.npz"
    np.savez(npz, **arrays)
    a, b = run_json(
        capsys, "query", sketch, "--delete-indices", "0,5", "--test-npz", npz, "--test-index", 2
    )
    assert a["doc"] == "point2.npz" and b["doc"] == "training document 2"
    assert a["prediction"] == b["prediction"] and a["n_deleted"] == 2
    r = run_json(
        capsys,
        "retrain",
        "--program",
        build_ref(files),
        "--delete-indices",
        "0,5",
        "--test-npz",
        npz,
    )
    program = build_ref(files)
    by_index = run_json(
        capsys, "retrain", "--program", program, "--delete-indices", "0,5", "--test-index", 2
    )
    assert r["doc"] == "point2.npz" and r["loss"] == by_index["loss"]  # the same input
    # an off-grid input of the right shape is a test input too
    np.savez(files["dir"] / "new.npz", x=np.array([0.5, -1.0, 2.0, 0.0]), label=np.array(1))
    c = run_json(capsys, "coefficients", sketch, "--test-npz", files["dir"] / "new.npz")
    assert np.array(c["coefficients"]).shape == (M, K + 1, 2)


def test_influence_stability_inspect_and_hybrid_on_a_user_program(capsys, sketch, files):
    r = run_json(capsys, "influence", sketch, "--test-index", 2, "--top", 3)
    assert len(r["influence"]) == 3 and r["num_docs"] == N
    s = run_json(capsys, "stability", sketch, "--test-index", 2)
    assert len(s["mean"]) == K + 1
    ins = run_json(capsys, "inspect", "--program", build_ref(files))
    assert "softmax24" in ins["source"] and ins["nodes"] > 0
    ins = run_json(capsys, "inspect", "--program", build_ref(files), "--circuit", "output")
    assert "output circuit" in ins["source"]
    # the exact first order works for user programs too
    h = run_json(capsys, "query", sketch, "--delete-indices", 0, "--test-index", 2, "--hybrid")
    assert h["estimator"] == "hybrid" and h["stderr"]["terms"][0] == 0.0
    again = run_json(capsys, "query", sketch, "--delete-indices", 0, "--test-index", 2)
    assert again["estimator"] == "hybrid" and again["prediction"] == h["prediction"]
    ex = run_json(capsys, "influence", sketch, "--test-index", 2, "--exact-first-order", "--top", 0)
    assert ex["estimator"] == "hybrid" and len(ex["influence"]) == N


# ---------------------------------------------------------------- the program's file
def test_a_moved_file_is_accepted_and_a_changed_file_refused(capsys, sketch, files):
    moved = files["dir"] / "moved.py"
    shutil.copy(files["program"], moved)
    q = run_json(
        capsys,
        "query",
        sketch,
        "--program",
        f"{moved}:build",
        "--delete-indices",
        1,
        "--test-index",
        1,
    )
    same = run_json(capsys, "query", sketch, "--delete-indices", 1, "--test-index", 1)
    assert q["prediction"] == same["prediction"]  # the moved copy is the same program
    changed = files["dir"] / "changed.py"
    changed.write_text(PROGRAM.replace("lr=0.05", "lr=0.06"))
    err = one_line_error(
        capsys,
        "query",
        sketch,
        "--program",
        f"{changed}:build",
        "--delete-indices",
        1,
        "--test-index",
        1,
    )
    assert "changed since the sketch was made" in err
    err = one_line_error(
        capsys,
        "query",
        sketch,
        "--program",
        f"{moved}:other",
        "--delete-indices",
        1,
        "--test-index",
        1,
    )
    assert "'build'" in err and "'other'" in err
    # resuming the compile into the same directory with another file: refused
    err = one_line_error(
        capsys,
        "compile",
        "--program",
        f"{changed}:build",
        "--degree",
        K,
        "--directions",
        M,
        "--workers",
        1,
        "--out",
        sketch,
    )
    assert "another program file" in err


# ---------------------------------------------------------------- one-line errors
def _line(marker: str) -> int:
    return next(n for n, text in enumerate(BAD.splitlines(), 1) if f"MARK:{marker}" in text)


@pytest.mark.parametrize(
    ("fn", "marker", "construct"),
    [
        ("build_if", "if", "Python control flow (if/while"),
        ("build_sin", "sin", "np.sin"),
        ("build_mutation", "mutation", "in-place mutation"),
    ],
)
def test_untraceable_program_names_the_construct_and_line(capsys, files, fn, marker, construct):
    out = files["dir"] / f"never_{fn}"
    err = one_line_error(
        capsys,
        "compile",
        "--program",
        f"{files['bad']}:{fn}",
        "--degree",
        K,
        "--directions",
        M,
        "--out",
        out,
    )
    assert construct in err
    assert f"bad.py:{_line(marker)})" in err
    assert not out.exists()  # nothing was written
    err = one_line_error(capsys, "inspect", "--program", f"{files['bad']}:{fn}")
    assert construct in err and f"bad.py:{_line(marker)})" in err


def test_program_loading_errors(capsys, files):
    d = files["dir"]
    cases = {
        f"{d}/missing.py:build": "does not exist",
        f"{files['bad']}:nope": "has no function 'nope'",
        f"{files['bad']}:build_not_a_program": "not a circuitsketch Program",
        str(files["bad"]): "expected FILE.py:FUNCTION",
    }
    broken = d / "broken.py"
    broken.write_text("import numpy as np\n\nraise RuntimeError('no data here')\n")
    cases[f"{broken}:build"] = "RuntimeError: no data here (at "
    for ref, what in cases.items():
        err = one_line_error(
            capsys, "retrain", "--program", ref, "--delete-indices", 0, "--test-index", 0
        )
        assert what in err, err
    assert "broken.py:3)" in one_line_error(
        capsys,
        "compile",
        "--program",
        f"{broken}:build",
        "--degree",
        1,
        "--directions",
        2,
        "--out",
        d / "never",
    )


def test_input_errors(capsys, sketch, files):
    ref = build_ref(files)
    err = one_line_error(capsys, "query", sketch, "--delete-contains", "a", "--test-index", 0)
    assert "--delete-contains" in err and "--delete-indices" in err
    err = one_line_error(capsys, "query", sketch, "--delete-indices", 0, "--doc", "emma")
    assert "--test-npz" in err
    err = one_line_error(capsys, "query", sketch, "--delete-indices", 0)
    assert "--test-index" in err
    err = one_line_error(capsys, "query", sketch, "--delete-indices", 0, "--test-index", N)
    assert "out of range" in err
    np.savez(files["dir"] / "short.npz", x=np.zeros(3), label=np.array(0))
    err = one_line_error(
        capsys, "query", sketch, "--delete-indices", 0, "--test-npz", files["dir"] / "short.npz"
    )
    assert "x (3,) float" in err and "x (4,) float" in err
    np.savez(files["dir"] / "renamed.npz", inputs=np.zeros(4), label=np.array(0))
    err = one_line_error(
        capsys,
        "retrain",
        "--program",
        ref,
        "--delete-indices",
        0,
        "--test-npz",
        files["dir"] / "renamed.npz",
    )
    assert "inputs (4,) float" in err
    err = one_line_error(
        capsys, "query", sketch, "--delete-indices", 0, "--test-npz", files["program"]
    )
    assert "not an .npz archive" in err
    err = one_line_error(
        capsys,
        "compile",
        "--program",
        ref,
        "--docs",
        files["program"],
        "--degree",
        K,
        "--directions",
        M,
        "--out",
        files["dir"] / "never",
    )
    assert "--docs" in err and "--program" in err
    lines = files["dir"] / "delete.txt"
    lines.write_text("3\nsome text\n")
    err = one_line_error(
        capsys, "retrain", "--program", ref, "--delete-file", lines, "--test-index", 0
    )
    assert "'some text'" in err


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_non_finite_test_npz_is_refused(capsys, files, bad):
    """NaN in gave NaN out, exit status 0."""
    f = files["dir"] / "nonfinite.npz"
    np.savez(f, x=np.array([0.0, bad, 0.0, 0.0]), label=np.array(0))
    err = one_line_error(
        capsys, "retrain", "--program", build_ref(files), "--delete-indices", 0, "--test-npz", f
    )
    assert "array 'x' holds a non-finite value (NaN or infinity) at index (1,)" in err


def test_a_program_file_that_exits_is_an_error(capsys, files, tmp_path):
    """sys.exit(0) while importing the file ended the CLI with status 0 and no output."""
    f = tmp_path / "exits.py"
    for code in ("0", "3"):
        f.write_text(f"import sys\n\nsys.exit({code})\n")
        err = one_line_error(capsys, "compile", "--program", f"{f}:build", "--degree", 1,
                             "--directions", 2, "--out", tmp_path / "never")
        assert f"exited while loading (SystemExit {code}) (at {f}:3)" in err, err
    assert not (tmp_path / "never").exists()
