"""The trained parameters' series along each document's own weight, stored beside a sketch.

The diagonal of the second-order estimator (``runtime.hessian``) runs one degree-2
series pass per DIAGONAL_GROUP documents, along their unit directions e_i: most of
what the second-order data cost.  What those passes produce, the parameters'
orders 1 and 2 along each e_i, does not depend on the test input; a test output's
c_1 = dF/dw_i and c_2 = H_ii / 2 follow from them by the output circuit alone.  So
they are stored (``SKETCH/unit_series``, a result of the sketch's training run, see
``runtime.derived``), a block of documents at a time as the passes finish:

* a later call with new test inputs runs no series pass, only their outputs;
* a call interrupted after some blocks resumes at the first block missing, with the
  same bits as one run without a stop (the passes do not depend on one another).

A block is (documents, 2, P) float64: the directions are real, so are the series
(a block whose series had an imaginary part would be stored complex).  The order-0
parameters every pass ends at are the sketch's own ``params0`` (checked, pass by pass).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from circuitsketch.program import Program
from runtime.hessian import DIAGONAL_GROUP, diagonal_groups, diagonal_passes
from runtime.metagrad import run_results

__all__ = ["BLOCK_BYTES", "BLOCK_PASSES", "STORE_DIR", "stored_diagonal"]

STORE_DIR = "unit_series"
BLOCK_PASSES = 8  # series passes per stored block: what an interrupted call can lose
BLOCK_BYTES = 64 << 20  # fewer passes when their block would be larger (one at least)


def _blocks(groups: list[np.ndarray], params: int) -> list[list[int]]:
    """The group indices of each stored block."""
    per_pass = DIAGONAL_GROUP * 2 * params * 8
    n = max(1, min(BLOCK_PASSES, BLOCK_BYTES // per_pass))
    return [list(range(a, min(a + n, len(groups)))) for a in range(0, len(groups), n)]


def _key(docs: np.ndarray) -> str:
    return f"unit series of documents {int(docs[0])}..{int(docs[-1])} ({len(docs)})"


def stored_diagonal(
    sketch,
    program: Program,
    tests: Sequence[Any],
    real,
    warn: Callable[[str], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(diag, grad), each (Q, N), as ``hessian.hessian_diagonal`` gives them (the same bits),
    from the unit series stored beside `sketch`; the blocks missing are computed (series
    passes of `program`, the sketch's training run, with its real-mode CompiledProgram
    `real`) and stored first."""
    from compiler.compiled import CompiledProgram, output_from_params, params_of
    from runtime import resources
    from runtime.query import OUTPUT_BATCH

    series = CompiledProgram(program, 2)
    p0 = sketch.params0()
    groups = diagonal_groups(program)
    store = run_results(sketch, STORE_DIR, "stored unit series", warn)
    blocks = _blocks(groups, p0.size)
    found: dict[int, np.ndarray] = {}
    for b, gs in enumerate(blocks):
        docs = np.concatenate([groups[g] for g in gs])
        hit = store.get(_key(docs), shape=(len(docs), 2, p0.size))
        if hit is not None and hit.meta.get("docs") == docs.tolist():
            found[b] = hit.array
    todo = [b for b in range(len(blocks)) if b not in found]
    if todo:
        per_doc = 2 * p0.size * 8
        left = sum(len(groups[g]) for b in todo for g in blocks[b])
        resources.require_disk(left * per_doc, sketch.path, "the second-order data's unit series",
                               "free disk space beside the sketch")
    diag = np.zeros((len(tests), program.num_docs))
    grad = np.zeros((len(tests), program.num_docs))

    def take(docs: np.ndarray, phi: np.ndarray) -> None:
        for a in range(0, len(docs), OUTPUT_BATCH):  # bounds the output's series memory
            part = phi[a : a + OUTPUT_BATCH].astype(np.complex128)
            for q, test in enumerate(tests):
                c = output_from_params(series, p0, part, test).real
                grad[q, docs[a : a + OUTPUT_BATCH]] = c[:, 1]
                diag[q, docs[a : a + OUTPUT_BATCH]] = 2.0 * c[:, 2]

    for b, phi in found.items():
        take(np.concatenate([groups[g] for g in blocks[b]]), phi)
    wanted = [g for b in todo for g in blocks[b]]
    ends = {blocks[b][-1]: b for b in todo}  # the last pass of each block to compute
    parts: list[np.ndarray] = []
    for g, docs, final, hi in diagonal_passes(program, real, series, wanted):
        fp0, phi = params_of(series, final, hi, len(docs))
        if not np.array_equal(fp0, p0):
            raise RuntimeError(
                f"the diagonal pass of documents {docs.tolist()} ended at other parameters "
                "than the sketch's params0: its training run is not the sketch's"
            )
        parts.append(phi if phi.imag.any() else phi.real)
        if g in ends:
            docs_b = np.concatenate([groups[i] for i in blocks[ends[g]]])
            arr = np.concatenate(parts) if len(parts) > 1 else parts[0]
            store.put(_key(docs_b), arr, {"docs": docs_b.tolist()})
            take(docs_b, arr)
            parts = []
    return diag, grad
