"""The spec's deletion estimator, its error bars, and the stability diagnostic.

For direction j (psi_j, unit vector of C^N) with test-output coefficients
c_{j,0..K} and a deletion weight vector w (1_D, or partial weights in [0,1]^N):

    u_j   = <conj(psi_j), w> = sum_i conj(psi_{j,i}) w_i
    T_r,j = Re(c_{j,r} u_j^r) * binom(N + r - 1, r)        (unbiased for the r-th term)
    prediction = c_0 + sum_{r=1..k} mean_j T_r,j

Error bars: the standard error of each term is std_j(T_r,j) / sqrt(M) and that
of the total is std_j(sum_r T_r,j) / sqrt(M) (ddof = 1; undefined, NaN, for
M = 1).  Median-of-means splits the M directions into G contiguous groups,
forms the prediction of each group and takes the median.

Reliability rule (``RELATIVE_TOLERANCE``, ``ABSOLUTE_TOLERANCE``): the estimated
error of a prediction is

    error = sqrt(stderr_total^2 + last^2),  last = |mean_j T_k,j| if k >= 2 else 0

(the Monte Carlo error plus the size of the last kept term as a proxy for the
truncation error), and the answer is called unreliable when

    error > max(0.5 * |prediction - c_0|,  0.01 * |c_0|)

i.e. when the error bar is larger than half the predicted effect and also
larger than 1% of the undeleted output.  Small effects that are known to be
small (tiny error) stay reliable; large deletion sets, whose u_j^r and hence
T_r spread grows like |D|^(r/2), are flagged with their estimated error.

Hybrid estimator (``exact1``): when the exact first-order term <g, w> is known
(g = dF/dw at 0, ``runtime.metagrad``), it replaces the sketched mean of T_1:

    prediction = c_0 + <g, w> + sum_{r=2..k} mean_j T_r,j

and every error bar comes from orders >= 2 only: the total's standard error is
std_j(sum_{r>=2} T_r,j) / sqrt(M) (zero for k = 1), the first term's is 0, the
median-of-means is c_0 + <g, w> + median over groups of the r >= 2 sums, and
the reliability rule above is applied unchanged to these numbers.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ABSOLUTE_TOLERANCE",
    "RELATIVE_TOLERANCE",
    "Estimate",
    "binom_factor",
    "default_groups",
    "estimate",
    "estimate_from_u",
    "influence",
    "stability",
    "term_samples",
]

RELATIVE_TOLERANCE = 0.5
ABSOLUTE_TOLERANCE = 0.01


def log_binom(n: int, r: int) -> float:
    """log binom(n + r - 1, r), exactly from the integer (no overflow for any size)."""
    return math.log(math.comb(n + r - 1, r))


def binom_factor(n: int, r: int) -> float:
    """binom(n + r - 1, r) as a float (inf if it does not fit a float)."""
    b = math.comb(n + r - 1, r)
    try:
        return float(b)
    except OverflowError:
        return math.inf


def default_groups(m: int) -> int:
    """Median-of-means groups used when none are asked for: floor(M/4), between 1 and 9."""
    return max(1, min(9, m // 4))


def term_samples(coeffs: np.ndarray, u: np.ndarray, n: int, k: int) -> np.ndarray:
    """T_r for r = 1..k: coeffs (M, K+1), u (M, ...) -> (k, M, ...) float64.

    Computed as Re(c_r u^r) * binom(N+r-1, r); when the binomial does not fit
    a float the product is formed in the log domain instead.
    """
    coeffs = np.asarray(coeffs)
    u = np.asarray(u, np.complex128)
    extra = (slice(None),) + (None,) * (u.ndim - 1)
    out = np.empty((k, *u.shape))
    for r in range(1, k + 1):
        c = coeffs[:, r][extra]
        b = binom_factor(n, r)
        if math.isfinite(b) and b < 1e290:
            out[r - 1] = (c * u**r).real * b
        else:
            with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
                mag = np.log(np.abs(c)) + r * np.log(np.abs(u)) + log_binom(n, r)
                val = np.exp(mag) * np.cos(np.angle(c) + r * np.angle(u))
            out[r - 1] = np.where(np.isneginf(mag), 0.0, val)
    return out


@dataclass
class Estimate:
    """Prediction for Q deletion vectors at once (arrays with a trailing Q axis)."""

    c0: float
    prediction: np.ndarray  # (Q,)
    terms: np.ndarray  # (k, Q) mean of T_r
    term_stderr: np.ndarray  # (k, Q)
    stderr: np.ndarray  # (Q,) of the total
    median_of_means: np.ndarray  # (Q,)
    groups: int
    error: np.ndarray  # (Q,) estimated error (see the module docstring)
    reliable: np.ndarray  # (Q,) bool

    def one(self, q: int = 0) -> dict:
        """The q-th query as plain Python numbers (NaN where undefined)."""
        return {
            "prediction": float(self.prediction[q]),
            "c0": float(self.c0),
            "terms": [float(t) for t in self.terms[:, q]],
            "stderr": {
                "total": float(self.stderr[q]),
                "terms": [float(s) for s in self.term_stderr[:, q]],
            },
            "median_of_means": float(self.median_of_means[q]),
            "groups": self.groups,
            "estimated_error": float(self.error[q]),
            "reliable": bool(self.reliable[q]),
        }


def _std_err(x: np.ndarray) -> np.ndarray:
    m = x.shape[0]
    if m < 2:
        return np.full(x.shape[1:], np.nan)
    return x.std(axis=0, ddof=1) / math.sqrt(m)


def estimate_from_u(
    coeffs: np.ndarray,
    u: np.ndarray,
    n: int,
    degree: int | None = None,
    groups: int | None = None,
    exact1: np.ndarray | None = None,
) -> Estimate:
    """The estimator for Q deletion vectors given u (M, Q) = conj(psi) @ w for each.

    `exact1` (Q,): the exact first-order terms <g, w>; gives the hybrid estimator
    (module docstring), whose error bars come from orders >= 2 only.
    """
    coeffs = np.asarray(coeffs)
    m, kp1 = coeffs.shape
    k = kp1 - 1 if degree is None else int(degree)
    if not 0 <= k <= kp1 - 1:
        raise ValueError(f"--degree must be between 0 and the sketch's degree {kp1 - 1}, got {k}")
    g = default_groups(m) if groups is None else int(groups)
    if not 1 <= g <= m:
        raise ValueError(f"--groups must be between 1 and the number of directions {m}, got {g}")
    u = np.asarray(u, np.complex128)
    if u.ndim == 1:
        u = u[:, None]
    # c_0 is the undeleted run, the same number in every direction: take it as is
    # (a mean over M equal floats can be off in the last digit)
    first = coeffs[:, 0].real
    c0 = float(first[0]) if np.all(first == first[0]) else float(np.mean(first))
    q = u.shape[1]
    t = term_samples(coeffs, u, n, k)  # (k, M, Q)
    means = t.mean(axis=1)  # (k, Q)
    term_se = np.stack([_std_err(t[r]) for r in range(k)]) if k else np.zeros((0, q))
    if exact1 is not None and k >= 1:
        exact1 = np.broadcast_to(np.asarray(exact1, np.float64), (q,))
        rest = t[1:].sum(axis=0)  # (M, Q): orders >= 2 (zeros for k = 1)
        means[0] = exact1
        term_se[0] = 0.0
        se = _std_err(rest) if k >= 2 else np.zeros(q)
        shift = exact1  # the exact part, added to every group's mean of `rest`
        sampled = rest
    else:
        sampled = t.sum(axis=0)  # (M, Q)
        se = _std_err(sampled) if k else np.zeros(q)
        shift = np.zeros(q)
    prediction = c0 + means.sum(axis=0)
    group_means = np.stack([sampled[idx].mean(axis=0) for idx in np.array_split(np.arange(m), g)])
    mom = c0 + shift + np.median(group_means, axis=0)
    last = np.abs(means[-1]) if k >= 2 else np.zeros(q)
    se_or_zero = np.where(np.isnan(se), 0.0, se)
    error = np.sqrt(se_or_zero**2 + last**2)
    sampled_orders = k >= 2 if exact1 is not None else k >= 1
    if m < 2 and sampled_orders:
        error = np.full_like(error, np.inf)  # no spread to measure: never claim reliability
    bound = np.maximum(RELATIVE_TOLERANCE * np.abs(prediction - c0), ABSOLUTE_TOLERANCE * abs(c0))
    return Estimate(c0, prediction, means, term_se, se, mom, g, error, error <= bound)


def estimate(
    coeffs: np.ndarray,
    psi: np.ndarray,
    weights: np.ndarray,
    degree: int | None = None,
    groups: int | None = None,
    first_order: np.ndarray | None = None,
) -> Estimate:
    """Prediction for deletion weights (N,) or (Q, N) from coeffs (M, K+1) and psi (M, N).

    `first_order` (N,): the exact metagradient g; the first-order term is then
    <g, w> exactly (the hybrid estimator, see the module docstring).
    """
    psi = np.asarray(psi)
    w = np.asarray(weights, np.float64)
    if w.ndim == 1:
        w = w[None]
    if w.shape[1] != psi.shape[1]:
        raise ValueError(f"weights have {w.shape[1]} entries, the sketch has {psi.shape[1]} docs")
    # u = conj(psi) @ w for real w, as two real products (a complex-by-real matmul takes
    # numpy's slow path: ~200x slower at M = 16, N = 1000)
    u = (psi.real @ w.T) - 1j * (psi.imag @ w.T)  # (M, Q)
    exact1 = None
    if first_order is not None:
        g = np.asarray(first_order, np.float64)
        if g.shape != (psi.shape[1],):
            raise ValueError(f"metagradient has shape {g.shape}, expected ({psi.shape[1]},)")
        exact1 = w @ g
    return estimate_from_u(coeffs, u, psi.shape[1], degree, groups, exact1)


def influence(
    coeffs: np.ndarray,
    psi: np.ndarray,
    degree: int | None = None,
    groups: int | None = None,
    block: int = 4096,
    first_order: np.ndarray | None = None,
) -> Estimate:
    """Every single-document deletion at once: u = conj(psi) (M, N), in column blocks.

    `first_order` (N,): the exact metagradient g, so that document i's
    first-order term is g_i exactly (hybrid; errors from orders >= 2 only).
    """
    psi = np.asarray(psi)
    n = psi.shape[1]
    g = None
    if first_order is not None:
        g = np.asarray(first_order, np.float64)
        if g.shape != (n,):
            raise ValueError(f"metagradient has shape {g.shape}, expected ({n},)")
    parts = [
        estimate_from_u(
            coeffs,
            np.conj(psi[:, a : a + block]),
            n,
            degree,
            groups,
            None if g is None else g[a : a + block],
        )
        for a in range(0, n, block)
    ]
    first = parts[0]

    def cat(name: str, axis: int) -> np.ndarray:
        return np.concatenate([getattr(p, name) for p in parts], axis=axis)

    return Estimate(
        first.c0,
        cat("prediction", 0),
        cat("terms", 1),
        cat("term_stderr", 1),
        cat("stderr", 0),
        cat("median_of_means", 0),
        first.groups,
        cat("error", 0),
        cat("reliable", 0),
    )


def stability(coeffs: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """log2(sqrt(binom(N+r-1, r)) |c_r|) for r = 0..K: per direction (M, K+1) and the mean.

    The mean is over directions of the log2 values (a geometric mean); zero
    coefficients give -inf and are left out of the mean.
    """
    coeffs = np.asarray(coeffs)
    kp1 = coeffs.shape[1]
    half_log2_b = np.array([0.5 * log_binom(n, r) / math.log(2) for r in range(kp1)])
    with np.errstate(divide="ignore"):
        vals = np.log2(np.abs(coeffs)) + half_log2_b[None, :]
    finite = np.where(np.isfinite(vals), vals, np.nan)
    with warnings.catch_warnings():  # a column of only zeros: mean of nothing is NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(finite, axis=0)
    return vals, mean
