"""The second-order data of test inputs, computed once per sketch and stored beside it.

For each test input, in ``SKETCH/second_order``, a (2, N) array: the exact
diagonal of H = d^2F/dw dw and its row sums H 1; in ``SKETCH/second_order_windowed``
the same with the cheaper windowed diagonal (``runtime.windowed_diagonal``), its
settings in its metadata.  A result derived from the
sketch's training run (``runtime.derived``): keyed by the test input, dropped
when what it came from changes.  How they are computed: ``runtime.hessian``; the
diagonal's series passes, which serve every test input, run once per sketch
(``runtime.unit_series`` stores what they end at).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime.hessian import row_sums
from runtime.metagrad import run_results
from runtime.windowed_diagonal import DEFAULT_SAMPLE, DEFAULT_WINDOW

__all__ = ["KINDS", "SecondOrder", "Windowed", "second_order_data", "sketch_second_order"]

STORE_DIR = "second_order"
WINDOWED_DIR = "second_order_windowed"


@dataclass(frozen=True)
class Windowed:
    """The windowed diagonal's settings: passes `window` steps long, the mean of what they
    miss from the exact diagonal of `sample` documents drawn with `seed`."""

    window: int = DEFAULT_WINDOW
    sample: int = DEFAULT_SAMPLE
    seed: int = 0

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"windowed diagonal: the window must be >= 1 step, got {self.window}")
        if self.sample < 0:
            raise ValueError(f"windowed diagonal: the sample must be >= 0 documents, got "
                             f"{self.sample}")

    def meta(self) -> dict[str, int]:
        return {"window": self.window, "sample": self.sample, "seed": self.seed}


class Priced:
    """Stored data that record what they cost: `seconds`, and the time of one training run
    they are priced in (`train_seconds`)."""

    seconds: float | None
    train_seconds: float | None

    @property
    def cost(self) -> float | None:
        """Its share of the computing time as a multiple of one training run."""
        if not self.seconds or not self.train_seconds:
            return None
        return self.seconds / self.train_seconds


@dataclass
class SecondOrder(Priced):
    """One test input's second-order data and what it cost (``Priced``)."""

    diag: np.ndarray  # (N,) H_ii
    rows: np.ndarray  # (N,) (H 1)_i
    seconds: float | None
    train_seconds: float | None


def tests_key(todo: Sequence[Any]) -> str:
    """A short digest of the test inputs `todo` (TestInputs), for the keys of work stored
    while their data are computed."""
    return hashlib.sha256("\n".join(t.key for t in todo).encode()).hexdigest()[:16]


def time_one_run(real) -> float:
    """One plain training run of the real-mode CompiledProgram `real`: the unit of cost."""
    real.train(stop=1)
    t0 = time.perf_counter()
    real.train()
    return time.perf_counter() - t0


def sketch_second_order(
    sketch,
    tests: Sequence[Any],
    compute: bool = True,
    warn: Callable[[str], None] | None = None,
    workers: int = 1,
    scheduler: str | None = None,
    progress: bool | None = False,
    windowed: Windowed | None = None,
    any_settings: bool = False,
) -> dict[str, SecondOrder | None]:
    """key -> SecondOrder of each test input (TestInputs or texts); None where not stored and
    not `compute`d.  Computing is shared by the inputs still missing: the diagonal's series
    passes not yet stored (on `workers` local processes or a Dask `scheduler`, with a
    `progress` bar) and one Hessian-vector product for all of them.  `windowed`: the
    windowed diagonal with these settings instead of the exact one (data stored with
    other settings count as missing, unless `any_settings`)."""
    from runtime.query import check_tests

    items = check_tests(sketch, tests)
    n = sketch.num_docs
    where, label = (STORE_DIR, "stored second-order data") if windowed is None else (
        WINDOWED_DIR, "stored windowed second-order data")
    store = run_results(sketch, where, label, warn)

    def get(key: str):
        x = store.get(key, shape=(2, n), dtype=np.float64)
        ok = x is not None and (windowed is None or any_settings
                                or x.meta.get("diagonal") == windowed.meta())
        return x if ok else None

    found = {t.key: get(t.key) for t in items}
    todo = [t for t in items if found[t.key] is None]
    if todo and compute:
        _compute(sketch, todo, store, warn, workers, scheduler, progress, windowed)
        found = {t.key: get(t.key) for t in items}
    return {
        k: None if x is None
        else SecondOrder(x.array[0], x.array[1], x.meta.get("seconds"), x.meta.get("train_seconds"))
        for k, x in found.items()
    }


