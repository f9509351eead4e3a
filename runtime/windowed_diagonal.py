"""A cheaper diagonal for the second-order estimator: series passes a window long.

H_ii = d^2F/dw_i^2.  The exact diagonal (``runtime.hessian``) runs a degree-2 series
pass along e_i from document i's first step to the end of training: about four
training runs per document, too many for large corpora.  Most of H_ii is made near
the steps that train on i: the step's own second derivative in its weight (Adam's
moments are quadratic in it) and what the next steps make of the first-order change.
So here each pass along e_i stops `window` steps after its documents' steps, and the
order-2 change of the state it stops at is carried to the output to first order, by
the reverse sweep's cotangent of that state (``runtime.sweep``, bounded memory; a
pass that reaches the end of training takes the output's own series, exactly):

    H_ii ~ sum over the passes p holding i of  2 <c_2(p, i), xbar(stop_p)>

The same passes' order 1 is dF/dw_i exactly, checked against the sweep's own g.
Ranges of the passes are tasks for ``runtime.parallel``, each with a sweep of its own
(a few training runs, against the passes' hundreds at scale).  What the windows leave
out (the curvature after them) is replaced by its (trimmed) mean over a seeded sample
of documents whose exact diagonal is computed (``runtime.unit_series``), which keep
their exact values.  Measured against the exact diagonal and retraining:
examples/RESULTS.md, "A cheaper diagonal".
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from circuitsketch.program import Program
from runtime.files import SketchError
from runtime.hessian import DIAGONAL_GROUP

if TYPE_CHECKING:
    from compiler.compiled import CompiledProgram
    from runtime.sweep import SweepPoint

__all__ = ["CHECKPOINT_SECONDS", "DEFAULT_SAMPLE", "DEFAULT_WINDOW", "SAVE_SHARE", "STORE_DIR",
           "Checkpoints", "WindowJob", "WindowPass", "WindowState", "check_first_order",
           "corrected", "discard_checkpoints", "missed", "parts", "run_windows", "sample_docs",
           "task_parts", "trained_docs",
           "window_job", "window_passes", "window_terms", "windowed_diagonal"]

DEFAULT_WINDOW = 8  # steps each pass runs past its documents' last step
DEFAULT_SAMPLE = 64  # documents whose exact diagonal sets the mean of what windows miss


@dataclass(frozen=True)
class WindowPass:
    """A degree-2 series pass along the unit directions of `docs` over steps [start, stop)."""

    start: int
    stop: int
    docs: np.ndarray


def window_passes(program: Program, window: int) -> list[WindowPass]:
    """The passes: the training steps' documents in order, at most DIAGONAL_GROUP distinct
    ones a pass, each pass stopping `window` steps after its last step, or earlier, before
    the next visit of one of its documents (which belongs to a later pass), and starting
    after their earlier visits: every visit is in exactly one pass."""
    if window < 1:
        raise ValueError(f"window: {window} steps; it must be at least 1")
    T = program.num_steps
    visits: dict[int, list[int]] = {}
    for s, step in enumerate(program.steps):
        for d in step.docs:
            visits.setdefault(int(d), []).append(s)
    passes, docs, start, last = [], [], 0, 0

    def close() -> None:
        stop = min(T, last + 1 + window)
        for d in docs:
            later = [v for v in visits[d] if v > last]
            stop = min(stop, later[0]) if later else stop
        passes.append(WindowPass(start, stop, np.array(docs, np.int64)))

    for s, step in enumerate(program.steps):
        for d in map(int, step.docs):
            if d not in docs:
                earlier = [v for v in visits[d] if v < s]
                if len(docs) == DIAGONAL_GROUP or (docs and earlier and earlier[-1] >= start):
                    close()  # full, or d's last visit, another pass's, is in this one's range
                    docs = []
                if not docs:
                    start = s
                docs.append(d)
            last = s  # a visit of a document the pass holds already is the pass's too
    if docs:
        close()
    return passes


def windowed_diagonal(
    program: Program,
    tests: Sequence[Any],
    window: int = DEFAULT_WINDOW,
    real: CompiledProgram | None = None,
    series: CompiledProgram | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(diag, grad), each (Q, N): the windowed H_ii and dF/dw_i of every test input, from
    one reverse sweep (``runtime.metagrad.Metagradient``) that runs the window passes
    as it reaches their first steps.  grad is the exact first order (the sweep's own g,
    which the passes' order 1 must reproduce)."""
    diag, order1, grad = window_terms(program, tests, window, real, series)
    check_first_order(order1, grad)
    return diag, grad


