"""How good predictions are against the truth: LDS with a bootstrap interval, MAE, coverage.

* ``rankdata``: ranks 1..n along the last axis, ties given their average rank.
* ``spearman``: Pearson correlation of the ranks, along the last axis (NaN when
  either side is constant).
* LDS (the linear datamodeling score) of one group of sets: for each test
  input, Spearman across the sets between predicted and true outputs; then
  the mean over test inputs (those with a defined correlation).
* Bootstrap interval: the sets are resampled with replacement (the same
  resample for every test input), the LDS recomputed, and the 2.5 and 97.5
  percentiles of those LDS values reported (seeded: reruns give the same).
* MAE: mean |prediction - truth| over every (set, test input) of the group.
* Coverage: the fraction of them with |prediction - truth| <= 2 stderr
  (a NaN stderr counts as not covering).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

__all__ = ["bootstrap_lds", "lds", "rankdata", "score", "spearman"]


def rankdata(x: np.ndarray) -> np.ndarray:
    """Average ranks (1-based) along the last axis."""
    x = np.asarray(x, np.float64)
    n = x.shape[-1]
    order = np.argsort(x, axis=-1, kind="stable")
    xs = np.take_along_axis(x, order, axis=-1)
    pos = np.broadcast_to(np.arange(n), x.shape)
    new = np.ones(x.shape, bool)
    new[..., 1:] = xs[..., 1:] != xs[..., :-1]
    first = np.maximum.accumulate(np.where(new, pos, 0), axis=-1)
    last_new = np.ones(x.shape, bool)
    last_new[..., :-1] = new[..., 1:]
    rev = np.where(last_new, pos, n - 1)[..., ::-1]
    last = np.minimum.accumulate(rev, axis=-1)[..., ::-1]
    ranks = np.empty(x.shape)
    np.put_along_axis(ranks, order, (first + last) / 2.0 + 1.0, axis=-1)
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's rank correlation along the last axis (NaN if a side is constant)."""
    ra, rb = rankdata(a), rankdata(b)
    ra = ra - ra.mean(axis=-1, keepdims=True)
    rb = rb - rb.mean(axis=-1, keepdims=True)
    num = (ra * rb).sum(axis=-1)
    den = np.sqrt((ra * ra).sum(axis=-1) * (rb * rb).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _nanmean(x: np.ndarray, axis: int) -> np.ndarray:
    with warnings.catch_warnings():  # all NaN: NaN, quietly
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=axis)


def lds(pred: np.ndarray, truth: np.ndarray) -> float:
    """LDS of predictions (S, D) against the truth (S, D): mean over D of Spearman over S."""
    if pred.shape[0] < 2:
        return float("nan")
    return float(_nanmean(spearman(pred.T, truth.T), axis=0))


def bootstrap_lds(
    pred: np.ndarray, truth: np.ndarray, resamples: int, seed: Any
) -> tuple[float, float]:
    """The 2.5 and 97.5 percentiles of the LDS over `resamples` resamples of the sets."""
    s = pred.shape[0]
    if s < 2 or resamples < 1:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, s, size=(resamples, s))
    # (R, D, S): every resample's sets, per test input
    p = np.transpose(pred[rows], (0, 2, 1))
    t = np.transpose(truth[rows], (0, 2, 1))
    values = _nanmean(spearman(p, t), axis=1)
    values = values[np.isfinite(values)]
    if not values.size:
        return float("nan"), float("nan")
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)


def score(
    pred: np.ndarray, stderr: np.ndarray, truth: np.ndarray, resamples: int, seed: Any
) -> dict[str, Any]:
    """All the scores of one estimator on one group of sets (arrays (S, D))."""
    err = np.abs(pred - truth)
    with np.errstate(invalid="ignore"):
        covered = err <= 2.0 * stderr
    lo, hi = bootstrap_lds(pred, truth, resamples, seed)
    return {
        "sets": int(pred.shape[0]),
        "lds": lds(pred, truth),
        "lds_ci": [lo, hi],
        "mae": float(np.mean(err)),
        "coverage": float(np.mean(covered)),
        "mean_stderr": float(np.mean(stderr)),
    }
