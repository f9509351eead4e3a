"""Experiment 4 (and issue #7): accuracy at scale, sketch vs hybrid vs exact first order.

Deletion-set families (seeded with ``SETS_SEED``): 100 random sets of each
size 1, 10 and 50, and the 26 sets "names containing letter L" (L = a..z).
For every set, the predicted change of the test loss of "max" from

* the shared M = 500, K = 3 sketch (``sketch K=3``) and its first order alone
  (``sketch K=1``, the first-order baseline),
* the hybrid: the exact first order <g, w> (metagradient, one reverse pass)
  plus the sketched orders 2..3 (``hybrid K=3``) or the sketched order 2 alone
  (``hybrid K=2``), with standard errors from the sketched orders only,
* the exact first order <g, w> alone (no error bar),

is compared with exact retraining: mean absolute error, the fraction of true
changes inside the 2-standard-error band, the Spearman rank correlation
between predicted and true changes over the sets of a family, and (sketch
rows) the fraction of sets the estimator calls reliable
(``runtime.estimate``'s rule).

    python -m examples.paper_accuracy [--quick]
"""

from __future__ import annotations

import string
import time
from collections.abc import Sequence

import numpy as np
from tqdm import tqdm

from examples.paper_common import (
    TEST_DOC,
    hybrid,
    make_setting,
    markdown_table,
    parse_args,
    pyplot,
    save_figure,
    shared_sketch,
    spearman,
    write_result,
)
from runtime.estimate import estimate
from runtime.metagrad import Metagradient

SETS_SEED = 1  # np.random.default_rng(SETS_SEED) draws the random deletion sets
FULL_SIZES, FULL_COUNT = (1, 10, 50), 100
QUICK_SIZES, QUICK_COUNT = (1, 3, 6), 5
ESTIMATORS = ("sketch K=1", "sketch K=3", "hybrid K=3", "hybrid K=2", "exact first order")


def families(docs: Sequence[str], sizes: Sequence[int], count: int) -> dict[str, np.ndarray]:
    """Family name -> (Q, N) 0/1 deletion weights."""
    n = len(docs)
    rng = np.random.default_rng(SETS_SEED)
    out = {}
    for size in sizes:
        w = np.zeros((count, n))
        for q in range(count):
            w[q, rng.choice(n, size, replace=False)] = 1.0
        out[f"random, |D| = {size}"] = w
    out["names containing letter L"] = np.array(
        [[float(letter in d) for d in docs] for letter in string.ascii_lowercase]
    )
    return out


