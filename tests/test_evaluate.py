"""Issue 19: ``evaluate`` and its scores.

The scores are checked against plain re-computations written here (ranks by
counting, Spearman as the Pearson correlation of those ranks, coverage by
its definition); the whole command on the closed-form cubic program of
``tests/poly_program.py``: its truth file equals F(w), its LDS table is the
re-computation over the files it wrote, its findings drive ``auto``, a rerun
retrains nothing and gives the same scores, and bad requests are one line.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import runtime.api as rt
from runtime.findings import read_findings
from runtime.metrics import bootstrap_lds, rankdata, score, spearman
from tests import poly_program as pp
from tests.cli_helpers import one_line_error, run, run_json

PROGRAM = f"{Path(pp.__file__).resolve()}:build"
X, T = pp.data()
TESTS = [{"x": X[0], "t": np.array(0.5)}, {"x": X[5], "t": np.array(-1.0)}]


def naive_ranks(x: np.ndarray) -> np.ndarray:
    return np.array([(x < v).sum() + ((x == v).sum() + 1) / 2 for v in x])


def naive_spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = naive_ranks(a), naive_ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


# ---------------------------------------------------------------- the scores
def test_ranks_and_spearman_against_counting():
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = rng.integers(0, 5, size=12).astype(float)  # many ties
        b = rng.normal(size=12)
        np.testing.assert_allclose(rankdata(a), naive_ranks(a))
        assert spearman(a, b) == pytest.approx(naive_spearman(a, b), rel=1e-12)
    assert np.isnan(spearman(np.ones(5), np.arange(5.0)))
    two = rng.normal(size=(3, 2, 9))
    np.testing.assert_allclose(rankdata(two)[1, 0], naive_ranks(two[1, 0]))


def test_score_definitions():
    rng = np.random.default_rng(1)
    truth = rng.normal(size=(30, 3))
    pred = truth + rng.normal(scale=0.3, size=(30, 3))
    se = np.full((30, 3), 0.3)
    se[0, 0] = np.nan
    s = score(pred, se, truth, 300, [7, 1])
    lds = np.mean([naive_spearman(pred[:, d], truth[:, d]) for d in range(3)])
    assert s["lds"] == pytest.approx(lds, rel=1e-12)
    assert s["mae"] == pytest.approx(np.abs(pred - truth).mean(), rel=1e-12)
    covered = (np.abs(pred - truth) <= 0.6).astype(float)
    covered[0, 0] = 0.0  # NaN stderr: not covered
    assert s["coverage"] == pytest.approx(covered.mean(), rel=1e-12)
    lo, hi = s["lds_ci"]
    assert lo < s["lds"] < hi and (lo, hi) == bootstrap_lds(pred, truth, 300, [7, 1])
    assert bootstrap_lds(pred, truth, 300, [7, 2]) != (lo, hi)  # seeded, not fixed


# ---------------------------------------------------------------- the command
@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("evaluate")
    sk = rt.precompute(rt.program(PROGRAM), d / "sketch", degree=3, directions=32, seed=2)
    tests = []
    for i, t in enumerate(TESTS):
        f = d / f"test{i}.npz"
        np.savez(f, **t)
        tests += ["--test-npz", str(f)]
    return {"dir": d, "sketch": sk.path, "tests": tests}


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def argv(files, *more) -> list:
    return ["evaluate", files["sketch"], *files["tests"], "--workers", 1, "--bootstrap", 200, *more]


def test_evaluate_scores_are_recomputed_from_its_files(capsys, files):
    out = files["dir"] / "ev"
    rep = run_json(
        capsys, *argv(files, "--sizes", "1,2,4", "--sets-per-size", 6, "--seed", 3, "--out", out)
    )
    assert rep["sets"]["count"] == 18 and rep["sets"]["sizes"] == [1, 2, 4]
    sets = rt.read_sets(out / "sets.jsonl", pp.N)
    np.testing.assert_array_equal(sets.matrix(), rt.sample_sets(pp.N, [1, 2, 4], 6, 3).matrix())
    truth = {(r["set"], r["doc"]): r["loss"] for r in map(json.loads, lines(out / "truth.jsonl"))}
    labels = rep["tests"]
    for d, t in enumerate(TESTS):
        want = pp.truth(t["x"], float(t["t"]), sets.matrix())
        got = [truth[(s, labels[d])] for s in range(len(sets))]
        np.testing.assert_allclose(got, want, rtol=1e-12)
    preds = [json.loads(ln) for ln in lines(out / "predictions.jsonl")]
    assert {p["estimator"] for p in preds} == {"sketch", "first-order", "hybrid"}
    for name, est in rep["estimators"].items():
        for z, s in est["by_size"].items():
            rows = [p for p in preds if p["estimator"] == name and p["size"] == int(z)]
            lds = np.mean(
                [
                    naive_spearman(
                        np.array([p["prediction"] for p in rows if p["doc"] == lb]),
                        np.array([truth[(p["set"], lb)] for p in rows if p["doc"] == lb]),
                    )
                    for lb in labels
                ]
            )
            assert s["lds"] == pytest.approx(lds, rel=1e-12)
            mae = np.mean([abs(p["prediction"] - truth[(p["set"], p["doc"])]) for p in rows])
            assert s["mae"] == pytest.approx(mae, rel=1e-12)
            cov = np.mean([abs(p["prediction"] - p["truth"]) <= 2 * p["stderr"] for p in rows])
            assert s["coverage"] == pytest.approx(cov, rel=1e-12)
        assert est["cost"]["total_runs"] > 0
    c = rep["costs"]
    assert c["sketch_runs"] == pytest.approx(32 * c["sketch_direction_runs"], rel=1e-12)
    assert c["sketch_direction_runs"] > 1 and c["first_order_runs_per_test"] > 0
    assert c["retrain_runs_per_set"] > 0.5 and c["retrain_worker_seconds"] > 0
    hy = rep["estimators"]["hybrid"]["cost"]
    assert hy["total_runs"] == pytest.approx(c["sketch_runs"] + 2 * c["first_order_runs_per_test"])
    assert (out / "evaluation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "evaluation.json").read_text()) == rep
    # the findings rank by LDS, and auto follows them
    found = read_findings(rt.open_sketch(files["sketch"]).store)
    for z, ranking in rep["ranking"].items():
        assert found["sizes"][z]["ranking"] == ranking
        lds = [rep["estimators"][n]["by_size"][z]["lds"] for n in ranking]
        assert lds == sorted(lds, reverse=True)
    sk = rt.open_sketch(files["sketch"])
    res = sk.query([[0], [1, 2], [3, 4, 5, 6, 7]], TESTS, estimator="auto")

    def pick(z: str) -> str:  # the best, or one with error bars the evaluation can't tell from it
        ranked, scores = rep["ranking"][z], rep["estimators"]
        best = scores[ranked[0]]["by_size"][z]
        if best["scale"] is not None:
            return ranked[0]
        barred = [n for n in ranked[1:] if scores[n]["by_size"][z]["scale"] is not None
                  and scores[n]["by_size"][z]["lds"] >= best["lds_ci"][0]]
        return barred[0] if barred else ranked[0]

    assert [res.estimator[s, 0] for s in range(3)] == [pick("1"), pick("2"), pick("4")]
    # a rerun retrains nothing and scores the same
    again = run_json(
        capsys, *argv(files, "--sizes", "1,2,4", "--sets-per-size", 6, "--seed", 3, "--out", out)
    )
    assert again["retrain"]["computed"] == 0 and again["retrain"]["reused"] == 18
    assert again["estimators"]["sketch"]["by_size"] == rep["estimators"]["sketch"]["by_size"]
    # the same directory with other sets is refused
    err = one_line_error(capsys, *argv(files, "--sizes", "1,2", "--sets-per-size", 6, "--out", out))
    assert "holds an evaluation of other deletion sets" in err


def test_evaluate_on_given_sets_and_its_table(capsys, files, tmp_path):
    f = tmp_path / "sets.jsonl"
    f.write_text("".join(json.dumps({"delete": [i, (i + 3) % pp.N]}) + "\n" for i in range(8)))
    rc, out, err = run(
        capsys,
        *argv(
            files,
            "--sets",
            f,
            "--estimators",
            "sketch,first-order",
            "--out",
            tmp_path / "ev",
            "--no-findings",
            "--no-figure",
        ),
    )
    assert rc == 0, err
    assert "first-order" in out and "hybrid" not in out and "LDS" in out
    assert not (tmp_path / "ev" / "evaluation.png").exists()


@pytest.mark.parametrize(
    "more,message",
    [
        (["--sizes", "0,2"], "a deletion set size must be >= 1"),
        (["--sizes", "1,99"], "a deletion set of 99 documents is impossible with 12"),
        (["--sizes", "2", "--estimators", "best"], "unknown estimator 'best'"),
        (["--sizes", "2", "--sets-per-size", "1"], "--sets-per-size must be >= 2"),
    ],
)
def test_evaluate_errors(capsys, files, tmp_path, more, message):
    err = one_line_error(capsys, *argv(files, *more, "--out", tmp_path / "ev"))
    assert message in err


def test_auto_is_judged_on_other_sets_than_its_findings(capsys, files, tmp_path):
    sk = rt.precompute(rt.program(PROGRAM), tmp_path / "sketch", degree=3, directions=8, seed=5)
    mine = {**files, "sketch": sk.path}
    err = one_line_error(capsys, *argv(mine, "--sizes", "2", "--estimators", "auto"))
    assert "no findings yet" in err
    sizes = ["--sizes", "1,3", "--sets-per-size", 6]
    first = run_json(capsys, *argv(mine, *sizes, "--seed", 3, "--out", tmp_path / "a"))
    before = read_findings(rt.open_sketch(sk.path).store)
    judged = ["--seed", 4, "--estimators", "auto,first-order", "--out", tmp_path / "b"]
    rep = run_json(capsys, *argv(mine, *sizes, *judged))
    assert read_findings(rt.open_sketch(sk.path).store) == before  # judged, not re-informed
    preds = [json.loads(ln) for ln in lines(tmp_path / "b" / "predictions.jsonl")]
    for p in (p for p in preds if p["estimator"] == "auto"):
        assert p["chosen"] == first["ranking"][str(p["size"])][0]
    for s in rep["estimators"]["auto"]["by_size"].values():
        assert 0 <= s["coverage"] <= 1 and s["sets"] == 6
