"""Experiment 1: stability of the series, log2(sqrt(binom(N+r-1, r)) |c_r|) against r.

12 Gaussian directions (seed 0, the first 12 of the shared sketch) at degree
K = 30, test document a random training name (``np.random.default_rng(1)``
picks its index among the N training documents; "max" is shown beside it).
A curve that falls with r means the r-th term of the estimator shrinks
geometrically for deletion sets of comparable size, which is what makes
the truncated series usable.

Why K = 30: series training costs ~0.06-0.07 s per step per direction at
K = 30 on this 2-core machine (it grows ~K^2), so 12 directions x 1000 steps
is ~12-14 CPU-minutes, ~6-10 minutes on 2 processes when other jobs share the
cores.  K = 40 measured 0.11-0.14 s per step per direction (~25 CPU-minutes,
over the budget on a shared machine) and K = 100 ~1 s (~3.3 CPU-hours).

    python -m examples.paper_stability [--quick] [--degree K]
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from examples.paper_common import (
    TEST_DOC,
    make_setting,
    markdown_table,
    parse_args,
    pyplot,
    save_figure,
    sketch,
    write_result,
)
from runtime.estimate import stability

FULL_K, FULL_M, FULL_BATCH = 30, 12, 3
QUICK_K, QUICK_M, QUICK_BATCH = 3, 4, 2
TEST_SEED = 1  # np.random.default_rng(TEST_SEED).integers(N) picks the test training name


def summary(vals: np.ndarray) -> dict:
    """Trend of the per-direction curves over r = 1..K (r = 0 is the loss itself)."""
    r = np.arange(vals.shape[1])
    mean = vals.mean(axis=0)
    slope = float(np.polyfit(r[1:], mean[1:], 1)[0]) if vals.shape[1] > 2 else float("nan")
    return {
        "mean_curve": mean,
        "slope_per_order": slope,
        "mean_at_r1": float(mean[1]),
        "mean_at_rK": float(mean[-1]),
        "max_over_r_ge_1": float(vals[:, 1:].max()),
        "directions_falling": int(np.sum(vals[:, -1] < vals[:, 1])),
        "directions": int(vals.shape[0]),
    }


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(__doc__, argv, lambda ap: ap.add_argument("--degree", type=int))
    t_start = time.perf_counter()
    setting = make_setting(args.quick)
    K, M, batch = (QUICK_K, QUICK_M, QUICK_BATCH) if args.quick else (FULL_K, FULL_M, FULL_BATCH)
    K = args.degree or K
    test = setting.docs[int(np.random.default_rng(TEST_SEED).integers(setting.n))]
    tests = (test, TEST_DOC) if test != TEST_DOC else (test,)
    sk = sketch(
        setting, K, M, tests, batch=batch, workers=args.workers, out=args.out, name="stability"
    )
    per_test, tables = {}, {}
    for t in tests:
        vals, _ = stability(sk.coeffs[t], setting.n)
        s = summary(vals)
        per_test[t] = {"values": vals, **s}
        tables[t] = markdown_table(
            [
                "test doc",
                "mean at r=1",
                f"mean at r={K}",
                "slope per order (bits)",
                "max over r>=1",
                f"directions with r={K} below r=1",
            ],
            [
                [
                    t,
                    s["mean_at_r1"],
                    s["mean_at_rK"],
                    s["slope_per_order"],
                    s["max_over_r_ge_1"],
                    f"{s['directions_falling']}/{s['directions']}",
                ]
            ],
        )
        print(tables[t])
    step_dir = [dt / (batch * setting.steps) for dt in sk.chunk_seconds]

    plt = pyplot()
    fig, axes = plt.subplots(1, len(tests), figsize=(6 * len(tests), 4.3), squeeze=False)
    r = np.arange(K + 1)
    for ax, t in zip(axes[0], tests, strict=True):
        vals = per_test[t]["values"]
        for j in range(vals.shape[0]):
            ax.plot(r, vals[j], "-", lw=0.9, alpha=0.8)
        ax.plot(r, vals.mean(axis=0), "k--", lw=2, label="mean over directions")
        ax.set_xlabel("order r")
        ax.set_ylabel("log2(sqrt(binom(N+r-1, r)) |c_r|)")
        kind = "random training name" if t == test else "held-out test name"
        ax.set_title(f'"{t}" ({kind}), {vals.shape[0]} directions, K = {K}')
        ax.legend(fontsize=8)
    fig_path = save_figure(fig, args, "paper_stability")

    result = {
        "setting": setting.describe(),
        "K": K,
        "M": M,
        "test_doc": test,
        "test_seed": TEST_SEED,
        "per_test": per_test,
        "tables": tables,
        "figure": str(fig_path),
        "seconds_per_step_per_direction": step_dir,
        "seconds": {"sketch_this_call": sk.seconds, "wall": time.perf_counter() - t_start},
    }
    write_result(args, "paper_stability", result)
    return result


if __name__ == "__main__":
    main()
