"""Ground truth: real (degree-0) compiled training with some documents down-weighted."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from runtime.spec import (
    TestInput,
    TrainingSpec,
    UserProgramSpec,
    as_test_input,
    check_test_docs,
    compiled,
)

__all__ = ["retrain"]


def retrain(
    spec: TrainingSpec | UserProgramSpec,
    weights: np.ndarray | None,
    test_docs: Sequence[str | TestInput],
) -> tuple[list[float], np.ndarray]:
    """Test losses of `test_docs` after training with data weights (1 = deleted).

    Test inputs are microgpt texts, or (user programs) TestInputs holding arrays.
    Returns (one loss per test input, per-step training losses).
    """
    tests = [as_test_input(t) for t in test_docs]
    if isinstance(spec, UserProgramSpec):
        from runtime.query import check_arrays

        if not tests:
            raise ValueError("give a test input with --test-npz FILE.npz or --test-index I")
        for t in tests:
            if not isinstance(t.value, dict):
                raise ValueError("a user program's test inputs are arrays, not texts")
            check_arrays(spec.program(), t)
    else:
        if any(not isinstance(t.value, str) for t in tests):
            raise ValueError("microgpt's test inputs are texts (--doc), not arrays")
        check_test_docs([t.value for t in tests])
    cp = compiled(spec, 0)
    state, losses = cp.train(weights)
    return [float(cp.output(state, t.value)) for t in tests], np.array(losses)
