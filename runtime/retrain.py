"""Ground truth: real (degree-0) compiled training with some documents down-weighted."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from runtime.spec import TrainingSpec, check_test_docs, compiled

__all__ = ["retrain"]


def retrain(
    spec: TrainingSpec, weights: np.ndarray | None, test_docs: Sequence[str]
) -> tuple[list[float], np.ndarray]:
    """Test losses of `test_docs` after training with data weights (1 = deleted).

    Returns (one loss per test doc, per-step training losses).
    """
    check_test_docs(test_docs)
    cp = compiled(spec, 0)
    state, losses = cp.train(weights)
    return [float(cp.output(state, d)) for d in test_docs], np.array(losses)