def metrics(pred: np.ndarray, truth: np.ndarray, se: np.ndarray | None, reliable=None) -> dict:
    err = np.abs(pred - truth)
    return {
        "MAE": float(np.mean(err)),
        "median_abs_error": float(np.median(err)),
        "coverage_2se": None if se is None else float(np.mean(err <= 2 * se)),
        "spearman": spearman(pred, truth),
        "reliable": None if reliable is None else float(np.mean(reliable)),
    }


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(__doc__, argv)
    t_start = time.perf_counter()
    setting = make_setting(args.quick)
    sk = shared_sketch(setting, args.workers, args.out)
    coeffs, psi, K = sk.coeffs[TEST_DOC], sk.psi, sk.degree
    M = coeffs.shape[0]
    sizes, count = (QUICK_SIZES, QUICK_COUNT) if args.quick else (FULL_SIZES, FULL_COUNT)
    fams = families(setting.docs, sizes, count)

    t0 = time.perf_counter()
    g = Metagradient(setting.program)(TEST_DOC)
    t_meta = time.perf_counter() - t0
    base = float(setting.retrain(np.zeros(setting.n))[0])

    results, tables, points = {}, {}, {}
    t_truth = 0.0
    for name, W in fams.items():
        t0 = time.perf_counter()
        truth = (
            np.array([setting.retrain(w)[0] for w in tqdm(W, desc=f"retrain {name}", unit="set")])
            - base
        )
        t_truth += time.perf_counter() - t0
        preds, reliable = {}, {}
        for k in (1, K):
            e = estimate(coeffs, psi, W, degree=k)
            preds[f"sketch K={k}"] = (e.prediction - e.c0, e.stderr)
            reliable[f"sketch K={k}"] = e.reliable
        for k in range(K, 1, -1):
            preds[f"hybrid K={k}"] = hybrid(coeffs, psi, g, W, degree=k)
        preds["exact first order"] = (W @ g, None)
        rows = {est: metrics(p, truth, se, reliable.get(est)) for est, (p, se) in preds.items()}
        sizes_d = W.sum(axis=1)
        results[name] = {
            "sets": W.shape[0],
            "mean_size": float(sizes_d.mean()),
            "sizes": sizes_d,
            "mean_abs_true_change": float(np.mean(np.abs(truth))),
            "rows": rows,
            "truth": truth,
            "predictions": {est: p for est, (p, _) in preds.items()},
            "stderr": {est: se for est, (_, se) in preds.items() if se is not None},
        }
        tables[name] = markdown_table(
            ["estimator", "MAE", "median abs err", "coverage 2 s.e.", "Spearman", "reliable"],
            [
                [
                    est,
                    r["MAE"],
                    r["median_abs_error"],
                    r["coverage_2se"],
                    r["spearman"],
                    r["reliable"],
                ]
                for est, r in rows.items()
            ],
        )
        points[name] = (truth, preds)
        print(
            f"\n{name}: {W.shape[0]} sets, mean |D| = {sizes_d.mean():.1f}, "
            f"mean |true change| = {np.mean(np.abs(truth)):.4g}"
        )
        print(tables[name])

    letters = results["names containing letter L"]
    lp, ls = letters["predictions"], letters["stderr"]
    letter_table = markdown_table(
        [
            "letter",
            "|D|",
            "true change",
            "sketch K=1",
            "sketch K=3",
            "s.e. K=3",
            "hybrid K=2",
            "exact first order",
        ],
        [
            [
                L,
                int(letters["sizes"][i]),
                float(letters["truth"][i]),
                float(lp["sketch K=1"][i]),
                float(lp[f"sketch K={K}"][i]),
                float(ls[f"sketch K={K}"][i]),
                float(lp["hybrid K=2"][i]),
                float(lp["exact first order"][i]),
            ]
            for i, L in enumerate(string.ascii_lowercase)
        ],
    )
    print("\nper letter:")
    print(letter_table)

    plt = pyplot()
    ncol = 2
    nrow = -(-len(fams) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(5.2 * ncol, 4.6 * nrow), squeeze=False)
    axes = axes.ravel()
    styles = {
        "sketch K=1": ("tab:blue", "o"),
        "sketch K=3": ("tab:red", "s"),
        "hybrid K=3": ("tab:green", "^"),
        "hybrid K=2": ("tab:olive", "v"),
        "exact first order": ("k", "x"),
    }
    for ax, (name, (truth, preds)) in zip(axes, points.items(), strict=False):
        lo, hi = float(truth.min()), float(truth.max())
        pad = 0.15 * (hi - lo) + 1e-12
        for est, (p, _) in preds.items():
            col, mk = styles[est]
            ax.scatter(truth, p, s=14, color=col, marker=mk, alpha=0.6, label=est)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k-", lw=0.8, label="y = x")
        if name.startswith("names"):  # changes and errors span four decades
            ax.set_xscale("symlog", linthresh=1e-2)
            ax.set_yscale("symlog", linthresh=1e-2)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("true change of test loss")
        ax.set_ylabel("predicted change")
    for ax in axes[len(fams) :]:
        ax.set_visible(False)
    axes[0].legend(fontsize=8)
    fig.suptitle(f'predicted vs true change of the loss of "{TEST_DOC}" (M = {M}, K = {K})')
    fig_path = save_figure(fig, args, "paper_accuracy")

    result = {
        "setting": setting.describe(),
        "test_doc": TEST_DOC,
        "M": M,
        "K": K,
        "sets_seed": SETS_SEED,
        "base_loss": base,
        "c0": float(coeffs[0, 0].real),
        "c0_minus_retrained": float(coeffs[0, 0].real - base),
        "families": results,
        "tables": tables,
        "letter_table": letter_table,
        "figure": str(fig_path),
        "seconds": {
            "metagradient": t_meta,
            "retrain_all": t_truth,
            "sketch_this_call": sk.seconds,
            "wall": time.perf_counter() - t_start,
        },
    }
    write_result(args, "paper_accuracy", result)
    return result


if __name__ == "__main__":
    main()
