"""Compile a program's real-mode code in a second process while this one compiles its series.

``circuitsketch compile`` needs the series code; ``retrain``, ``evaluate``,
``metagrad`` and ``hessian`` need the real-mode code, which on an empty cache
takes about as long again.  The two share few kernels, so on a machine with a
second core the real-mode code is compiled meanwhile in a spawned process and
a new model's real plus series compile takes about as long as its series
compile alone (bench/RESULTS.md, "Latency (issue 20)").

The process is a daemon: if the command ends first it is stopped, and what it
had compiled stays cached (Numba writes each function's cache files
atomically).  It is a process, not a thread, so local workers are still forked
(``parallel.forks``).  A marker in the cache, keyed by the traced circuits,
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


def start(spec: Any, circuits: dict[str, str]) -> Any | None:
    """Start compiling `spec`'s real-mode code in a daemon process; None when it is cached
    (by the hint), turned off, or there is no second CPU to run it on."""
    if os.environ.get(ENV, "1") == "0" or (os.cpu_count() or 1) < 2:
        return None
    hint = marker(circuits)
    if hint.exists():
        return None
    proc = multiprocessing.get_context("spawn").Process(
        target=_compile, args=(spec, os.getpid(), str(hint)), daemon=True,
        name="circuitsketch-real-beside",
    )  # fmt: skip
    proc.start()
    return proc


def _compile(spec: Any, parent: int, hint: str) -> None:
    """In the spawned process: build the real-mode program and run its first step (which
    compiles the whole training loop), then leave the hint."""
    from runtime.parallel import worker_init

    worker_init(parent)  # Ctrl-C is the parent's to handle; exit when the parent is gone
    with contextlib.suppress(Exception):  # only a head start: an error shows when it is used
        from runtime.files import atomic_write_bytes
        from runtime.spec import compiled

        compiled(spec, 0).train(stop=1)
        atomic_write_bytes(Path(hint), b"")
