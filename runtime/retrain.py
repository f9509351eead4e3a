"""Ground truth: real (degree-0) compiled training with some documents down-weighted."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from runtime.sources import ProgramSource, TestInput
from runtime.spec import compiled

__all__ = ["retrain"]


def retrain(
    source: ProgramSource,
    weights: np.ndarray | None,
    test_docs: Sequence[str | TestInput],
) -> tuple[list[float], np.ndarray]:
    """Test losses of `test_docs` after training with data weights (1 = deleted).

    Test inputs are what the source takes (microgpt texts, or a user
    program's TestInputs holding arrays); it checks them first.
    Returns (one loss per test input, per-step training losses).
    """
    tests = source.check_tests(test_docs)
    cp = compiled(source, 0)
    state, losses = cp.train(weights)
    return [float(cp.output(state, t.value)) for t in tests], np.array(losses)
