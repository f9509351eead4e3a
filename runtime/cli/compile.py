"""The ``compile`` command: precompute a sketch (resumable, on local workers or Dask)."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Any

from runtime.cli.common import (
    CLIError,
    Command,
    count_of,
    positive_int,
    print_json,
    series_degree,
    user_errors,
    warn,
)
from runtime.cli.options import add_json, add_training, training_options
from runtime.sources import source_class
from runtime.store import Sketch

__all__ = ["COMPILE"]


def configure_compile(p: argparse.ArgumentParser) -> None:
    add_training(p)
    g = p.add_argument_group("sketch")
    g.add_argument(
        "--degree", type=series_degree, required=True, metavar="K", help="series degree K >= 1"
    )
    g.add_argument(
        "--directions",
        type=count_of("directions"),
        metavar="M",
        help="number of random directions (required unless --directions-file)",
    )
    g.add_argument(
        "--directions-file",
        metavar="DIRS.npy",
        help="complex128 array (M, N) of directions, used exactly as given",
    )
    g.add_argument(
        "--out", metavar="SKETCH", required=True, help="sketch directory (created or resumed)"
    )
    g.add_argument(
        "--chunk-size",
        type=positive_int,
        default=None,
        metavar="B",
        help="directions per unit of work and per stored chunk (default 8)",
    )
    r = p.add_argument_group("where to run")
    r.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        metavar="W",
        help="local worker processes (default: the number of CPUs)",
    )
    r.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="send the work to an existing Dask cluster, e.g. tcp://127.0.0.1:8786",
    )
    r.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar (default: when stderr is a terminal)",
    )
    add_json(p)


def _install_sigterm() -> None:
    """SIGTERM stops a compile like Ctrl-C: finished chunks stay saved."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)


def run_compile(args: argparse.Namespace) -> int:
    if args.directions is None and args.directions_file is None:
        raise CLIError("give the number of directions with --directions M (or a --directions-file)")
    with user_errors():
        from runtime.parallel import default_workers
        from runtime.precompute import DEFAULT_CHUNK_SIZE, precompute

        source = source_class(args.program).from_options(args.program, training_options(args))
        workers = args.workers or default_workers()
        info = {
            "docs_file": None if args.docs is None else os.path.abspath(args.docs),
            "init_file": None if args.init is None else os.path.abspath(args.init),
            "directions_file": None
            if args.directions_file is None
            else os.path.abspath(args.directions_file),
        }
        chunk = args.chunk_size or DEFAULT_CHUNK_SIZE
        if args.chunk_size is None and os.path.isfile(os.path.join(args.out, "manifest.json")):
            # resuming: keep the stored chunk size unless one is asked for
            with contextlib.suppress(ValueError):
                chunk = Sketch.open(args.out, require_complete=False).chunk_size
        _install_sigterm()
        try:
            report = precompute(
                args.out,
                source,
                args.degree,
                num_directions=args.directions,
                seed=args.seed,
                directions_file=args.directions_file,
                workers=workers,
                scheduler=args.scheduler,
                chunk_size=chunk,
                info=info,
                progress=args.progress,
                warn=warn,
                real_beside=True,
            )
        except KeyboardInterrupt:
            saved = "no"
            try:
                sk = Sketch.open(args.out, require_complete=False)
                saved = str(sum(b - a for a, b in map(sk.chunk_bounds, sk.done_chunks())))
            except ValueError:
                pass
            print(
                f"interrupted: {saved} directions are saved in {args.out}; "
                "rerun the same command to resume",
                file=sys.stderr,
            )
            return 130
    sk = report.sketch
    per_dir = report.seconds / report.directions_computed if report.directions_computed else None
    summary = {
        "sketch": os.path.abspath(args.out),
        "num_docs": sk.num_docs,
        "steps": sk.steps,
        "degree": sk.degree,
        "directions": sk.num_directions,
        "chunks_computed": report.computed,
        "chunks_reused": report.reused,
        "directions_computed": report.directions_computed,
        "seconds": report.seconds,
        "seconds_per_direction": per_dir,
        "workers": None if args.scheduler else workers,
        "scheduler": args.scheduler,
    }
    if args.json:
        print_json(summary)
    else:
        how = f"Dask scheduler {args.scheduler}" if args.scheduler else f"{workers} worker(s)"
        print(
            f"sketch {args.out}: {sk.num_docs} docs, T = {sk.steps}, K = {sk.degree}, "
            f"M = {sk.num_directions} directions"
        )
        print(
            f"computed {report.directions_computed} directions ({report.computed} chunks, "
            f"{report.reused} already done) in {report.seconds:.1f} s with {how}"
            + (f", {per_dir:.2f} s per direction" if per_dir else "")
        )
    return 0


COMPILE = Command(
    "compile",
    "Precompute a sketch: series training along random directions (resumable, parallel).",
    configure_compile,
    run_compile,
)
