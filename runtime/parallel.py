"""Run independent tasks inline, in local worker processes, or on a Dask cluster.

``run_tasks(fn, tasks, on_result, workers=W, scheduler=ADDRESS)`` calls
``fn(task)`` for every task and hands each result to ``on_result(task,
result)`` in the calling process, as soon as it is ready (in completion
order).  ``fn`` must be a module-level function so workers can import it.

* ``scheduler`` given: an existing Dask distributed cluster
  (``distributed.Client(address)``); its workers need this project importable.
* ``workers == 1``: inline in this process (no pool).
* otherwise: a ``ProcessPoolExecutor`` of W processes.  On Linux, when this
  process runs no other thread, they are forked: a worker starts as a copy of
  the caller, its imports and the compiled code the caller loaded included,
  so it starts at once (``forks()``; a thread holding a lock at the fork would
  leave that lock held for ever in the child, so with threads they are
  spawned).  Otherwise they are spawned and import and load everything
  themselves, and the pool is kept for the next call with as many workers
  (``_KEPT``; a notebook's threads rule out forking).  Workers ignore SIGINT
  (Ctrl-C is handled once, by the caller), take SIGTERM's default (a caller's
  handler does not carry over) and exit on their own if the calling process
  dies.

On any exception, KeyboardInterrupt included, outstanding tasks are
cancelled, local workers are terminated, and the exception propagates;
results already handed to ``on_result`` are kept by the caller.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

__all__ = [
    "SchedulerError",
    "default_workers",
    "forks",
    "helper_process",
    "run_tasks",
    "shutdown_workers",
    "worker_init",
]


CONNECT_TIMEOUT = "15s"  # how long to try reaching a Dask scheduler


class SchedulerError(ValueError):
    """The Dask scheduler cannot be reached or a worker pool broke."""


def default_workers() -> int:
    """Worker processes used when none are asked for: the CPUs this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def forks() -> bool:
    """Whether local workers started now are forked copies of this process (see above)."""
    return sys.platform.startswith("linux") and threading.active_count() == 1


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(1)


