"""The second-order data of test inputs, computed once per sketch and stored beside it.

For each test input: the exact diagonal of H = d^2F/dw dw (``SKETCH/hessian``,
an (N,) array) and, when asked for with a rank k > 0, a rank-k approximation
of H for its off-diagonal part (``SKETCH/hessian_rank<k>``, U (N, k) and lam (k,)
as one (N + 1, k) array: U's rows, then lam).  Both are results derived from
the sketch's training run (``runtime.derived``): keyed by the test input,
dropped when what they came from changes.  How they are computed:
``runtime.hessian``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime.hessian import LowRank, hessian_diagonal, hessian_low_rank

__all__ = ["SecondOrder", "sketch_second_order"]

DIAGONAL_DIR = "hessian"


@dataclass
class SecondOrder:
    """One test input's second-order data and what it cost (seconds, and the time of one
    training run it is priced in)."""

    diag: np.ndarray  # (N,)
    low: LowRank | None  # for this test input alone (Q = 1)
    seconds: float
    train_seconds: float | None


def _store(sketch, kind: str, warn):
    files = sketch.manifest["files"]
    inputs = [n for n in ("docs.npy", "params0.npy", "init.npy", "schedule.npy") if n in files]
    return sketch.derived(kind, inputs, label="stored second-order data", warn=warn)


def _train_seconds(program) -> float:
    from compiler.compiled import CompiledProgram

    cp = CompiledProgram(program, 0)
    cp.train(stop=1)
    t0 = time.perf_counter()
    cp.train()
    return time.perf_counter() - t0


def sketch_second_order(
    sketch,
    tests: Sequence[Any],
    rank: int = 0,
    compute: bool = True,
    warn: Callable[[str], None] | None = None,
) -> dict[str, SecondOrder | None]:
    """key -> SecondOrder of each test input (TestInputs or texts); None where not stored and
    not `compute`d.  Computing is shared by the inputs still missing: one pass of diagonal
    runs and 2 * rank Hessian-vector products for all of them."""
    from runtime.query import check_tests
    from runtime.sources import sketch_source
    from runtime.spec import build_program

    items = check_tests(sketch, tests)
    n = sketch.num_docs
    diag_store = _store(sketch, DIAGONAL_DIR, warn)
    low_store = _store(sketch, f"hessian_rank{rank}", warn) if rank else None
    out: dict[str, SecondOrder | None] = {}
    todo = []
    for t in items:
        hd = diag_store.get(t.key, shape=(n,), dtype=np.float64)
        hl = low_store.get(t.key, shape=(n + 1, rank), dtype=np.float64) if low_store else None
        if hd is None or (low_store is not None and hl is None):
            out[t.key] = None
            todo.append(t)
            continue
        low = None if hl is None else LowRank(hl.array[None, :n], hl.array[None, n])
        meta = hd.meta
        seconds = float(meta.get("seconds", np.nan)) + (float(hl.meta.get("seconds", 0.0))
                                                        if hl is not None else 0.0)
        out[t.key] = SecondOrder(hd.array, low, seconds, meta.get("train_seconds"))
    if not todo or not compute:
        return out
    program = build_program(sketch_source(sketch, full=True))
    values = [t.value for t in todo]
    t0 = time.perf_counter()
    diag, grad = hessian_diagonal(program, values)
    t_diag = time.perf_counter() - t0
    low = None
    t_low = 0.0
    if rank:
        t1 = time.perf_counter()
        low = hessian_low_rank(program, values, rank)
        t_low = time.perf_counter() - t1
    train = _train_seconds(program)
    per = len(todo)
    for q, t in enumerate(todo):
        meta = {"doc": t.key, "label": t.label, "seconds": t_diag / per, "train_seconds": train,
                "max_first_order": float(np.max(np.abs(grad[q])))}
        diag_store.put(t.key, diag[q], meta)
        mine = None
        if low is not None:
            arr = np.vstack([low.u[q], low.lam[q][None]])
            low_store.put(t.key, arr, {**meta, "seconds": t_low / per, "rank": rank})
            mine = LowRank(low.u[q][None], low.lam[q][None])
        out[t.key] = SecondOrder(diag[q], mine, (t_diag + t_low) / per, train)
    return out
