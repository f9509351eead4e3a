"""Precompute a sketch: series training along every direction, chunk by chunk.

Directions are cut into fixed chunks of ``chunk_size`` consecutive indices.
``compute_chunk`` is a pure function of (training spec, degree, direction
rows): it trains in degree-K series arithmetic along those rows and returns
the order-0 parameters, their orders 1..K and the per-step losses.  A
direction's result does not depend on the other rows of its chunk, so the
sketch is bit-identical whatever the number of workers or the scheduler.
Each finished chunk is written to the sketch at once; rerunning the same
command after an interruption computes only the chunks still missing.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtime import parallel, resources
from runtime.directions import gaussian_directions, load_directions_file
from runtime.sources import ProgramSource
from runtime.spec import compiled, fingerprints, sha256_file
from runtime.store import Sketch, SketchWriter, chunk_bounds, num_chunks

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "ChunkJob",
    "CompileReport",
    "compute_chunk",
    "load_series_code",
    "precompute",
    "warm_worker",
]

DEFAULT_CHUNK_SIZE = 8


@dataclass
class ChunkJob:
    """One unit of work: chunk `index` = directions [start, start + len(rows))."""

    spec: ProgramSource
    degree: int
    index: int
    start: int
    rows: np.ndarray  # (B, N) complex128


def compute_chunk(job: ChunkJob) -> dict[str, Any]:
    """Series training along the job's directions (runs in a worker process).

    Returns {"index", "phi" (B, K, P) complex128, "p0" (P,), "losses" (T,), "module"}
    ("module": the hash of the generated code, so that workers running other code are
    caught).
    """
    from compiler import cache
    from compiler.compiled import params_of

    cp = compiled(job.spec, job.degree)  # built once per worker process
    rows = np.ascontiguousarray(job.rows, np.complex128)
    s0, hi, losses = cp.train_series(rows)
    p0, phi = params_of(cp, s0, hi, rows.shape[0])
    return {
        "index": job.index,
        "phi": np.ascontiguousarray(phi),
        "p0": np.ascontiguousarray(p0),
        "losses": np.array(losses, np.float64),
        "module": cache.source_hash(cp.source),
    }


def load_series_code(cp, reverse: bool = False) -> None:
    """Compile (on a cold cache) or load every series step function a chunk runs.

    One step of one zero direction per step circuit: Numba compiles a function on its
    first call, so a parent that calls this before starting workers compiles once,
    and each worker then only loads the cached code (instead of every worker
    compiling the same functions at once on a cold cache).  The step circuits go in
    the order of their first steps (`reverse`: the other way round, for a second
    process compiling beside, ``runtime.real_beside``).
    """
    psi = np.zeros((1, cp.program.num_docs), np.complex128)
    for s in sorted(cp.first_steps(), reverse=reverse):
        cp.train_series(psi, start=s, stop=s + 1)
    marker = _loaded_marker(cp)
    if not marker.exists():
        from runtime.files import atomic_write_bytes

        atomic_write_bytes(marker, b"")


def _loaded_marker(cp) -> Path:
    """``<cache>/<key>/cs_<hash>.series-loaded``: this module's series code was compiled
    into the disk cache.  Only a hint (whether a parent compiles before its workers
    start, to spare them compiling the same code at once): nothing is trusted on it;
    Numba checks its own cache."""
    from compiler import cache

    return cache.cache_dir() / f"cs_{cache.source_hash(cp.source)}.series-loaded"


def warm_worker(spec: ProgramSource, degree: int, ready) -> None:
    """A worker's start (``parallel.run_tasks`` warm): build the program and its generated
    module (while the parent compiles, if it does), wait for the parent (`ready`, None:
    the code is cached already), then load the series code before the first chunk."""
    cp = compiled(spec, degree)
    if ready is not None:
        ready.wait()
    load_series_code(cp)


@dataclass
class CompileReport:
    sketch: Sketch
    computed: int  # chunks computed by this call
    reused: int  # chunks found already finished
    seconds: float
    directions_computed: int


def precompute(
    out: str | Path,
    spec: ProgramSource,
    degree: int,
    num_directions: int | None = None,
    seed: int = 0,
    directions_file: str | Path | None = None,
    workers: int = 1,
    scheduler: str | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    docs_sha256: str | None = None,
    init_sha256: str | None = None,
    info: dict[str, Any] | None = None,
    progress: bool | None = None,
    warn: Callable[[str], None] | None = None,
    bar: Any | None = None,
    real_beside: bool = False,
) -> CompileReport:
    """Compile (or resume) the sketch of `spec` at `degree` into directory `out`.

    Directions: `num_directions` Gaussian unit directions of `seed`, or the rows of
    `directions_file` exactly as given.  `docs_sha256` / `init_sha256` are the
    checksums recorded for the documents and init files (default: of the
    documents' text and of the init vector).  `progress`: a tqdm bar on stderr
    (None: only when stderr is a terminal); `bar`: a bar of the caller's to advance by
    the directions instead (anything with ``update(n)``; not closed here).  `real_beside`:
    compile the real-mode code in a second process meanwhile, when this machine computes
    the sketch and that code is not cached (``runtime.real_beside``).  Raises
    ValueError subclasses on bad input; KeyboardInterrupt leaves every finished chunk saved.
    """
    import time

    from compiler import cache

    t0 = time.perf_counter()
    warn = warn or (lambda msg: print(f"warning: {msg}", file=sys.stderr))
    if degree < 1:
        raise ValueError(f"--degree must be >= 1, got {degree}")
    if chunk_size < 1:
        raise ValueError(f"chunk size must be >= 1, got {chunk_size}")
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    n = spec.num_docs
    if directions_file is not None:
        psi = load_directions_file(directions_file, n)
        if num_directions is not None and num_directions != psi.shape[0]:
            raise ValueError(
                f"--directions {num_directions} but {str(directions_file)!r} holds "
                f"{psi.shape[0]} directions"
            )
        m = psi.shape[0]
        dir_config = {"source": "file", "sha256": sha256_file(directions_file)}
    else:
        if num_directions is None or num_directions < 1:
            raise ValueError(f"--directions must be >= 1, got {num_directions}")
        if seed < 0:
            raise ValueError(f"--seed must be >= 0, got {seed}")
        m = num_directions
        resources.require(
            2 * resources.directions_memory(m, n),
            f"compile (the directions: --directions {m} x {n} documents x 16 bytes)",
            "lower --directions",
        )
        psi = gaussian_directions(seed, 0, m, n)
        dir_config = {"source": "seed", "seed": seed, "kind": "complex-gaussian-unit"}

    cp = compiled(spec, degree)  # generated code only; Numba compiles on first use
    _check_resources(out, cp, degree, m, n, chunk_size, 1 if scheduler else workers)
    config = {
        # the source's own record: program, hyper-parameters, documents and init
        **spec.manifest_config(cp.program, docs_sha256, init_sha256),
        "degree": int(degree),
        "num_directions": int(m),
        "num_docs": int(n),
        "steps": int(spec.steps),
        "seed": int(seed),
        "chunk_size": int(chunk_size),
        "directions": dir_config,
        "fingerprints": fingerprints(cp),
    }
    # information only, never checked: which compiler made the sketch (its numbers are
    # decided by the configuration above, the traced circuits included)
    info = {"compiler_key": cache.compiler_key(), **spec.manifest_info(), **(info or {})}
    # a failed start that finished no chunk leaves nothing behind (w.discarding)
    with SketchWriter(out, config, info=info, warn=warn) as w, w.discarding():
        w.ensure("directions.npy", psi)
        w.ensure("docs.npy", np.array(spec.docs, dtype=str))
        for name, arr in spec.stored_arrays().items():
            w.ensure(name, arr)
        done = w.done_chunks()
        total = num_chunks(m, chunk_size)
        jobs = []
        for c in range(total):
            if c in done:
                continue
            a, b = chunk_bounds(c, chunk_size, m)
            jobs.append(ChunkJob(spec, int(degree), c, a, psi[a:b]))
        done_dirs = sum(
            chunk_bounds(c, chunk_size, m)[1] - chunk_bounds(c, chunk_size, m)[0] for c in done
        )
        helper = None
        if real_beside and jobs and scheduler is None:
            from runtime import real_beside as beside

            series = None if _loaded_marker(cp).exists() else int(degree)
            helper = beside.start(spec, config["fingerprints"], series)
        own_bar = bar is None
        if own_bar:
            bar = progress_bar(m, done_dirs, progress)
        elif done_dirs:
            bar.update(done_dirs)  # directions of a resumed sketch
        module = cache.source_hash(cp.source)
        # forked local workers are copies of this process once it has loaded the series
        # code; spawned ones start at once and load it from the disk cache, and if it is
        # not there yet, it is compiled once, here, while they import and build the
        # program (they wait for it instead of all compiling the same code at once)
        local = scheduler is None and min(workers, len(jobs)) > 1
        load_here = local and (parallel.forks() or not _loaded_marker(cp).exists())

        def store(job: ChunkJob, result: dict[str, Any]) -> None:
            if result["module"] != module:
                raise ValueError(
                    f"chunk {job.index} was computed by another generated module "
                    f"({result['module']} instead of {module}): workers run other code"
                )
            w.add_chunk(job.index, result["phi"], result["p0"], result["losses"])
            if bar is not None:
                bar.update(job.rows.shape[0])

        try:
            parallel.run_tasks(
                compute_chunk, jobs, store, workers=workers, scheduler=scheduler,
                warm=(warm_worker, (spec, int(degree))) if local else None,
                prepare=(lambda: load_series_code(cp)) if load_here else None,
            )  # fmt: skip
        finally:
            if own_bar and bar is not None:
                bar.close()
        w.finish()
        if helper is not None:  # both modes compiled when this returns
            helper.join()
    sketch = Sketch.open(out)
    return CompileReport(
        sketch,
        computed=len(jobs),
        reused=len(done),
        seconds=time.perf_counter() - t0,
        directions_computed=sum(j.rows.shape[0] for j in jobs),
    )


def _check_resources(out, cp, degree: int, m: int, n: int, chunk_size: int, workers: int) -> None:
    """ResourceError before anything is allocated or written if the compile cannot fit."""
    prog = cp.program
    p = int(sum(np.size(prog.init_state[name]) for name in prog.params))
    b = min(chunk_size, m)
    w = min(workers, -(-m // b))
    per_worker = resources.compile_memory(degree, b, cp.state_size, p, cp.wh_size,
                                          cp.build.in_place)  # fmt: skip
    resources.require(
        w * per_worker + resources.directions_memory(m, n) + w * 16 * b * degree * p,
        f"compile (per worker: --degree {degree} x --chunk-size {b} directions x "
        f"{cp.state_size} state values x 16 bytes, several times; {w} worker(s))",
        "lower --degree, --chunk-size or --workers",
    )
    resources.require_disk(
        16 * m * (degree * p + n),
        out,
        f"the sketch (--directions {m} x --degree {degree} x {p} parameters x 16 bytes)",
        "lower --directions or --degree, or choose another --out",
    )


def progress_bar(
    total: int, initial: int, progress: bool | None, unit: str = "dir", desc: str = "directions"
):
    """A tqdm bar on stderr (None: off; `progress` None: on when stderr is a terminal)."""
    if progress is False:
        return None
    if progress is None and not sys.stderr.isatty():
        return None
    import shutil

    from tqdm import tqdm

    class Bar(tqdm):
        monitor_interval = 0  # no monitor thread, so that workers can be forked

    size = shutil.get_terminal_size((100, 20))
    return Bar(
        total=total,
        initial=initial,
        unit=unit,
        desc=desc,
        file=sys.stderr,
        # shutil falls back to 100 x 20 where a terminal reports a size of 0 (tqdm would
        # then draw nothing)
        ncols=min(size.columns, 120),
        nrows=max(size.lines, 2),
        smoothing=0.1,
    )