def worker_init(parent: int, warm: tuple | None = None, ready: Any = None) -> None:
    """A worker process's start: Ctrl-C is left to the parent, SIGTERM stops it, and it
    exits when the parent is gone; then ``warm`` (see ``run_tasks``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    if warm is not None:
        fn, args = warm
        fn(*args, ready)


def run_tasks(
    fn: Callable[[Any], Any],
    tasks: Sequence[Any],
    on_result: Callable[[Any, Any], None],
    workers: int = 1,
    scheduler: str | None = None,
    warm: tuple[Callable[..., None], tuple] | None = None,
    prepare: Callable[[], None] | None = None,
) -> None:
    """Local worker processes only: `prepare()` runs here, and `warm` = (function, args)
    is called as ``function(*args, ready)`` once in each spawned worker as it starts.
    Forked workers (``forks()``) start after `prepare` has returned, as copies of this
    process with what it loaded, and skip `warm`.  Spawned ones start first, `prepare`
    runs while they import and build, and ``ready`` (an Event) is set when it has
    returned: the parent compiles in `prepare` and the workers' `warm` waits for
    `ready` before loading the compiled code (``runtime.precompute``)."""
    if not tasks:
        return
    if scheduler:
        _run_dask(fn, tasks, on_result, scheduler)
    elif workers <= 1 or len(tasks) == 1:
        for t in tasks:
            on_result(t, fn(t))
    else:
        _run_pool(fn, tasks, on_result, min(workers, len(tasks)), warm, prepare)


# When this process is killed outright (SIGKILL, out of memory), the pool's queues never
# release their semaphores; multiprocessing's resource tracker, which outlives it, then
# cleans them up and warns about "leaked semaphore objects" on the terminal.  The clean-up
# is right and the warning is noise: the tracker (started with this process's -W options)
# is told to keep quiet about it.
QUIET_TRACKER = "ignore:resource_tracker:UserWarning"


def _quiet_resource_tracker() -> None:
    if QUIET_TRACKER not in sys.warnoptions:
        sys.warnoptions.append(QUIET_TRACKER)


def _run_pool(fn, tasks, on_result, workers: int, warm=None, prepare=None) -> None:
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    _quiet_resource_tracker()

    forked = forks()
    kept = None
    if forked:
        if prepare is not None:
            prepare()
        prepare = warm = None  # a forked worker is a copy of this prepared process
        context = multiprocessing.get_context("fork")
    else:  # spawned workers are kept for the next call (see _KEPT)
        kept = (os.getpid(), workers, None if warm is None else warm[0])
        context = multiprocessing.get_context("spawn")
    ex = _KEPT.pop(kept, None) if kept else None
    if ex is not None and getattr(ex, "_broken", False):  # a worker died since: start anew
        _terminate(ex)
        ex = None
    if ex is not None:  # started and warmed by an earlier call: compile first, then run
        if prepare is not None:
            prepare()
        prepare = warm = None
    ready = context.Event() if warm is not None and prepare is not None else None
    if ex is None:
        ex = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=context,
            initializer=worker_init,
            initargs=(os.getpid(), warm, ready),
        )
    with _owned(ex, keep=kept):
        pending = {ex.submit(fn, t): t for t in tasks}  # starts the workers
        if prepare is not None:
            prepare()
        if ready is not None:
            ready.set()
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                t = pending.pop(fut)
                try:
                    result = fut.result()
                except BrokenProcessPool:
                    raise SchedulerError(
                        "a worker process died (killed or out of memory); finished work is "
                        "saved: rerun the same command to resume"
                    ) from None
                on_result(t, result)


_KEPT: dict[tuple, Any] = {}
"""Spawned pools kept after a call that ended well, by (this process, number of workers,
warm-up function): the next call with the same finds its workers started, imported and
warmed (a notebook, whose threads rule out forking, pays their start once, not per
command).  A new program's code is loaded by its first task in each worker, after this
process has compiled it.  Forked pools are not kept: a fresh fork costs milliseconds and
carries the code this process loaded since.  ``shutdown_workers()`` ends them (at exit
they end with the process)."""


def shutdown_workers() -> None:
    """Shut down the worker pools kept for reuse (``_KEPT``)."""
    while _KEPT:
        _KEPT.popitem()[1].shutdown(wait=True)


@contextlib.contextmanager
def _owned(ex, keep: tuple | None = None) -> Iterator[Any]:
    """The pool `ex` for the block: shut down (its tasks awaited) when the block ends, or
    kept under `keep` in ``_KEPT``; terminated at once when it fails or is interrupted."""
    ok = False
    try:
        yield ex
        ok = True
    finally:
        if not ok:
            _terminate(ex)
        elif keep is not None:
            _KEPT[keep] = ex
        else:
            ex.shutdown(wait=True)


def _terminate(ex) -> None:
    """Stop a process pool at once: running tasks are not waited for."""
    procs = list(getattr(ex, "_processes", {}).values())
    results = getattr(ex, "_result_queue", None)  # shutdown() drops it
    ex.shutdown(wait=False, cancel_futures=True)
    for p in procs:  # do not wait for running tasks to finish
        with contextlib.suppress(OSError, ValueError, AttributeError):  # already gone
            p.terminate()
    for p in procs:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            p.join(timeout=5)
    # A worker killed while sending its result leaves half a message in the
    # result pipe; the executor's thread would wait for the rest for ever (and
    # the interpreter, at exit, for that thread).  With our copy of the pipe's
    # write end closed too, it reads end-of-file instead and stops.
    with contextlib.suppress(OSError, AttributeError):
        results._writer.close()


@contextlib.contextmanager
def helper_process() -> Iterator[Any]:
    """One spawned worker process (an executor) for work that overlaps the caller's: the
    demo retrains there while it sketches.  Terminated, not awaited, if the block fails."""
    from concurrent.futures import ProcessPoolExecutor

    _quiet_resource_tracker()
    ex = ProcessPoolExecutor(
        max_workers=1,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=worker_init,
        initargs=(os.getpid(),),
    )
    with _owned(ex):
        yield ex


def _check_address(address: str) -> None:
    """Refuse a malformed address before Client(): one that fails there on it is left
    half-built, and its ``__del__`` waits 30 s and prints a traceback."""
    from distributed.comm import get_address_host_port, parse_address

    try:
        if parse_address(address)[0] == "inproc":  # a cluster in this process: no host, port
            return
        host, port = get_address_host_port(address)
    except ValueError as e:
        reason = str(e)
    else:
        if host and 0 < port < 65536:
            return
        reason = "expected a host and a port number 1..65535"
    raise SchedulerError(
        f"--scheduler {address!r} is not a Dask scheduler address like tcp://HOST:PORT "
        f"({reason})"
    )


def _run_dask(fn, tasks, on_result, address: str) -> None:
    try:
        from distributed import Client, as_completed
    except ImportError:  # pragma: no cover - dask is a dependency
        raise SchedulerError("--scheduler needs dask[distributed] installed") from None
    _check_address(address)
    try:
        client = Client(address, timeout=CONNECT_TIMEOUT, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as e:
        raise SchedulerError(f"cannot connect to the Dask scheduler at {address!r}: {e}") from None
    futures = []
    try:
        futures = [client.submit(fn, t, pure=False) for t in tasks]
        index = {f.key: t for f, t in zip(futures, tasks, strict=True)}
        for fut in as_completed(futures, loop=client.loop):
            on_result(index[fut.key], fut.result())
    finally:
        try:
            pending = [f for f in futures if not f.done()]
            if pending:
                client.cancel(pending)
        finally:
            client.close()
