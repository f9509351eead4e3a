"""The figure of ``evaluate``: prediction against truth per estimator and size; LDS against size.

One row of scatter plots per estimator (a column per set size, one colour
per test input, the diagonal y = x), drawn as changes from the undeleted
output c_0 so that test inputs of different losses share the axes; and a
last panel with each estimator's LDS against the set size (log scale) with
its bootstrap interval.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["plot_evaluation"]


def plot_evaluation(
    path: str | Path,
    report: dict[str, Any],
    predictions: dict[str, np.ndarray],
    truth: np.ndarray,
    sizes: np.ndarray,
    c0: np.ndarray,
) -> None:
    """Draw the figure into `path` (PNG), written atomically."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from runtime.store import atomic_write_bytes

    names = list(predictions)
    size_list = report["sets"]["sizes"]
    rows, cols = len(names) + 1, max(len(size_list), 1)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
    tests = report["tests"]
    for i, name in enumerate(names):
        for j, z in enumerate(size_list):
            ax = axes[i, j]
            sel = sizes == z
            p, t = predictions[name][sel] - c0, truth[sel] - c0
            for d in range(t.shape[1]):
                ax.scatter(
                    t[:, d],
                    p[:, d],
                    s=8,
                    alpha=0.7,
                    color=f"C{d % 10}",
                    label=tests[d] if i == 0 and j == 0 else None,
                )
            finite = np.concatenate([t.ravel(), p[np.isfinite(p)].ravel()])
            if finite.size:
                lo, hi = float(finite.min()), float(finite.max())
                ax.plot([lo, hi], [lo, hi], color="0.5", lw=0.8)
            s = report["estimators"][name]["by_size"][str(z)]
            lds = "n/a" if s["lds"] is None else f"{s['lds']:.2f}"
            ax.set_title(f"{name}, |D| = {z}: LDS {lds}", fontsize=9)
            if j == 0:
                ax.set_ylabel("predicted change")
            if i == len(names) - 1:
                ax.set_xlabel("change on retraining")
    if tests and len(tests) <= 10:
        axes[0, 0].legend(fontsize=7, loc="best")
    ax = axes[-1, 0]
    for k, name in enumerate(names):
        by = report["estimators"][name]["by_size"]
        zs = [z for z in size_list if by[str(z)]["lds"] is not None]
        if not zs:
            continue
        y = np.array([by[str(z)]["lds"] for z in zs])
        ci = np.array([[np.nan if v is None else v for v in by[str(z)]["lds_ci"]] for z in zs])
        err = np.abs(np.stack([y - ci[:, 0], ci[:, 1] - y]))
        ax.errorbar(
            zs, y, yerr=np.nan_to_num(err), marker="o", capsize=3, label=name, color=f"C{k % 10}"
        )
    ax.set_xscale("log")
    ax.set_xlabel("deletion set size |D|")
    ax.set_ylabel("LDS (Spearman, mean over tests)")
    ax.axhline(0.0, color="0.7", lw=0.8)
    ax.legend(fontsize=7)
    for j in range(1, cols):
        axes[-1, j].axis("off")
    fig.suptitle(
        f"N = {report['num_docs']}, T = {report['steps']}, K = {report['degree']}, "
        f"M = {report['directions']}",
        fontsize=10,
    )
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