# the estimators' data names (``runtime.estimators.NEEDS``) of second-order data -> the
# diagonal's settings (None: exact; the windowed one is computed with the defaults)
KINDS: dict[str, Windowed | None] = {"second_order": None, "second_order_windowed": Windowed()}
# every data name ``second_order_data`` loads: those and the groups' terms
# (``runtime.group_terms``), with the `hessian` options that compute each
DATA: dict[str, str] = {"second_order": "", "second_order_windowed": " --diagonal windowed",
                        "group_terms": " --diagonal windowed --doc-groups letters"}


def second_order_data(
    sketch,
    need: str,
    tests: Sequence[Any],
    compute: bool,
    warn: Callable[[str], None] | None = None,
    workers: int = 1,
    scheduler: str | None = None,
) -> dict[str, SecondOrder | None]:
    """``sketch_second_order`` for the data an estimator `need`s (a key of DATA); the
    windowed data are read whatever the settings they were stored with, the groups' terms
    whatever the groups (microgpt's letters when computed here)."""
    if need == "group_terms":
        from runtime.group_terms import group_terms_data

        return group_terms_data(sketch, tests, None, compute, warn, workers, scheduler)
    windowed = KINDS[need]
    return sketch_second_order(sketch, tests, compute, warn, workers, scheduler,
                               windowed=windowed, any_settings=windowed is not None)


def _compute(sketch, todo: list, store, warn, workers: int, scheduler: str | None,
             progress: bool | None, windowed: Windowed | None) -> None:
    """Compute and store the second-order data of `todo` (seconds per input: the call's time
    as one process would spend it, shared equally by its inputs).  The diagonal's series
    passes run once per sketch: their parameter series are stored too
    (``runtime.unit_series``)."""
    from runtime.sources import sketch_source
    from runtime.spec import compiled
    from runtime.unit_series import stored_diagonal
    from runtime.windowed_diagonal import (
        Checkpoints,
        corrected,
        discard_checkpoints,
        missed,
        run_windows,
        sample_docs,
        trained_docs,
    )

    source = sketch_source(sketch, full=True)
    real = compiled(source, 0)  # one, shared by the timing, the diagonal, the sweep
    train = time_one_run(real)
    program, values = real.program, [t.value for t in todo]
    extra: dict[str, Any] = {}
    if windowed is None:
        diag, grad, seconds = stored_diagonal(sketch, source, values, warn, workers, scheduler,
                                              progress)
        t0 = time.perf_counter()
    else:
        sample = sample_docs(program, windowed.sample, windowed.seed)
        exact, _, seconds = stored_diagonal(sketch, source, values, warn, workers, scheduler,
                                            progress, subset=sample)
        checkpoints = Checkpoints(str(sketch.path), tests_key(todo))
        win, grad, window_seconds = run_windows(source, values, windowed.window, workers,
                                                scheduler, checkpoints)
        seconds += window_seconds
        t0 = time.perf_counter()
        diag = corrected(win, exact, sample, trained_docs(program))
        extra = {"diagonal": windowed.meta(), "missed": missed(win, exact, sample)}
    rows = row_sums(program, values, real=real)
    per = (seconds + time.perf_counter() - t0) / len(todo)
    for q, t in enumerate(todo):
        meta = {"doc": t.key, "label": t.label, "seconds": per, "train_seconds": train,
                "max_first_order": float(np.max(np.abs(grad[q])))}
        if extra:
            meta |= {"diagonal": extra["diagonal"], "missed": float(extra["missed"][q])}
        store.put(t.key, np.vstack([diag[q], rows[q]]), meta)
    if windowed is not None:  # the window tasks' states served their purpose
        discard_checkpoints(checkpoints, program, windowed.window, workers)
