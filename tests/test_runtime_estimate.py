"""The deletion estimator on synthetic coefficients (pure numpy, no compiled code)."""

from __future__ import annotations

import math
from decimal import Decimal

import numpy as np
import pytest

from runtime import estimate as est
from runtime.directions import gaussian_directions


def _synthetic(m: int = 12, n: int = 7, k: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    coeffs = rng.normal(size=(m, k + 1)) + 1j * rng.normal(size=(m, k + 1))
    coeffs[:, 0] = 2.5  # c_0 is the same real number for every direction
    psi = gaussian_directions(seed, 0, m, n)
    return coeffs, psi


def _direct(coeffs, psi, w, k):
    """T_r per direction by plain loops over the spec's formula."""
    m, n = psi.shape
    t = np.zeros((k, m))
    for j in range(m):
        u = sum(np.conj(psi[j, i]) * w[i] for i in range(n))
        for r in range(1, k + 1):
            t[r - 1, j] = (coeffs[j, r] * u**r).real * math.comb(n + r - 1, r)
    return t


def test_estimate_matches_direct_computation():
    coeffs, psi = _synthetic()
    w = np.array([1, 0, 0, 1, 0, 1, 0.0])
    e = est.estimate(coeffs, psi, w, groups=3)
    t = _direct(coeffs, psi, w, 3)
    m = psi.shape[0]
    np.testing.assert_allclose(e.terms[:, 0], t.mean(axis=1), rtol=1e-12)
    assert e.prediction[0] == pytest.approx(2.5 + t.mean(axis=1).sum(), rel=1e-12)
    np.testing.assert_allclose(
        e.term_stderr[:, 0], t.std(axis=1, ddof=1) / math.sqrt(m), rtol=1e-12
    )
    assert e.stderr[0] == pytest.approx(t.sum(axis=0).std(ddof=1) / math.sqrt(m), rel=1e-12)
    groups = [t.sum(axis=0)[idx].mean() for idx in np.array_split(np.arange(m), 3)]
    assert e.median_of_means[0] == pytest.approx(2.5 + np.median(groups), rel=1e-12)
    out = e.one()
    assert set(out) >= {"prediction", "c0", "terms", "stderr", "median_of_means"}
    assert out["c0"] == 2.5 and len(out["terms"]) == 3 and len(out["stderr"]["terms"]) == 3


def test_partial_weights_and_lower_degree():
    coeffs, psi = _synthetic(seed=1)
    w = np.array([0.25, 0, 1, 0, 0.5, 0, 0])
    e = est.estimate(coeffs, psi, w, degree=2, groups=1)
    t = _direct(coeffs, psi, w, 2)
    np.testing.assert_allclose(e.terms[:, 0], t.mean(axis=1), rtol=1e-12)
    assert e.median_of_means[0] == pytest.approx(e.prediction[0], rel=1e-14)  # one group
    with pytest.raises(ValueError, match="degree"):
        est.estimate(coeffs, psi, w, degree=4)
    with pytest.raises(ValueError, match="groups"):
        est.estimate(coeffs, psi, w, groups=13)


def test_influence_equals_one_estimate_per_document():
    coeffs, psi = _synthetic(m=9, n=11, seed=2)
    inf = est.influence(coeffs, psi, groups=3, block=4)  # several column blocks
    for i in range(11):
        w = np.zeros(11)
        w[i] = 1
        e = est.estimate(coeffs, psi, w, groups=3)
        assert inf.prediction[i] == pytest.approx(e.prediction[0], rel=1e-13)
        assert inf.stderr[i] == pytest.approx(e.stderr[0], rel=1e-12)
        assert inf.median_of_means[i] == pytest.approx(e.median_of_means[0], rel=1e-13)
        np.testing.assert_allclose(inf.terms[:, i], e.terms[:, 0], rtol=1e-12)


def test_estimator_is_unbiased_for_a_polynomial():
    """F(w) = a.w + w'Bw + sum C_ijk w_i w_j w_k: the Taylor terms along 1_D are known."""
    rng = np.random.default_rng(7)
    n, m = 4, 40000
    a = rng.normal(size=n)
    b = rng.normal(size=(n, n))
    b = (b + b.T) / 2
    c = rng.normal(size=(n, n, n))
    c = sum(
        c.transpose(p) for p in [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)]
    )
    c /= 6
    psi = gaussian_directions(11, 0, m, n)
    coeffs = np.empty((m, 4), np.complex128)
    coeffs[:, 0] = 1.0
    coeffs[:, 1] = psi @ a
    coeffs[:, 2] = np.einsum("mi,ij,mj->m", psi, b, psi)
    coeffs[:, 3] = np.einsum("mi,ijk,mj,mk->m", psi, c, psi, psi)
    d = np.array([1.0, 0, 1, 1])
    want = [a @ d, d @ b @ d, np.einsum("ijk,i,j,k->", c, d, d, d)]
    e = est.estimate(coeffs, psi, d)
    for r in range(3):
        assert abs(e.terms[r, 0] - want[r]) < 4 * e.term_stderr[r, 0], (r, e.terms[r, 0], want[r])


def test_huge_binomials_do_not_overflow():
    n, r = 10**6, 80
    assert math.isinf(est.binom_factor(n, r))
    coeffs = np.zeros((2, r + 1), np.complex128)
    coeffs[:, r] = 1e-300
    u = np.ones(2, np.complex128)
    t = est.term_samples(coeffs, u, n, r)
    want = float(Decimal(math.comb(n + r - 1, r)) * Decimal("1e-300"))
    assert t[r - 1, 0] == pytest.approx(want, rel=1e-10)
    assert np.all(t[: r - 1] == 0)  # zero coefficients stay exactly zero


def test_stability_curve():
    coeffs, _ = _synthetic(m=5, n=30, k=3, seed=3)
    coeffs[2, 3] = 0  # a zero coefficient: -inf, left out of the mean
    vals, mean = est.stability(coeffs, 30)
    for r in range(4):
        with np.errstate(divide="ignore"):
            want = np.log2(np.sqrt(math.comb(30 + r - 1, r)) * np.abs(coeffs[:, r]))
        np.testing.assert_allclose(vals[:, r], want, rtol=1e-12)
    assert np.isneginf(vals[2, 3])
    assert mean[3] == pytest.approx(np.mean(np.delete(vals[:, 3], 2)), rel=1e-12)
    assert mean[0] == pytest.approx(math.log2(2.5), rel=1e-12)


def test_reliability_rule():
    m, n = 16, 50
    psi = gaussian_directions(0, 0, m, n)
    w = np.zeros(n)
    w[:3] = 1
    coeffs = np.zeros((m, 3), np.complex128)
    coeffs[:, 0] = 2.0
    # c_1 = <g, psi> for a gradient g concentrated on the deleted docs: low variance
    g = np.zeros(n)
    g[:3] = 0.05
    coeffs[:, 1] = psi @ g
    tight = est.estimate(coeffs, psi, w)
    assert tight.reliable[0]
    # the same mean effect drowned in noise from the other documents: flagged
    g_noisy = g.copy()
    g_noisy[3:] = np.random.default_rng(0).normal(scale=0.5, size=n - 3)
    coeffs[:, 1] = psi @ g_noisy
    noisy = est.estimate(coeffs, psi, w)
    assert not noisy.reliable[0]
    assert noisy.error[0] > tight.error[0]
    one = est.estimate(coeffs[:1], psi[:1], w)
    assert math.isnan(one.stderr[0]) and not one.reliable[0]
    assert (
        est.default_groups(1) == 1 and est.default_groups(64) == 9 and est.default_groups(12) == 3
    )
