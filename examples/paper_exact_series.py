"""Experiment 2: the exact Taylor series along one deletion, against real retraining.

One series run of degree K = 6 along the single direction psi = 1_D (D = the
names containing "x", not normalised) gives the coefficients c_0..c_6 of
t -> F(t 1_D), the test loss of "max" after training with the x-names
downweighted by t.  The truncated series sum_{r<=k} c_r t^r (k = 1..6) is
compared with 11 real retrainings at t = 0, 0.1, ..., 1.  A second, longer
run (K = 20, ~1 minute) extends the truncation errors at t = 1 to degree 20.

    python -m examples.paper_exact_series [--quick]
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from examples.paper_common import (
    TEST_DOC,
    exact_series,
    make_setting,
    markdown_table,
    parse_args,
    pyplot,
    save_figure,
    write_result,
)

FULL_K, QUICK_K = 6, 3
# a longer exact series along the same direction, to see where the truncations go beyond K = 6
FULL_EXTRA_K, QUICK_EXTRA_K = 20, 5


def partial_sums(c: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(K+1, len(t)): row k is sum_{r<=k} c_r t^r."""
    powers = t[None, :] ** np.arange(len(c))[:, None]
    return np.cumsum(c[:, None] * powers, axis=0)


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(__doc__, argv)
    t_start = time.perf_counter()
    setting = make_setting(args.quick)
    K = QUICK_K if args.quick else FULL_K
    w = setting.letter_weights()
    ts = np.round(np.linspace(0.0, 1.0, 11), 10)

    t0 = time.perf_counter()
    c = exact_series(setting, w, K)
    t_series = time.perf_counter() - t0
    print(f"series run K={K} along 1_D (|D| = {int(w.sum())}): {t_series:.1f} s")
    if np.max(np.abs(c.imag)) > 1e-12 * np.max(np.abs(c)):
        raise AssertionError(f"a real direction gave complex coefficients {c}")
    c = c.real

    t0 = time.perf_counter()
    extra_k = QUICK_EXTRA_K if args.quick else FULL_EXTRA_K
    c_long = exact_series(setting, w, extra_k).real
    t_long = time.perf_counter() - t0
    print(f"series run K={extra_k} along 1_D: {t_long:.1f} s")

    t0 = time.perf_counter()
    truth = setting.retrain(ts[:, None] * w[None, :])
    t_truth = time.perf_counter() - t0
    sums = partial_sums(c, ts)  # (K+1, 11)
    err = sums - truth[None, :]
    long_err = np.cumsum(c_long) - truth[-1]  # truncations at t = 1, degrees 0..extra_k
    if np.max(np.abs(c_long[: K + 1] - c)) > 1e-9 * np.max(np.abs(c)):
        raise AssertionError("the degree-K coefficients depend on the run's degree")

    rows = []
    for k in range(1, K + 1):
        rows.append(
            [k, float(c[k]), float(sums[k, -1]), float(err[k, -1]), float(np.max(np.abs(err[k])))]
        )
    table = markdown_table(
        ["degree k", "c_k", "series at t=1", "error at t=1", "max |error| over t"], rows
    )
    print(
        f"truth at t=1: {truth[-1]:.6f} (undeleted {truth[0]:.6f}, "
        f"change {truth[-1] - truth[0]:+.6f}); c_0 = {c[0]:.15f}"
    )
    print(table)

    plt = pyplot()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    tt = np.linspace(0, 1, 101)
    fine = partial_sums(c, tt)
    cmap = plt.get_cmap("viridis")
    for k in range(1, K + 1):
        ax.plot(tt, fine[k], color=cmap((k - 1) / max(K - 1, 1)), label=f"series, degree {k}")
    ax.plot(ts, truth, "ko", label="retraining")
    ax.set_xlabel("t (the x-names train with weight 1 - t)")
    ax.set_ylabel(f'test loss of "{TEST_DOC}"')
    ax.set_title(f"exact series along 1_D, |D| = {int(w.sum())}")
    ax.legend(fontsize=8)
    ks = np.arange(1, K + 1)
    ax2.semilogy(ks, np.abs(err[1:, -1]), "o-", label="|error| at t = 1")
    ax2.semilogy(ks, np.max(np.abs(err[1:]), axis=1), "s--", label="max |error| over t")
    kl = np.arange(1, extra_k + 1)
    ax2.semilogy(
        kl,
        np.abs(long_err[1:]),
        ".-",
        color="gray",
        alpha=0.7,
        label=f"|error| at t = 1, K = {extra_k} run",
    )
    ax2.semilogy(kl, np.abs(c_long[1:]), "^:", label="|c_k|")
    ax2.set_xlabel("degree k")
    ax2.set_title("truncation error against retraining")
    ax2.legend(fontsize=8)
    fig_path = save_figure(fig, args, "paper_exact_series")

    result = {
        "setting": setting.describe(),
        "test_doc": TEST_DOC,
        "deleted": int(w.sum()),
        "K": K,
        "coefficients": c,
        "t": ts,
        "truth": truth,
        "partial_sums": sums,
        "error_at_t1": {str(k): float(err[k, -1]) for k in range(K + 1)},
        "max_abs_error": {str(k): float(np.max(np.abs(err[k]))) for k in range(K + 1)},
        "long_K": extra_k,
        "long_coefficients": c_long,
        "long_error_at_t1": long_err,
        "c0_minus_retrained_t0": float(c[0] - truth[0]),
        "table": table,
        "figure": str(fig_path),
        "seconds": {
            "series": t_series,
            "series_long": t_long,
            "retrain_11": t_truth,
            "wall": time.perf_counter() - t_start,
        },
    }
    write_result(args, "paper_exact_series", result)
    return result


if __name__ == "__main__":
    main()