@dataclass
class WindowState:
    """Where a task of window passes stands, its sweep reversed down to step ``point.a``:
    its sums so far and the cotangents kept for the passes still to run.  A task stores it
    as it goes (``Checkpoints``) and resumes from it with the same bits."""

    point: SweepPoint
    diag: np.ndarray  # (Q, N)
    order1: np.ndarray  # (Q, N)
    saved: dict[int, np.ndarray]  # stop step -> (Q, S) cotangents of x_stop

    def pack(self) -> tuple[np.ndarray, dict[str, Any]]:
        """One float64 array and its layout."""
        steps = sorted(self.saved)
        p = self.point
        arrays = [p.cotangents, p.g, p.final, self.diag, self.order1,
                  *(self.saved[t] for t in steps)]
        return np.concatenate([np.ravel(x) for x in arrays]), {"a": p.a, "saved": steps}

    @staticmethod
    def unpack(arr: np.ndarray, layout: dict[str, Any], q: int, n: int, s: int) -> WindowState:
        """The state `pack` gave (q tests, n documents, a state of s entries)."""
        sizes = [q * s, q * n, s, q * n, q * n] + [q * s] * len(layout["saved"])
        if arr.ndim != 1 or arr.size != sum(sizes):
            raise ValueError(f"a window task's stored state holds {arr.size} values, "
                             f"expected {sum(sizes)}")
        from runtime.sweep import SweepPoint

        cts, g, final, diag, order1, *kept = np.split(arr, np.cumsum(sizes)[:-1])
        point = SweepPoint(int(layout["a"]), cts.reshape(q, s), g.reshape(q, n), final)
        saved = {int(t): c.reshape(q, s) for t, c in zip(layout["saved"], kept, strict=True)}
        return WindowState(point, diag.reshape(q, n), order1.reshape(q, n), saved)


