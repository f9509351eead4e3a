"""Experiment 5: error of the D_x prediction against the number of directions M.

The 500 directions of the shared K = 3 sketch are cut into disjoint blocks of
M = 10, 30, 100, 300, 500 consecutive directions (50, 16, 5, 1, 1 blocks); each
block is one independent sketch ("seed").  For each, the degree-1 and degree-3
predictions of the test loss of "max" after deleting the x-names are compared
with retraining (total error) and with the exact Taylor polynomial of the same
degree along 1_D (Monte Carlo error alone, which should fall like 1/sqrt(M)).

    python -m examples.paper_error_vs_m [--quick]
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

FULL_MS = (10, 30, 100, 300, 500)
QUICK_MS = (2, 4, 8)


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(__doc__, argv)
    t_start = time.perf_counter()
    setting = make_setting(args.quick)
    sk = shared_sketch(setting, args.workers, args.out)
    coeffs, psi, K = sk.coeffs[TEST_DOC], sk.psi, sk.degree
    w = setting.letter_weights()
    truth = float(setting.retrain(w)[0])
    taylor = exact_series(setting, w, K).real
    degrees = (1, K)
    taylor_at_1 = {k: float(taylor[: k + 1].sum()) for k in degrees}

    ms = [m for m in (QUICK_MS if args.quick else FULL_MS) if m <= coeffs.shape[0]]
    per_m = {}
    rows = []
    for m in ms:
        blocks = coeffs.shape[0] // m
        entry = {"blocks": blocks}
        for k in degrees:
            preds, ses = [], []
            for b in range(blocks):
                sl = slice(b * m, (b + 1) * m)
                e = estimate(coeffs[sl], psi[sl], w, degree=k)
                preds.append(float(e.prediction[0]))
                ses.append(float(e.stderr[0]))
            preds_a = np.array(preds)
            err_truth = preds_a - truth
            err_mc = preds_a - taylor_at_1[k]
            entry[str(k)] = {
                "predictions": preds_a,
                "stderr": np.array(ses),
                "rms_error_vs_retraining": float(np.sqrt(np.mean(err_truth**2))),
                "rms_error_vs_taylor": float(np.sqrt(np.mean(err_mc**2))),
                "mean_stderr": float(np.mean(ses)),
            }
            rows.append(
                [
                    m,
                    blocks,
                    k,
                    entry[str(k)]["rms_error_vs_retraining"],
                    entry[str(k)]["rms_error_vs_taylor"],
                    entry[str(k)]["mean_stderr"],
                ]
            )
        per_m[str(m)] = entry
    table = markdown_table(
        [
            "M",
            "blocks",
            "degree",
            "RMS error vs retraining",
            "RMS error vs exact Taylor",
            "mean reported s.e.",
        ],
        rows,
    )
    print(
        f"|D| = {int(w.sum())}: retrained {truth:.6f}; exact Taylor polynomial "
        + ", ".join(f"degree {k}: {v:.6f}" for k, v in taylor_at_1.items())
    )
    print(table)

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    ma = np.array(ms, float)
    for k, col in zip(degrees, ("tab:blue", "tab:red"), strict=True):
        vt = [per_m[str(m)][str(k)]["rms_error_vs_retraining"] for m in ms]
        vm = [per_m[str(m)][str(k)]["rms_error_vs_taylor"] for m in ms]
        se = [per_m[str(m)][str(k)]["mean_stderr"] for m in ms]
        ax.loglog(ma, vt, "o-", color=col, label=f"degree {k}: vs retraining")
        ax.loglog(ma, vm, "s--", color=col, alpha=0.7, label=f"degree {k}: vs exact Taylor")
        ax.loglog(ma, se, "-.", color=col, alpha=0.5, label=f"degree {k}: mean reported s.e.")
        ax.axhline(
            abs(taylor_at_1[k] - truth),
            color=col,
            lw=0.8,
            ls=":",
            label=f"degree {k}: truncation error (M = inf)",
        )
    ref0 = per_m[str(ms[0])][str(K)]["rms_error_vs_taylor"]
    ax.loglog(ma, ref0 * np.sqrt(ma[0] / ma), "k-", lw=0.8, label="1/sqrt(M)")
    for m in ms:
        if per_m[str(m)]["blocks"] == 1:
            ax.axvline(m, color="gray", lw=0.5, alpha=0.5)
    ax.set_xlabel("M (directions; gray lines: a single block, one error sample)")
    ax.set_ylabel("RMS error of the predicted loss")
    ax.set_title(f'deleting the x-names (|D| = {int(w.sum())}), test "{TEST_DOC}"')
    ax.legend(fontsize=7)
    fig_path = save_figure(fig, args, "paper_error_vs_m")

    result = {
        "setting": setting.describe(),
        "test_doc": TEST_DOC,
        "deleted": int(w.sum()),
        "K": K,
        "truth": truth,
        "exact_taylor_coefficients": taylor,
        "exact_taylor_at_1": {str(k): v for k, v in taylor_at_1.items()},
        "per_M": per_m,
        "table": table,
        "figure": str(fig_path),
        "seconds": {"sketch_this_call": sk.seconds, "wall": time.perf_counter() - t_start},
    }
    write_result(args, "paper_error_vs_m", result)
    return result


if __name__ == "__main__":
    main()
