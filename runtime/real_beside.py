"""Compile a program's real-mode code in a second process while this one compiles its series.

``circuitsketch compile`` needs the series code; ``retrain``, ``evaluate``,
``metagrad`` and ``hessian`` need the real-mode code, which on an empty cache
takes about as long again.  The two share few kernels, so on a machine with a
second core the real-mode code is compiled meanwhile in a spawned process and
a new model's real plus series compile takes about as long as its series
compile alone (bench/RESULTS.md, "Latency (issue 20)").  That process also
helps with the series code: it compiles what this process compiles, in the
reverse order (the kernels and loops first, then the real-mode code, then the
step functions), and each process loads from the cache what the other
finished first.  ``circuitsketch compile`` waits for it before it returns, so
that both modes are compiled when it does.

The process is a daemon: if the command ends first (an error, Ctrl-C) it is
stopped, and what it had compiled stays cached (Numba writes each function's
cache files atomically).  It is a process, not a thread, so local workers are
still forked (``parallel.forks``).  A marker in the cache, keyed by the traced circuits,
says that it ran to the end: only a hint (no second process is started for the
same circuits), never trusted, since Numba checks its own cache.
``CIRCUITSKETCH_REAL_BESIDE=0`` turns it off.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
from pathlib import Path
from typing import Any

__all__ = ["ENV", "marker", "start"]

ENV = "CIRCUITSKETCH_REAL_BESIDE"


def marker(circuits: dict[str, str]) -> Path:
    """The hint file of the real-mode code of a program with these circuit fingerprints
    (``runtime.spec.fingerprints``), in this compiler's cache directory."""
    from compiler import cache

    digest = hashlib.sha256(json.dumps(circuits, sort_keys=True).encode()).hexdigest()[:24]
    return cache.cache_dir() / f"real-{digest}.compiled"


def start(spec: Any, circuits: dict[str, str], degree: int | None = None) -> Any | None:
    """Start compiling `spec`'s real-mode code in a daemon process, then its series code at
    `degree` (None: not that); None when there is nothing to do (the real-mode code
    cached, by the hint, and no degree), it is turned off, or there is no second CPU."""
    if os.environ.get(ENV, "1") == "0" or (os.cpu_count() or 1) < 2:
        return None
    hint = marker(circuits)
    if hint.exists() and degree is None:
        return None
    proc = multiprocessing.get_context("spawn").Process(
        target=_compile, args=(spec, os.getpid(), str(hint), degree), daemon=True,
        name="circuitsketch-real-beside",
    )  # fmt: skip
    proc.start()
    return proc


def _compile(spec: Any, parent: int, hint: str, degree: int | None) -> None:
    """In the spawned process: the kernels and loops of the series steps at `degree` in
    the reverse of the order the parent meets them (it compiles from the front); the
    real-mode program's first step (which compiles the whole training loop), and the
    hint; then the series steps themselves, in reverse order."""
    from runtime.parallel import worker_init

    worker_init(parent)  # Ctrl-C is the parent's to handle; exit when the parent is gone
    with contextlib.suppress(Exception):  # only a head start: an error shows when it is used
        from runtime.files import atomic_write_bytes
        from runtime.precompute import load_series_code
        from runtime.spec import compiled

        series = None if degree is None else compiled(spec, degree)
        if series is not None:
            series.load_series_callees(reverse=True)
        if not Path(hint).exists():
            compiled(spec, 0).train(stop=1)
            atomic_write_bytes(Path(hint), b"")
        if series is not None:
            load_series_code(series, reverse=True)