def window_terms(
    program: Program,
    tests: Sequence[Any],
    window: int,
    real: CompiledProgram | None = None,
    series: CompiledProgram | None = None,
    part: tuple[int, int] | None = None,
    resume: WindowState | None = None,
    save: Callable[[WindowState], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(diag, order1, grad), each (Q, N): what the passes `part` = [i, j) of
    ``window_passes`` (default: all) add to the diagonal and to the first order, and
    the sweep's g.  `save` is shown the task's state after each leaf of the sweep (the
    last one: done); `resume` goes on from one."""
    from compiler.compiled import CompiledProgram, hi_block
    from runtime.metagrad import Metagradient
    from runtime.sweep import Observer

    if resume is not None and resume.point.a == 0:
        return resume.diag, resume.order1, resume.point.g
    real = real if real is not None else CompiledProgram(program, 0)
    series = series if series is not None else CompiledProgram(program, 2)
    passes = window_passes(program, window)
    passes = passes if part is None else passes[part[0] : part[1]]
    starts = np.array([p.start for p in passes], np.int64)
    T = program.num_steps
    below = T if resume is None else resume.point.a  # the passes from there on have run
    stops = np.array(sorted({p.stop for p in passes if p.stop < T}), np.int64)
    uses = {int(s): 0 for s in stops}  # the passes still to come that stop there
    for p in passes:
        if p.stop < T and p.start < below:
            uses[p.stop] += 1
    N, S = program.num_docs, real.state_size
    if resume is None:
        saved: dict[int, np.ndarray] = {}
        diag = np.zeros((len(tests), N))
        order1 = np.zeros((len(tests), N))
    else:
        saved, diag, order1 = dict(resume.saved), resume.diag.copy(), resume.order1.copy()

    def keep(a: int, b: int) -> np.ndarray:
        return stops[(stops > a) & (stops <= b)]

    def seen(a: int, b: int, state, cots: dict[int, np.ndarray]) -> None:
        saved.update(cots)
        for k in np.flatnonzero((starts >= a) & (starts < b)):
            p = passes[k]
            psi = np.zeros((len(p.docs), N), np.complex128)
            psi[np.arange(len(p.docs)), p.docs] = 1.0
            final, hi, _ = series.train_series(psi, state=state(p.start), start=p.start,
                                               stop=p.stop)
            if p.stop == T:  # the output's own series: exact, with its curvature
                for q, test in enumerate(tests):
                    c = series.output(final, test, hi).real
                    order1[q, p.docs] += c[:, 1]
                    diag[q, p.docs] += 2.0 * c[:, 2]
                continue
            c = np.zeros((len(p.docs), 2, S))
            for off, n in real.state_layout.values():
                c[:, :, off : off + n] = hi_block(hi, len(p.docs), 2, off, n).real
            xbar = saved[p.stop]
            order1[:, p.docs] += xbar @ c[:, 0].T
            diag[:, p.docs] += 2.0 * (xbar @ c[:, 1].T)
            uses[p.stop] -= 1
            if not uses[p.stop]:
                del saved[p.stop]

    def reached(point: SweepPoint) -> None:
        if save is not None:
            save(WindowState(point, diag, order1, saved))

    grad = Metagradient(program, forward=real).many(
        list(tests), observe=Observer(keep, seen, reached),
        resume=None if resume is None else resume.point)
    return diag, order1, grad


def check_first_order(order1: np.ndarray, grad: np.ndarray) -> None:
    """Refuse passes whose first order is not the metagradient: a visit left out or
    counted twice, or passes of another run."""
    scale = max(float(np.max(np.abs(grad))), 1e-300)
    if np.max(np.abs(order1 - grad)) > 1e-8 * scale:
        raise RuntimeError(
            "the window passes' first order differs from the metagradient by "
            f"{np.max(np.abs(order1 - grad)):.3g}: passes and sweep do not see the same run"
        )


def parts(passes: list[WindowPass], n: int) -> list[tuple[int, int]]:
    """[i, j) ranges of `passes` for `n` tasks, of about equal series steps each."""
    steps = np.cumsum([p.stop - p.start for p in passes])
    if not len(steps):
        return []
    cuts = np.searchsorted(steps, steps[-1] * np.arange(1, n) / n, side="right")
    bounds = [0, *sorted(set(cuts.tolist()) - {0, len(passes)}), len(passes)]
    return list(itertools.pairwise(bounds))


CHECKPOINT_SECONDS = 60.0  # a window task stores its state at most this often
SAVE_SHARE = 50  # and waits at least this many times what storing it took


@dataclass
class Checkpoints:
    """Where window tasks store their states as they go: beside the sketch at `path`
    (``runtime.derived``), under keys naming the test inputs (`tests_key`); a task stores
    at most every `every` seconds (and SAVE_SHARE times the last store's time: 2% of the
    task's), and when done."""

    path: str
    tests_key: str
    every: float | None = None  # None: CHECKPOINT_SECONDS

    def store(self):
        from runtime.metagrad import run_results
        from runtime.store import Sketch

        return run_results(Sketch.open(self.path), STORE_DIR, "window task's state")

    def key(self, window: int, part: tuple[int, int], passes: int) -> str:
        return (f"window passes {part[0]}..{part[1]} of {passes} (window {window}) for "
                f"test inputs {self.tests_key}")


STORE_DIR = "window_tasks"


@dataclass
class WindowJob:
    """The passes `part` of ``window_passes(window)`` of the training run of `source`, for
    `tests` (a task for ``runtime.parallel``: each runs its own sweep), its state stored
    as it goes if `checkpoints`."""

    source: Any  # runtime.sources.ProgramSource
    tests: list
    window: int
    part: tuple[int, int]
    passes: int  # of the whole windowed diagonal
    checkpoints: Checkpoints | None = None


def _stored_state(job: WindowJob, store, n: int, s: int) -> tuple[WindowState | None, float]:
    """The job's stored state, if any, and the seconds spent on it so far."""
    key = job.checkpoints.key(job.window, job.part, job.passes)
    hit = store.get(key, dtype=np.float64)
    if hit is None:
        return None, 0.0
    try:
        state = WindowState.unpack(hit.array, hit.meta, len(job.tests), n, s)
    except (KeyError, TypeError, ValueError) as e:
        store.warn(f"{key}: {e}; computing it again")
        return None, 0.0
    return state, float(hit.meta.get("seconds", 0.0))


def window_job(job: WindowJob) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """``window_terms`` of the job's passes, and the seconds they took (in a worker), the
    seconds of earlier runs of an interrupted task included."""
    from runtime.spec import compiled

    t0 = time.perf_counter()
    real, series = compiled(job.source, 0), compiled(job.source, 2)
    program = real.program
    resume, before, save = None, 0.0, None
    store = None
    if job.checkpoints is not None:
        with contextlib.suppress(SketchError, OSError):  # a worker that cannot reach it
            store = job.checkpoints.store()
    if store is not None:
        resume, before = _stored_state(job, store, program.num_docs, real.state_size)
        key = job.checkpoints.key(job.window, job.part, job.passes)
        last = time.perf_counter()

        every = CHECKPOINT_SECONDS if job.checkpoints.every is None else job.checkpoints.every
        wait = every

        def save(state: WindowState) -> None:
            nonlocal last, wait
            now = time.perf_counter()
            if state.point.a == 0 or now - last >= wait:
                arr, layout = state.pack()
                store.put(key, arr, {**layout, "seconds": before + now - t0})
                last = time.perf_counter()
                wait = max(every, SAVE_SHARE * (last - now))  # large states: less often

    out = window_terms(program, job.tests, job.window, real, series, job.part, resume, save)
    return (*out, before + time.perf_counter() - t0)


def run_windows(
    source: Any, tests: Sequence[Any], window: int, workers: int = 1,
    scheduler: str | None = None, checkpoints: Checkpoints | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """``windowed_diagonal`` of the training run of `source`, its passes split into
    `workers` tasks on local processes or a Dask `scheduler`; third: the tasks' seconds
    (the work as one process would do it, a sweep per task included, and the earlier
    runs of a resumed task).  With `checkpoints`, each task stores its state as it goes
    and an interrupted call, run again, resumes each task where it stopped."""
    from runtime import parallel
    from runtime.spec import compiled

    real = compiled(source, 0)
    program = real.program
    count, split = task_parts(program, window, workers)
    jobs = [WindowJob(source, list(tests), window, part, count, checkpoints) for part in split]
    done: dict[tuple[int, int], tuple] = {}

    def arrived(job: WindowJob, result: tuple) -> None:
        done[job.part] = result

    todo = jobs
    if checkpoints is not None:  # tasks done before need no worker
        store = checkpoints.store()
        for job in jobs:
            state, seconds = _stored_state(job, store, program.num_docs, real.state_size)
            if state is not None and state.point.a == 0:
                done[job.part] = (state.diag, state.order1, state.point.g, seconds)
        todo = [job for job in jobs if job.part not in done]
    parallel.run_tasks(
        window_job, todo, arrived, workers=workers, scheduler=scheduler,
        # forked workers start with the real and series code loaded here first
        prepare=(lambda: (compiled(source, 0), compiled(source, 2))) if parallel.forks() else None,
    )  # fmt: skip
    diag = np.zeros((len(tests), program.num_docs))
    order1 = np.zeros_like(diag)
    for job in jobs:  # summed in the jobs' order, whichever finished first: the same bits
        diag += done[job.part][0]
        order1 += done[job.part][1]
    if not jobs:
        return diag, np.zeros_like(diag), 0.0
    grad = done[jobs[0].part][2]
    check_first_order(order1, grad)
    return diag, grad, sum(r[3] for r in done.values())


def task_parts(program: Program, window: int, workers: int) -> tuple[int, list]:
    """The number of window passes and the [i, j) ranges of the tasks on `workers`."""
    passes = window_passes(program, window)
    return len(passes), parts(passes, max(1, workers))


def discard_checkpoints(checkpoints: Checkpoints, program: Program, window: int,
                        workers: int) -> None:
    """Remove the tasks' stored states, once the data they made are stored."""
    store = checkpoints.store()
    count, split = task_parts(program, window, workers)
    for part in split:
        store.remove(checkpoints.key(window, part, count))


def trained_docs(program: Program) -> np.ndarray:
    """The documents some step trains on, ascending."""
    return np.unique(np.concatenate([np.asarray(st.docs, np.int64) for st in program.steps]))


def sample_docs(program: Program, size: int, seed: int) -> np.ndarray:
    """`size` documents that some step trains on, drawn without replacement with
    ``numpy.random.default_rng(seed)``, sorted (all of them if there are fewer)."""
    trained = trained_docs(program)
    if size >= len(trained):
        return trained
    return np.sort(np.random.default_rng(seed).choice(trained, size, replace=False))


TRIM = 0.1  # of the sample's residuals cut off at each end before their mean


def missed(windowed: np.ndarray, exact: np.ndarray, sample: np.ndarray) -> np.ndarray:
    """(Q,) what the windows miss on average: the trimmed mean over the sample of
    exact - windowed.  Trimmed because the residuals are heavy-tailed (a few documents
    curve the output a lot): on the paper's setting one of them in a sample of 64 could
    set the shift of all (examples/RESULTS.md, "A cheaper diagonal")."""
    r = np.sort(exact[:, sample] - windowed[:, sample], axis=1)
    cut = int(TRIM * r.shape[1])
    return r[:, cut : r.shape[1] - cut].mean(axis=1) if r.shape[1] else np.zeros(len(r))


def corrected(
    windowed: np.ndarray, exact: np.ndarray, sample: np.ndarray, trained: np.ndarray
) -> np.ndarray:
    """The windowed diagonal (Q, N) of the `trained` documents shifted by what the windows
    miss (``missed``), with the sample's own exact values."""
    out = windowed.copy()
    if len(sample):
        out[:, trained] += missed(windowed, exact, sample)[:, None]
        out[:, sample] = exact[:, sample]
    return out
