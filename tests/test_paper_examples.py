"""Smoke tests of the paper experiments (examples/paper_*.py) in their --quick mode.

Each script runs end to end on N = T = 20 documents with a small sketch
(M <= 8, K <= 3) into a temporary directory, in one process; its numbers
must be finite, and the K = 0 prediction (c_0) must equal plain compiled
training's test loss exactly.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from examples import (
    paper_accuracy,
    paper_common,
    paper_error_vs_m,
    paper_exact_series,
    paper_series_curve,
    paper_sketch,
    paper_stability,
)


def all_finite(obj) -> bool:
    """Every number in a JSON-like tree is finite (None stands for 'not defined')."""
    if isinstance(obj, dict):
        return all(all_finite(v) for v in obj.values())
    if isinstance(obj, list):
        return all(all_finite(v) for v in obj)
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return True
    if isinstance(obj, int | float):
        return math.isfinite(obj)
    raise TypeError(f"unexpected {type(obj)} in result")


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return tmp_path_factory.mktemp("paper")


def run(module, out):
    result = module.main(["--quick", "--out", str(out), "--workers", "1"])
    saved = json.loads(next(out.glob(f"{module.__name__.split('.')[-1]}_quick.json")).read_text())
    return result, saved


@pytest.fixture(scope="module")
def setting():
    return paper_common.make_setting(quick=True)


def test_setting_is_the_documented_shuffle(setting):
    from circuitsketch.models import microgpt

    docs = microgpt.read_docs(microgpt.corpus_path())
    order = np.random.default_rng(0).permutation(len(docs))[:20]
    assert setting.docs == [docs[i] for i in order]
    assert setting.letter_weights().sum() > 0


def test_spearman_matches_definition():
    a = np.array([0.1, 0.5, 0.3, 0.9, 0.2])
    assert paper_common.spearman(a, a**3) == pytest.approx(1.0)
    assert paper_common.spearman(a, -a) == pytest.approx(-1.0)
    # ties get average ranks: ranks (1.5, 1.5, 3) and (1, 2, 3) -> Pearson of the ranks
    assert paper_common.spearman([1.0, 1.0, 2.0], [1.0, 2.0, 3.0]) == pytest.approx(
        np.corrcoef([1.5, 1.5, 3], [1, 2, 3])[0, 1]
    )


def test_sketch_c0_is_plain_training_loss_exactly(setting, out):
    result, saved = run(paper_sketch, out)
    assert all_finite(saved)
    sk = paper_common.shared_sketch(setting, 1, out)
    c = sk.coeffs[paper_common.TEST_DOC]
    base = setting.retrain(np.zeros(setting.n))[0]
    assert np.all(c[:, 0] == base)  # every direction's order 0 is the undeleted run, bit for bit
    assert result["c0"] == base
    # resuming reads the stored chunks: same numbers, nothing recomputed
    again = paper_common.shared_sketch(setting, 1, out)
    assert again.seconds == 0.0 and np.array_equal(again.coeffs["max"], c)


def test_exact_series(out):
    result, saved = run(paper_exact_series, out)
    assert all_finite(saved)
    assert result["c0_minus_retrained_t0"] == 0.0
    assert result["error_at_t1"]["0"] == pytest.approx(result["truth"][0] - result["truth"][-1])
    # the exact series converges on this small problem: degree K beats degree 1
    K = result["K"]
    assert abs(result["error_at_t1"][str(K)]) < abs(result["error_at_t1"]["1"])


def test_series_curve(out):
    result, saved = run(paper_series_curve, out)
    assert all_finite(saved)
    assert result["c0_minus_retrained_t0"] == 0.0
    assert np.all(np.asarray(result["prediction"]["0"]) == result["truth"][0])
    assert len(result["truth"]) == 11


def test_accuracy(out):
    result, saved = run(paper_accuracy, out)
    assert all_finite(saved)
    assert result["c0_minus_retrained"] == 0.0
    for fam in result["families"].values():
        assert set(fam["rows"]) == set(paper_accuracy.ESTIMATORS)
        for est, row in fam["rows"].items():
            assert row["MAE"] >= 0.0
            if est != "exact first order":
                assert 0.0 <= row["coverage_2se"] <= 1.0


def test_error_vs_m(out):
    result, saved = run(paper_error_vs_m, out)
    assert all_finite(saved)
    assert set(result["per_M"]) == {str(m) for m in paper_error_vs_m.QUICK_MS}


def test_stability(out):
    result, saved = run(paper_stability, out)
    assert all_finite(saved)
    vals = np.asarray(result["per_test"][result["test_doc"]]["values"])
    assert vals.shape == (paper_stability.QUICK_M, paper_stability.QUICK_K + 1)
    assert result["test_doc"] in paper_common.make_setting(quick=True).docs
