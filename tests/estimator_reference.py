"""The deletion estimator written out from the formulas of runtime/estimate.py's docstring,
without its code: the expected values of tests of the query paths (library, CLI, paper
experiments).  For direction j with coefficients c_{j,0..K} and deletion weights w:

    u_j = sum_i conj(psi_{j,i}) w_i,   T_r,j = Re(c_{j,r} u_j^r) binom(N + r - 1, r),
    prediction = c_0 + sum_{r=1..k} mean_j T_r,j          (hybrid: T_1 -> <g, w>)
    stderr = std_j(sum of the sampled T_r,j, ddof = 1) / sqrt(M)
    median of means: c_0 (+ <g, w>) + the median over G = max(1, min(9, M // 4))
    contiguous groups of the mean of the sampled sum.
"""

from __future__ import annotations

import math

import numpy as np


def terms(coeffs: np.ndarray, u: np.ndarray, n: int, k: int) -> np.ndarray:
    """T_r,j for r = 1..k: coeffs (M, K+1), u (M, ...) -> (k, M, ...)."""
    coeffs, u = np.asarray(coeffs), np.asarray(u, np.complex128)
    c = coeffs.reshape(coeffs.shape + (1,) * (u.ndim - 1))
    return np.array(
        [np.real(c[:, r] * u**r) * math.comb(n + r - 1, r) for r in range(1, k + 1)]
    ).reshape(k, *u.shape)


def estimate(coeffs, psi, weights, k: int, exact1=None) -> dict[str, np.ndarray]:
    """Prediction, stderr and median of means (each (Q,)) for weights (N,) or (Q, N);
    `exact1` (Q,): the exact first-order terms <g, w> of the hybrid estimator."""
    coeffs, psi = np.asarray(coeffs), np.asarray(psi)
    m, n = psi.shape
    w = np.atleast_2d(np.asarray(weights, np.float64))
    t = terms(coeffs, np.conj(psi) @ w.T, n, k)  # (k, M, Q)
    sampled = t.sum(axis=0) if exact1 is None else t[1:].sum(axis=0)
    base = coeffs[0, 0].real + (0.0 if exact1 is None else np.asarray(exact1, np.float64))
    groups = np.array_split(np.arange(m), max(1, min(9, m // 4)))
    return {
        "prediction": base + sampled.mean(axis=0),
        "stderr": sampled.std(axis=0, ddof=1) / math.sqrt(m) if m > 1 else np.nan * base,
        "median_of_means": base + np.median([sampled[i].mean(axis=0) for i in groups], axis=0),
        "terms": t.mean(axis=1),
    }
