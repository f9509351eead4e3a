"""The demo's picture: the prediction by series degree against the retrained truth.

One panel: the test loss predicted with the Taylor terms up to degree r
(r = 0 is the undeleted loss c_0), each with an error bar of 1 standard error,
and the loss after retraining without the names as a horizontal line: a
reader sees the series approach the truth.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["plot_demo"]


def plot_demo(
    path: str | Path, pred: dict[str, Any], truth: float, test: str, n_deleted: int, letter: str
) -> None:
    """Draw the picture into `path` (PNG), written atomically."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from runtime.files import atomic_write_bytes

    terms = np.asarray(pred["terms"], float)
    errs = np.asarray(pred["stderr"]["terms"], float)
    by_degree = pred["c0"] + np.concatenate([[0.0], np.cumsum(terms)])
    # partial sums: the terms' standard errors added in quadrature (a picture's
    # approximation); the last point carries the estimator's own total error bar
    bars = np.sqrt(np.concatenate([[0.0], np.cumsum(errs**2)]))
    bars[-1] = pred["stderr"]["total"]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    r = np.arange(len(by_degree))
    ax.errorbar(r, by_degree, yerr=bars, fmt="o-", capsize=4, label="sketch: terms up to r")
    ax.axhline(truth, color="k", ls="--", label="retrained without them")
    ax.axhline(pred["c0"], color="0.6", ls=":", label="trained on all names")
    ax.set_xticks(r)
    ax.set_xlabel("degree r of the Taylor prediction")
    ax.set_ylabel(f"test loss of {test!r}")
    ax.set_title(f"deleting the {n_deleted} names containing {letter!r}")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())
