"""Issue 19: every estimator against a program whose truth is known in closed form.

``tests/poly_program.py`` trains a user program whose test output is a
cubic polynomial of the data weights, F(w) = q(e* - <b, w>) with q(e) = e^2
+ e^3 / 2, and gives e*, b, the gradient and the Taylor coefficients along
any direction in closed form, computed without the compiler.  So:

* retraining (``batch_retrain``, the compiled real trainer) must equal F(w)
  to 1e-12 (relative);
* the sketch's coefficients must equal the closed-form ones to 1e-10;
* each estimator's answer, through the batch engine, must equal its formula
  (``tests/estimator_reference.py``, written from the docs) applied to the
  closed-form coefficients and gradient: 1e-10 relative;
* at K = 3 >= the degree of F, the sketch and hybrid estimators are unbiased
  for the truth: for every set |prediction - F(w)| <= 4 sigma, sigma the
  estimator's true Monte Carlo standard deviation over random directions,
  computed from the closed form with 200,000 independent directions; and
  stderr / sigma is within 4 sd of 1, the sd of a sample spread of M draws
  being sqrt((kurtosis - 1) / (4 M)) relative (kurtosis from the same draws);
* first order is exact to first order: its error is exactly the orders 2
  and 3 of F, known in closed form (1e-10).

The sharpness tests at the end patch one detail of the code under test (a
binomial off by one, u without its conjugate, retraining weights 0.1% off)
and show the same checks fail.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import runtime.api as rt
from runtime import estimate as est
from runtime import estimators as E
from tests import estimator_reference as ref
from tests import poly_program as pp

PROGRAM = f"{Path(pp.__file__).resolve()}:build"
K, M = 3, 64
X, T = pp.data()
TEST = {"x": X[0], "t": np.array(0.5)}  # e* = -0.52: every order of q matters
OTHER = {"x": X[5], "t": np.array(-1.0)}
SIZES = (1, 2, 3, 5, 8)


@pytest.fixture(scope="module")
def sketch(tmp_path_factory) -> rt.Sketch:
    out = tmp_path_factory.mktemp("poly") / "sketch"
    return rt.precompute(rt.program(PROGRAM), out, degree=K, directions=M, seed=4)


@pytest.fixture(scope="module")
def sets() -> rt.DeletionSets:
    rng = np.random.default_rng(5)
    lists = [rng.choice(pp.N, z, replace=False) for z in SIZES for _ in range(8)]
    return rt.DeletionSets.from_lists(lists, pp.N)


def truth(test: dict, w: np.ndarray) -> np.ndarray:
    return pp.truth(test["x"], float(test["t"]), w)


def true_sigma(test: dict, w: np.ndarray, first: int) -> tuple[np.ndarray, np.ndarray]:
    """The estimator's Monte Carlo sd over random directions / sqrt(M) (orders first..3), and
    the kurtosis of its per-direction samples."""
    rng = np.random.default_rng(99)
    big = rng.normal(size=(200_000, pp.N)) + 1j * rng.normal(size=(200_000, pp.N))
    big /= np.linalg.norm(big, axis=1, keepdims=True)
    c = pp.coefficients(test["x"], float(test["t"]), big)
    x = ref.terms(c, np.conj(big) @ w.T, pp.N, K)[first - 1 :].sum(axis=0)
    dev = x - x.mean(axis=0)
    kurtosis = (dev**4).mean(axis=0) / (dev**2).mean(axis=0) ** 2
    return x.std(axis=0) / math.sqrt(M), kurtosis


# ---------------------------------------------------------------- the references themselves
def test_retraining_equals_the_closed_form(sketch, sets):
    got = sketch.retrain(sets, [TEST, OTHER])
    w = sets.matrix()
    for d, t in enumerate((TEST, OTHER)):
        np.testing.assert_allclose(got[:, d], truth(t, w), rtol=1e-12)


def test_sketch_coefficients_equal_the_closed_form(sketch):
    c = sketch.coefficients([TEST, OTHER])
    psi = sketch.store.directions()
    for d, t in enumerate((TEST, OTHER)):
        want = pp.coefficients(t["x"], float(t["t"]), psi)
        assert np.max(np.abs(c[d] - want)) <= 1e-10 * np.max(np.abs(want))


def test_metagradient_equals_the_closed_form(sketch):
    g = sketch.metagradient([TEST])[0]
    want = pp.gradient(TEST["x"], float(TEST["t"]))
    np.testing.assert_allclose(g, want, rtol=1e-10, atol=1e-14 * np.max(np.abs(want)))


# ---------------------------------------------------------------- each estimator, exactly
def expected(name: str, test: dict, psi: np.ndarray, w: np.ndarray, k: int = K):
    """(prediction, stderr) of estimator `name` from the closed form and the documented formulas."""
    c = pp.coefficients(test["x"], float(test["t"]), psi)
    g = pp.gradient(test["x"], float(test["t"]))
    c0 = float(c[0, 0].real)
    if name == "first-order":
        return c0 + w @ g, np.zeros(len(w))
    r = ref.estimate(c, psi, w, k, exact1=None if name == "sketch" else w @ g)
    if name == "hybrid" and k == 1:
        r["stderr"] = np.zeros(len(w))
    return r["prediction"], r["stderr"]


@pytest.mark.parametrize("name", ["sketch", "first-order", "hybrid"])
def test_each_estimator_is_its_formula_on_the_closed_form(sketch, sets, name):
    res = sketch.query(sets, [TEST, OTHER], estimator=name)
    psi, w = sketch.store.directions(), sets.matrix()
    for d, t in enumerate((TEST, OTHER)):
        pred, se = expected(name, t, psi, w)
        scale = np.max(np.abs(pred))
        assert np.max(np.abs(res.prediction[:, d] - pred)) <= 1e-10 * scale
        assert np.max(np.abs(res.stderr[:, d] - se)) <= 1e-10 * max(np.max(se), 1e-300)
    assert set(res.estimator.ravel()) == {name}


@pytest.mark.parametrize("k", [1, 2])
def test_lower_degrees_are_the_truncated_formula(sketch, sets, k):
    psi, w = sketch.store.directions(), sets.matrix()
    for name in ("sketch", "hybrid"):
        res = sketch.query(sets, [TEST], estimator=name, degree=k)
        pred, se = expected(name, TEST, psi, w, k)
        assert np.max(np.abs(res.prediction[:, 0] - pred)) <= 1e-10 * np.max(np.abs(pred))
        assert np.max(np.abs(res.stderr[:, 0] - se)) <= 1e-10 * max(np.max(se), 1e-300)


def test_first_order_misses_exactly_the_higher_orders(sketch, sets):
    res = sketch.query(sets, [TEST], estimator="first-order")
    e, b = pp.closed_form(TEST["x"], float(TEST["t"]))
    bw = sets.matrix() @ b  # F(w) = q(e - bw): orders 2 and 3 in closed form
    higher = (1 + 1.5 * e) * bw**2 - 0.5 * bw**3
    err = truth(TEST, sets.matrix()) - res.prediction[:, 0]
    np.testing.assert_allclose(err, higher, rtol=1e-8, atol=1e-13)


# ---------------------------------------------------------------- against the truth, statistically
@pytest.mark.parametrize("name,first", [("sketch", 1), ("hybrid", 2)])
def test_unbiased_at_full_degree_within_four_sigma(sketch, sets, name, first):
    """|prediction - truth| <= 4 sigma; stderr / sigma within 4 sd of the sample spread's own
    sampling error, sqrt((kurtosis - 1) / (4 M))."""
    res = sketch.query(sets, [TEST], estimator=name)
    w = sets.matrix()
    sigma, kurtosis = true_sigma(TEST, w, first)
    z = (res.prediction[:, 0] - truth(TEST, w)) / sigma
    assert np.all(np.abs(z) <= 4.0), np.round(z, 2)
    ratio = res.stderr[:, 0] / sigma
    band = 4 * np.sqrt((kurtosis - 1) / (4 * M))
    assert np.all(np.abs(ratio - 1) <= band), np.round((ratio - 1) / band, 2)


# ---------------------------------------------------------------- sharpness: the checks can fail
def _fails(check) -> bool:
    try:
        check()
    except AssertionError:
        return True
    return False


def test_a_binomial_off_by_one_fails_the_formula_check(sketch, sets, monkeypatch):
    monkeypatch.setattr(est, "binom_factor", lambda n, r: float(math.comb(n + r, r)))
    assert _fails(
        lambda: test_each_estimator_is_its_formula_on_the_closed_form(sketch, sets, "sketch")
    )


def test_u_without_its_conjugate_fails_both_checks(sketch, sets, monkeypatch):
    real_u = E.SetBlock.u

    def wrong(self):
        if 1 not in self._powers:
            self.psi_ct = np.conj(self.psi_ct)
            real_u(self)
            self.psi_ct = np.conj(self.psi_ct)
        return self._powers[1]

    monkeypatch.setattr(E.SetBlock, "u", wrong)
    assert _fails(
        lambda: test_each_estimator_is_its_formula_on_the_closed_form(sketch, sets, "sketch")
    )
    assert _fails(lambda: test_unbiased_at_full_degree_within_four_sigma(sketch, sets, "sketch", 1))


def test_retraining_weights_slightly_off_fail_the_truth_check(sketch, sets, monkeypatch):
    from runtime import batch_retrain

    job = batch_retrain.retrain_job

    def wrong(j: batch_retrain.RetrainJob):
        j.weights = [w * 0.999 for w in j.weights]
        return job(j)

    monkeypatch.setattr(batch_retrain, "retrain_job", wrong)
    assert _fails(lambda: test_retraining_equals_the_closed_form(sketch, sets))
