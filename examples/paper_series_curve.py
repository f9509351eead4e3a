"""Experiment 3: the predicted loss curve from random directions, against retraining.

The shared sketch (M = 500 Gaussian directions of seed 0, K = 3) predicts
F(t 1_D), the test loss of "max" with the x-names downweighted by t, for
t = 0, 0.1, ..., 1 at every degree k = 1..3 with one-standard-error bands,
and by median-of-means (9 groups); 11 real retrainings are the truth, and the
exact degree-3 Taylor polynomial along 1_D (one series run along 1_D itself)
shows what the random directions are estimating.

    python -m examples.paper_series_curve [--quick]
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
    shared_sketch,
    write_result,
)
from runtime.estimate import estimate


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(__doc__, argv)
    t_start = time.perf_counter()
    setting = make_setting(args.quick)
    sk = shared_sketch(setting, args.workers, args.out)
    coeffs, psi, K = sk.coeffs[TEST_DOC], sk.psi, sk.degree
    M = coeffs.shape[0]
    w = setting.letter_weights()
    ts = np.round(np.linspace(0.0, 1.0, 11), 10)
    W = ts[:, None] * w[None, :]

    t0 = time.perf_counter()
    truth = setting.retrain(W)
    t_truth = time.perf_counter() - t0
    taylor = exact_series(setting, w, K).real
    taylor_curve = np.array([np.polyval(taylor[::-1], t) for t in ts])

    per_degree = {}
    for k in range(0, K + 1):
        est = estimate(coeffs, psi, W, degree=k)
        per_degree[k] = est
    est = per_degree[K]
    rows = []
    for k in range(1, K + 1):
        e = per_degree[k]
        rows.append(
            [
                f"sketch, degree {k}",
                float(e.prediction[-1]),
                float(e.stderr[-1]),
                float(e.prediction[-1] - truth[-1]),
                float(np.max(np.abs(e.prediction - truth))),
            ]
        )
    rows.append(
        [
            f"median of means ({est.groups} groups), degree {K}",
            float(est.median_of_means[-1]),
            None,
            float(est.median_of_means[-1] - truth[-1]),
            float(np.max(np.abs(est.median_of_means - truth))),
        ]
    )
    rows.append(
        [
            f"exact Taylor polynomial, degree {K}",
            float(taylor_curve[-1]),
            None,
            float(taylor_curve[-1] - truth[-1]),
            float(np.max(np.abs(taylor_curve - truth))),
        ]
    )
    rows.append(["retraining (truth)", float(truth[-1]), None, 0.0, 0.0])
    table = markdown_table(
        ["estimator", "loss at t=1", "stderr", "error at t=1", "max |error| over t"], rows
    )
    print(
        f"M={M}, K={K}, |D|={int(w.sum())}: undeleted {truth[0]:.6f}, "
        f"c_0 = {per_degree[0].prediction[0]:.15f}"
    )
    print(table)

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"]
    for k in range(1, K + 1):
        e = per_degree[k]
        col = colors[(k - 1) % len(colors)]
        ax.plot(ts, e.prediction, "-", color=col, label=f"sketch degree {k} (± 1 s.e.)")
        ax.fill_between(ts, e.prediction - e.stderr, e.prediction + e.stderr, color=col, alpha=0.2)
    ax.plot(ts, est.median_of_means, "--", color="gray", label=f"median of means, degree {K}")
    ax.plot(ts, taylor_curve, ":", color="k", label=f"exact Taylor polynomial, degree {K}")
    ax.plot(ts, truth, "ko", label="retraining")
    ax.set_xlabel("t (deletion weights t * 1_D)")
    ax.set_ylabel(f'test loss of "{TEST_DOC}"')
    ax.set_title(f"prediction from M = {M} random directions, |D| = {int(w.sum())}")
    ax.legend(fontsize=8)
    fig_path = save_figure(fig, args, "paper_series_curve")

    result = {
        "setting": setting.describe(),
        "test_doc": TEST_DOC,
        "deleted": int(w.sum()),
        "M": M,
        "K": K,
        "t": ts,
        "truth": truth,
        "c0": float(per_degree[0].prediction[0]),
        "c0_minus_retrained_t0": float(per_degree[0].prediction[0] - truth[0]),
        "prediction": {str(k): per_degree[k].prediction for k in range(K + 1)},
        "stderr": {str(k): per_degree[k].stderr for k in range(1, K + 1)},
        "median_of_means": est.median_of_means,
        "groups": est.groups,
        "reliable_at_t1": bool(est.reliable[-1]),
        "exact_taylor_coefficients": taylor,
        "exact_taylor_curve": taylor_curve,
        "table": table,
        "figure": str(fig_path),
        "seconds": {
            "sketch_this_call": sk.seconds,
            "retrain_11": t_truth,
            "wall": time.perf_counter() - t_start,
        },
    }
    write_result(args, "paper_series_curve", result)
    return result


if __name__ == "__main__":
    main()
