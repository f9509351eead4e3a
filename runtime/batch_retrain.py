"""Ground truth for many deletion sets: compiled real training, in parallel, resumable.

``batch_retrain(source, sets, tests, out=FILE.jsonl, workers=W)`` retrains
once per set (``runtime.retrain.retrain``: the degree-0 compiled program) and
records the test output of every test input, one JSON line per (set, test)::

    {"set": 3, "doc": "emma", "loss": 2.91..., "size": 10, "weight": 1.0,
     "set_key": "<16 hex: the set's content>", "run": "<16 hex: the training run>"}

Work goes out in small groups of sets to local processes or a Dask cluster
(``runtime.parallel``).  Each finished group's lines are appended to FILE in
one write and fsync'd, so FILE only ever holds whole groups (a line cut by a
crash, the last one, is dropped on the next run).  A rerun reads FILE and
retrains only the sets still missing; a file whose records name another
training run, or another set under the same number, is refused.  When every
set is done FILE is rewritten in (set, test) order, atomically: the finished
file is the same bytes whatever the workers, interruptions and resumptions.
Floats are written with ``repr`` (``json``), so they read back exactly.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtime import parallel
from runtime.deletion_sets import DeletionSets
from runtime.sources import ProgramSource, TestInput
from runtime.store import atomic_write_bytes

__all__ = ["RetrainJob", "RetrainResult", "batch_retrain", "retrain_job", "run_key"]

GROUP = 4  # sets per unit of work (and per append)


@dataclass
class RetrainJob:
    """Retrain sets `rows` (their members and weights given) and evaluate `tests` after each."""

    source: ProgramSource
    tests: list[TestInput]
    rows: list[int]
    members: list[np.ndarray]
    weights: list[float]


def retrain_job(job: RetrainJob) -> list[tuple[int, list[float], float]]:
    """[(set, one loss per test, seconds of its retraining)] (runs in a worker process).

    Each set is ``runtime.retrain.retrain``: the one definition of ground truth.
    """
    from runtime.retrain import retrain
    from runtime.spec import compiled

    compiled(job.source, 0).train(stop=1)  # build and load the code before timing a run
    n = job.source.num_docs
    out = []
    for s, idx, wt in zip(job.rows, job.members, job.weights, strict=True):
        w = np.zeros(n)
        w[idx] = wt
        t0 = time.perf_counter()
        losses, _ = retrain(job.source, w, job.tests)
        out.append((s, losses, time.perf_counter() - t0))
    return out


def run_key(source: ProgramSource) -> str:
    """16 hex digits naming the training run (the source's key)."""
    return source.key[:16]


@dataclass
class RetrainResult:
    losses: np.ndarray  # (S, D)
    computed: int  # sets retrained by this call
    reused: int  # sets read back from the output file
    train_seconds: list[float]  # each retraining's time (this call's)
    seconds: float  # wall time of this call's retraining


def _records(
    s: int, sets: DeletionSets, labels: Sequence[str], losses: Sequence[float], run: str
) -> list[dict[str, Any]]:
    return [
        {
            "set": s,
            "doc": label,
            "loss": v,
            "size": int(sets.sizes[s]),
            "weight": float(sets.weights[s]),
            "set_key": sets.key(s),
            "run": run,
        }
        for label, v in zip(labels, losses, strict=True)
    ]


def _line(r: dict[str, Any]) -> str:
    return json.dumps(r, allow_nan=True) + "\n"


def read_results(
    path: Path, sets: DeletionSets, run: str, warn: Callable[[str], None]
) -> dict[tuple[int, str], dict[str, Any]]:
    """(set, doc) -> record of an existing output file, checked; a cut last line dropped."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    name = f"--out {str(path)!r}"
    cut = data.rfind(b"\n") + 1
    if cut < len(data):  # a write cut short by a crash: drop it, it is redone
        warn(f"{name}: dropping an incomplete last line (an interrupted run); it is redone")
        with open(path, "r+b") as f:
            f.truncate(cut)
        data = data[:cut]
    keys = {}
    for lineno, line in enumerate(data.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
            s, doc, loss = int(r["set"]), str(r["doc"]), float(r["loss"])
            rec_run, set_key = r["run"], r["set_key"]
        except (ValueError, KeyError, TypeError, RecursionError):  # RecursionError: too deep
            raise ValueError(f"{name} line {lineno} is not a retrain result record") from None
        if rec_run != run:
            raise ValueError(
                f"{name} holds results of another training run (line {lineno}): use another "
                "--out file (or delete this one)"
            )
        if not 0 <= s < len(sets) or set_key != sets.key(s):
            raise ValueError(
                f"{name} line {lineno}: set {s} there is not set {s} of these deletion sets "
                "(the sets changed): use another --out file (or delete this one)"
            )
        keys[(s, doc)] = {**r, "loss": loss}
    return keys


def _lock(path: Path) -> int:
    import fcntl

    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise ValueError(f"--out {str(path)!r} is being written by another process") from None
    return fd


def batch_retrain(
    source: ProgramSource,
    sets: DeletionSets,
    tests: Sequence[Any],
    out: str | Path | None = None,
    workers: int = 1,
    scheduler: str | None = None,
    warn: Callable[[str], None] | None = None,
    group: int = GROUP,
) -> RetrainResult:
    """Test outputs (S, D) after retraining without each set (module docstring)."""
    warn = warn or (lambda msg: None)
    items = source.check_tests(tests)
    labels = [t.label for t in items]
    if len(set(labels)) != len(labels):
        raise ValueError("the same test input is given twice")
    if sets.num_docs != source.num_docs:
        raise ValueError(
            f"the sets are over {sets.num_docs} documents, the training run has {source.num_docs}"
        )
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    run = run_key(source)
    path = None if out is None else Path(out)
    done: dict[tuple[int, str], dict[str, Any]] = {}
    fd = None
    if path is not None:
        if path.is_dir():
            raise ValueError(f"--out {str(path)!r} is a directory")
        fd = _lock(path)
    try:
        if path is not None:
            done = read_results(path, sets, run, warn)
        todo = [s for s in range(len(sets)) if any((s, lb) not in done for lb in labels)]
        jobs = [
            RetrainJob(
                source,
                items,
                rows,
                [sets.members(s) for s in rows],
                [float(sets.weights[s]) for s in rows],
            )
            for rows in (todo[a : a + group] for a in range(0, len(todo), group))
        ]
        times: list[float] = []

        def store(job: RetrainJob, result: list[tuple[int, list[float], float]]) -> None:
            lines = []
            for s, losses, sec in result:
                times.append(sec)
                for r in _records(s, sets, labels, losses, run):
                    if (s, r["doc"]) not in done:
                        done[(s, r["doc"])] = r
                        lines.append(_line(r))
            if fd is not None and lines:
                os.write(fd, "".join(lines).encode())
                os.fsync(fd)

        from runtime.spec import compiled

        t0 = time.perf_counter()
        parallel.run_tasks(
            retrain_job, jobs, store, workers=workers, scheduler=scheduler,
            # forked workers start with the real-mode code loaded here first
            prepare=(lambda: compiled(source, 0).train(stop=1)) if parallel.forks() else None,
        )  # fmt: skip
        seconds = time.perf_counter() - t0
        if path is not None:
            _finish(path, done, labels)
    finally:
        if fd is not None:
            os.close(fd)
    losses = np.array([[done[(s, lb)]["loss"] for lb in labels] for s in range(len(sets))])
    return RetrainResult(losses, len(todo), len(sets) - len(todo), times, seconds)


def _finish(path: Path, done: dict[tuple[int, str], dict[str, Any]], labels: list[str]) -> None:
    """Rewrite the file in (set, test) order (tests asked for first, others by name)."""
    rank = {lb: i for i, lb in enumerate(labels)}
    order = sorted(done, key=lambda k: (k[0], rank.get(k[1], len(rank)), k[1]))
    text = "".join(_line(done[k]) for k in order).encode()
    with contextlib.suppress(FileNotFoundError):
        if path.read_bytes() == text:
            return
    atomic_write_bytes(path, text)
