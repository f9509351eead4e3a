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

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime import parallel
from runtime.hessian import DIAGONAL_GROUP, diagonal_groups, diagonal_passes
from runtime.metagrad import run_results
from runtime.sources import ProgramSource

__all__ = ["BLOCK_BYTES", "BLOCK_PASSES", "STORE_DIR", "UnitBlockJob", "stored_diagonal",
           "unit_block_job"]

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


@dataclass
class UnitBlockJob:
    """The series passes of `groups` (documents of each, ``hessian.diagonal_groups``) of the
    training run of `source`, whose passes must end at the parameters `p0`; `docs`: their
    documents in order (the block's rows)."""

    source: ProgramSource
    groups: list[np.ndarray]
    docs: np.ndarray
    p0: np.ndarray


def unit_block_job(job: UnitBlockJob) -> tuple[np.ndarray, float]:
    """(documents, 2, P): orders 1 and 2 of the parameters along each unit direction of the
    job's groups, in their order (real unless a series had an imaginary part), and the
    seconds it took (runs in a worker process).  Its passes start from the undeleted run's
    state at their first step, trained here from the start."""
    from compiler.compiled import params_of
    from runtime.spec import compiled

    t0 = time.perf_counter()
    real, series = compiled(job.source, 0), compiled(job.source, 2)
    parts = []
    for docs, final, hi in diagonal_passes(real.program, real, series, job.groups):
        fp0, phi = params_of(series, final, hi, len(docs))
        if not np.array_equal(fp0, job.p0):
            raise RuntimeError(
                f"the diagonal pass of documents {docs.tolist()} ended at other parameters "
                "than the sketch's params0: its training run is not the sketch's"
            )
        parts.append(phi)
    phi = np.concatenate(parts) if len(parts) > 1 else parts[0]
    return (phi if phi.imag.any() else phi.real), time.perf_counter() - t0


def stored_diagonal(
    sketch,
    source: ProgramSource,
    tests: Sequence[Any],
    warn: Callable[[str], None] | None = None,
    workers: int = 1,
    scheduler: str | None = None,
    progress: bool | None = False,
    subset: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """(diag, grad), each (Q, N), as ``hessian.hessian_diagonal`` gives them (the same bits),
    of the documents `subset` only if given (zero elsewhere),
    from the unit series stored beside `sketch`; the blocks missing are computed first (the
    series passes of `source`, the sketch's training run; a block a task, on `workers` local
    processes or a Dask `scheduler`) and stored as each arrives.  Third: the seconds the
    call took as one process would take them (its own, and each task's own in its worker),
    so that its cost does not depend on the workers.  `progress`: a bar over the documents
    (None: when stderr is a terminal)."""
    from compiler.compiled import output_from_params
    from runtime import resources
    from runtime.precompute import progress_bar
    from runtime.query import OUTPUT_BATCH
    from runtime.spec import compiled

    t_start = time.perf_counter()
    series = compiled(source, 2)
    program = series.program
    p0 = sketch.params0()
    groups = diagonal_groups(program, subset)
    store = run_results(sketch, STORE_DIR, "stored unit series", warn)
    jobs = []
    diag = np.zeros((len(tests), program.num_docs))
    grad = np.zeros((len(tests), program.num_docs))

    def take(docs: np.ndarray, phi: np.ndarray) -> None:
        for a in range(0, len(docs), OUTPUT_BATCH):  # bounds the output's series memory
            part = phi[a : a + OUTPUT_BATCH].astype(np.complex128)
            for q, test in enumerate(tests):
                c = output_from_params(series, p0, part, test).real
                grad[q, docs[a : a + OUTPUT_BATCH]] = c[:, 1]
                diag[q, docs[a : a + OUTPUT_BATCH]] = 2.0 * c[:, 2]

    for gs in _blocks(groups, p0.size):
        docs = np.concatenate([groups[g] for g in gs])
        hit = store.get(_key(docs), shape=(len(docs), 2, p0.size))
        if hit is not None and hit.meta.get("docs") == docs.tolist():
            take(docs, hit.array)
        else:
            jobs.append(UnitBlockJob(source, [groups[g] for g in gs], docs, p0))
    if jobs:
        left = sum(len(j.docs) for j in jobs) * 2 * p0.size * 8
        resources.require_disk(left, sketch.path, "the second-order data's unit series",
                               "free disk space beside the sketch")

    done = 0.0  # seconds of the tasks, and of storing and taking their results here
    total = sum(len(g) for g in groups)
    bar = progress_bar(total, total - sum(len(j.docs) for j in jobs), progress, unit="doc",
                       desc="diagonal series") if jobs else None

    def arrived(job: UnitBlockJob, result: tuple[np.ndarray, float]) -> None:
        nonlocal done
        t = time.perf_counter()
        phi, seconds = result
        store.put(_key(job.docs), phi, {"docs": job.docs.tolist()})
        take(job.docs, phi)
        done += seconds + time.perf_counter() - t
        if bar is not None:
            bar.update(len(job.docs))

    t_pool = time.perf_counter()
    try:
        parallel.run_tasks(
            unit_block_job, jobs, arrived, workers=workers,
            scheduler=scheduler,
            # forked workers start with the real and series code loaded here first
            prepare=(lambda: compiled(source, 0).train(stop=1)) if parallel.forks() else None,
        )  # fmt: skip
    finally:
        if bar is not None:
            bar.close()
    pool = time.perf_counter() - t_pool
    return diag, grad, time.perf_counter() - t_start - pool + done
