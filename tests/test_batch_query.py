"""Issue 19: batch queries (``query --sets``, ``Sketch.query``) and ``--estimator auto``.

The batch engine must give, for every (set, test input), what the documented
estimator gives for that set alone: ``tests/estimator_reference.py`` applied
column by column (1e-12 relative), and the single-set ``query`` command.
The sketch is the session's microgpt setting (tests/conftest.py: DOCS, T,
INIT_SEED; K = 3, M = 16), so the compiled modules are the suite's own.
``auto`` must pick by the stored findings per set size, fall back without
them, say what it picked in every record, and refuse findings that do not
belong to the sketch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import runtime.api as rt
from runtime import estimators as E
from runtime.findings import choose, findings_path, nearest_size, read_findings, write_findings
from runtime.store import SketchError
from tests import conftest as ct
from tests import estimator_reference as ref
from tests.cli_helpers import one_line_error, run, run_json

K, M = 3, 16
TEST, OTHER = ct.HELD_OUT, ct.HELD_OUT_LONG  # "olivia"; "jacqueline" (the 16 bucket)
N = len(ct.DOCS)


@pytest.fixture(scope="module")
def sketch(tmp_path_factory) -> rt.Sketch:
    out = tmp_path_factory.mktemp("batch") / "sketch"
    src = rt.microgpt(list(ct.DOCS), steps=ct.T, seed=ct.INIT_SEED)
    return rt.precompute(src, out, degree=K, directions=M, seed=ct.INIT_SEED)


def all_sets() -> list[list[int]]:
    """Every non-empty subset of the 6 documents, and the empty set."""
    return [[i for i in range(N) if m >> i & 1] for m in range(1 << N)]


def write(path: Path, sets: list[list[int]], weights=None) -> Path:
    lines = [
        json.dumps({"delete": s, **({} if weights is None else {"weight": weights[i]})})
        for i, s in enumerate(sets)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("name", ["sketch", "hybrid"])
def test_every_set_is_the_documented_estimator_column_by_column(sketch, name):
    sets = sketch.sets(all_sets(), weight=0.75)
    res = sketch.query(sets, [TEST, OTHER], estimator=name)
    psi, w = sketch.store.directions(), sets.matrix()
    coefs = sketch.coefficients([TEST, OTHER])
    g = sketch.metagradient([TEST, OTHER])
    for d in range(2):
        want = ref.estimate(coefs[d], psi, w, K, exact1=None if name == "sketch" else w @ g[d])
        np.testing.assert_allclose(res.prediction[:, d], want["prediction"], rtol=1e-12)
        np.testing.assert_allclose(res.stderr[:, d], want["stderr"], rtol=1e-10, atol=1e-15)
        mom = res.extra["median_of_means"][:, d]
        np.testing.assert_allclose(mom, want["median_of_means"], rtol=1e-12)
    assert res.prediction.shape == (len(sets), 2) and (res.estimator == name).all()
    assert res.prediction[0, 0] == res.c0[0]  # the empty set changes nothing


def test_the_engine_is_independent_of_blocking_and_order(sketch):
    from runtime.batch_query import query_sets

    lists = all_sets()[1:]
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(lists))
    a = query_sets(sketch.store, [TEST], sketch.sets(lists))
    b = query_sets(sketch.store, [TEST], sketch.sets([lists[i] for i in perm]), block=5)
    np.testing.assert_allclose(b.prediction[:, 0], a.prediction[perm, 0], rtol=1e-14)
    np.testing.assert_allclose(b.stderr[:, 0], a.stderr[perm, 0], rtol=1e-12)


def test_cli_batch_equals_single_queries(capsys, sketch, tmp_path):
    sets = [[3], [1, 4], [0, 2, 5]]
    f = write(tmp_path / "sets.jsonl", sets, [1.0, 0.5, 1.0])
    recs = run_json(capsys, "query", sketch.path, "--sets", f, "--doc", TEST, "--doc", OTHER)
    assert [(r["set"], r["doc"]) for r in recs] == [(s, d) for s in range(3) for d in (TEST, OTHER)]
    for r in recs:
        idx = ",".join(map(str, sets[r["set"]]))
        one = run_json(
            capsys,
            "query",
            sketch.path,
            "--doc",
            r["doc"],
            "--delete-indices",
            idx,
            "--weight",
            r["weight"],
            "--no-hybrid",
        )
        assert r["prediction"] == pytest.approx(one["prediction"], rel=1e-12)
        assert r["stderr"] == pytest.approx(one["stderr"]["total"], rel=1e-10)
        assert r["median_of_means"] == pytest.approx(one["median_of_means"], rel=1e-12)
        assert r["c0"] == one["c0"] and r["estimator"] == "sketch"
        assert r["size"] == len(sets[r["set"]])
    # to a file: the same records, one a line
    out = tmp_path / "out.jsonl"
    summary = run_json(
        capsys, "query", sketch.path, "--sets", f, "--doc", TEST, "--doc", OTHER, "--out", out
    )
    assert summary["records"] == 6 and summary["out"] == str(out)
    assert [json.loads(ln) for ln in out.read_text().splitlines()] == recs
    # one set given the single way, with --estimator: a record like the batch's
    r = run_json(
        capsys,
        "query",
        sketch.path,
        "--doc",
        TEST,
        "--delete-indices",
        "1,4",
        "--weight",
        "0.5",
        "--estimator",
        "sketch",
    )
    assert r == [{**recs[2], "set": 0}]


def test_python_api_accepts_matrices_lists_and_files(sketch, tmp_path):
    idx = np.array([[0, 3], [1, 5], [2, 4]])
    f = write(tmp_path / "s.jsonl", idx.tolist())
    a = sketch.query(idx, [TEST]).prediction
    b = sketch.query(idx.tolist(), [TEST]).prediction
    c = sketch.query(str(f), [TEST]).prediction
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    inf = sketch.influence([TEST])
    from runtime import estimate as est

    want = est.influence(sketch.coefficients([TEST])[0], sketch.store.directions())
    np.testing.assert_allclose(inf.prediction[:, 0], want.prediction, rtol=1e-12)
    with pytest.raises(ValueError, match="deletion set 0: index 6 is out of range"):
        sketch.query([[6]], [TEST])
    with pytest.raises(ValueError, match="unknown estimator 'best'"):
        sketch.query([[1]], [TEST], estimator="best")


def test_cli_batch_errors(capsys, sketch, tmp_path):
    f = write(tmp_path / "sets.jsonl", [[0], [9]])
    err = one_line_error(capsys, "query", sketch.path, "--sets", f, "--doc", TEST)
    assert "line 2: index 9 is out of range: there are 6 training documents" in err
    good = write(tmp_path / "good.jsonl", [[0]])
    err = one_line_error(capsys, "query", sketch.path, "--sets", good, "--doc", TEST, "--hybrid")
    assert "choose --estimator hybrid" in err
    err = one_line_error(
        capsys,
        "query",
        sketch.path,
        "--delete-indices",
        "0",
        "--doc",
        TEST,
        "--out",
        tmp_path / "x.jsonl",
    )
    assert "--out applies to --sets" in err
    err = one_line_error(
        capsys, "query", sketch.path, "--sets", good, "--doc", TEST, "--degree", "4"
    )
    assert "--degree must be between 1 and the sketch's degree 3" in err


# ---------------------------------------------------------------- auto
def test_auto_rule_nearest_size_on_a_log_scale():
    assert nearest_size([1, 10, 100], 40) == 100 and nearest_size([1, 10, 100], 30) == 10
    assert nearest_size([1, 10, 100], 0) == 1 and nearest_size([2, 8], 4) == 2  # tie: smaller
    f = {"sizes": {"1": {"ranking": ["hybrid", "first-order"]}, "100": {"ranking": ["sketch"]}}}
    assert choose(f, 3, {"sketch", "hybrid"}) == ("hybrid", 1)
    assert choose(f, 3, {"sketch", "first-order"}) == ("first-order", 1)  # the next ranked
    assert choose(f, 3, {"sketch"}) == ("sketch", None)  # none ranked usable: fallback rule
    assert choose(f, 50, {"sketch", "first-order"}) == ("sketch", 100)
    assert choose(None, 5, {"sketch", "first-order"}) == ("first-order", None)
    assert choose(None, 5, {"sketch"}) == ("sketch", None)


def test_auto_prefers_error_bars_when_the_evaluation_cannot_tell_the_difference():
    size = {
        "ranking": ["first-order", "second-order", "sketch"],
        "lds": {"first-order": 0.82, "second-order": 0.80, "sketch": 0.79},
        "lds_ci": {"first-order": [0.81, 0.84]},
        "scale": {"first-order": None, "second-order": 5.0, "sketch": 0.9},
    }
    f = {"sizes": {"500": size}}
    everything = {"first-order", "second-order", "sketch"}
    assert choose(f, 500, everything) == ("first-order", 500)  # 0.80 is below 0.81
    size["lds_ci"]["first-order"] = [0.795, 0.84]  # now inside: the calibrated one
    assert choose(f, 500, everything) == ("second-order", 500)
    assert choose(f, 500, {"first-order", "sketch"}) == ("first-order", 500)  # 0.79 outside
    size["scale"]["first-order"] = 1.0  # the best has error bars itself: kept
    assert choose(f, 500, everything) == ("first-order", 500)


def test_auto_picks_by_findings_and_says_so(capsys, sketch, tmp_path):
    p = findings_path(sketch.store)
    if p.exists():
        p.unlink()
    sets = [[1], [0, 3], [0, 1, 2, 3, 4]]
    f = write(tmp_path / "sets.jsonl", sets)
    sketch.metagradient([TEST])  # stored for TEST only
    auto = ["query", sketch.path, "--sets", f, "--doc", TEST, "--doc", "max", "--estimator", "auto"]
    recs = run_json(capsys, *auto)
    picks = {(r["set"], r["doc"]): (r["estimator"], r["auto_evaluated_size"]) for r in recs}
    # no findings: first order where stored, else the sketch
    assert {v for (s, d), v in picks.items() if d == TEST} == {("first-order", None)}
    assert {v for (s, d), v in picks.items() if d == "max"} == {("sketch", None)}
    body = {
        "sizes": {
            "1": {"ranking": ["hybrid", "first-order", "sketch"]},
            "4": {"ranking": ["first-order", "sketch", "hybrid"]},
        }
    }
    write_findings(sketch.store, body)
    assert read_findings(sketch.store) == body
    recs = run_json(capsys, *auto)
    got = [(r["set"], r["doc"], r["estimator"], r["auto_evaluated_size"]) for r in recs]
    assert got == [
        (0, TEST, "hybrid", 1),
        (0, "max", "sketch", 1),  # size 1: hybrid unusable for max
        (1, TEST, "hybrid", 1),
        (1, "max", "sketch", 1),  # size 2: log-nearest 1 (tie)
        (2, TEST, "first-order", 4),
        (2, "max", "sketch", 4),  # size 5: nearest 4
    ]
    # each record is what that estimator answers alone
    for r in recs:
        alone = sketch.query([sets[r["set"]]], [r["doc"]], estimator=r["estimator"])
        assert r["prediction"] == pytest.approx(float(alone.prediction[0, 0]), rel=1e-13)
    # the text table names the pick too
    rc, out, _ = run(
        capsys, "query", sketch.path, "--sets", f, "--doc", TEST, "--estimator", "auto"
    )
    assert rc == 0 and out.count("hybrid") == 2 and out.count("first-order") == 1


def test_auto_refuses_findings_of_another_sketch_or_corrupt(capsys, sketch, tmp_path):
    f = write(tmp_path / "sets.jsonl", [[1]])
    write_findings(sketch.store, {"sizes": {"1": {"ranking": ["sketch"]}}})
    p = findings_path(sketch.store)
    good = p.read_text()
    argv = ["query", sketch.path, "--sets", f, "--doc", TEST, "--estimator", "auto"]
    p.write_text(good.replace('"sketch"\n', '"hybrid"\n'))  # the ranking edited by hand
    assert "are corrupt (checksum mismatch)" in one_line_error(capsys, *argv)
    obj = json.loads(good)
    obj["sketch"] = "0" * 64
    p.write_text(json.dumps(obj))
    assert "were made for another sketch" in one_line_error(capsys, *argv)
    p.write_text("{")
    assert "are unreadable" in one_line_error(capsys, *argv)
    p.unlink()
    with pytest.raises(SketchError):  # and through the API
        p.write_text("[]")
        sketch.query([[1]], [TEST], estimator="auto")
    p.unlink()


def test_registry_plugs_in_a_new_estimator(sketch):
    @E.register("half-first-order", ("first_order",), "half of the exact first order")
    def half(test, sets, options):
        return E.Answer(test.c0 + 0.5 * sets.dot(test.first_order), np.zeros(len(sets)))

    try:
        res = sketch.query([[0, 3], [2]], [TEST], estimator="half-first-order")
        fo = sketch.query([[0, 3], [2]], [TEST], estimator="first-order")
        np.testing.assert_allclose(res.prediction - res.c0, 0.5 * (fo.prediction - fo.c0))
        assert "half-first-order" in rt.estimators()
    finally:
        del E.ESTIMATORS["half-first-order"]
    with pytest.raises(ValueError, match="unknown needs"):
        E.register("x", ("hessian",), "")


def test_huge_binomials_take_the_log_domain_path_of_estimate():
    """K = 150 over N = 10,000 documents: binom(N + r - 1, r) overflows past 1e290, and the
    engine must then agree with ``estimate.estimate`` (which computes it in logs)."""
    from runtime import estimate as est
    from runtime.batch_query import run_estimators

    rng = np.random.default_rng(3)
    m, n, k = 4, 10_000, 150
    assert est.binom_factor(n, k) > 1e290
    psi = rng.normal(size=(m, n)) + 1j * rng.normal(size=(m, n))
    psi /= np.linalg.norm(psi, axis=1, keepdims=True)
    c = (rng.normal(size=(m, k + 1)) + 1j * rng.normal(size=(m, k + 1))) * 0.5 ** np.arange(k + 1)
    c[:, 0] = 1.0
    sets = rt.DeletionSets.from_lists([[0], [1, 2], [3, 4, 5]], n)
    data = [E.TestData("t", "t", 1.0, c)]
    pred, se, _ = run_estimators(data, psi, sets, np.full((3, 1), "sketch", dtype=object))
    want = est.estimate(c, psi, sets.matrix())
    assert np.isfinite(pred).all() and np.isfinite(se).all()
    np.testing.assert_allclose(pred[:, 0], want.prediction, rtol=1e-10)
    np.testing.assert_allclose(se[:, 0], want.stderr, rtol=1e-8)
