"""Many deletion sets at once: ``query --sets`` / ``--estimator`` and ``retrain --sets``.

``query`` and ``retrain`` hand over to these runners when given ``--sets
FILE.jsonl`` (or, for ``query``, an ``--estimator``): the sketch or training
run is loaded once and every set answered (``runtime.batch_query``) or
retrained in parallel (``runtime.batch_retrain``).  Output: one JSON record
per (set, test input), on stdout as a JSON list (``--json``), as a table,
or to ``--out FILE.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from runtime.cli.common import (
    CLIError,
    _json_safe,
    positive_int,
    print_json,
    user_errors,
    warn,
    write,
)
from runtime.cli.options import (
    deletion,
    deletion_sets,
    requested_tests,
    sketch_and_tests,
    training_options,
)
from runtime.sources import source_class

__all__ = ["add_batch_query", "add_batch_retrain", "run_batch_query", "run_batch_retrain"]


def add_batch_query(p: argparse.ArgumentParser) -> None:
    from runtime import estimators as E

    p.add_argument(
        "--estimator",
        metavar="NAME",
        help=f"answer with this estimator ({', '.join(E.names())}); auto picks per query the "
        "one `evaluate` found best for the nearest set size. With it (or --sets) the output "
        "is one record per (set, test input)",
    )
    p.add_argument(
        "--out", metavar="FILE.jsonl", help="with --sets: write the records to FILE, one a line"
    )


def add_batch_retrain(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("with --sets: where to run, where the results go")
    g.add_argument(
        "--workers",
        type=positive_int,
        metavar="W",
        help="local worker processes (default: the number of CPUs)",
    )
    g.add_argument(
        "--scheduler", metavar="ADDRESS", help="an existing Dask cluster, e.g. tcp://HOST:8786"
    )
    g.add_argument(
        "--out",
        metavar="FILE.jsonl",
        help="append each result to FILE as it is ready; a rerun retrains only missing sets",
    )


def records_json(records: list[dict[str, Any]]) -> str:
    """A JSON list with one record a line (strict JSON: NaN as null)."""
    if not records:
        return "[]"
    return "[\n" + ",\n".join(json.dumps(_json_safe(r)) for r in records) + "\n]"


def _write_jsonl(path: str, records: list[dict[str, Any]]) -> None:
    from runtime.store import atomic_write_bytes

    text = "".join(json.dumps(_json_safe(r)) + "\n" for r in records)
    write("records", path, lambda: atomic_write_bytes(path, text.encode()))


# ---------------------------------------------------------------- query
def run_batch_query(args: argparse.Namespace) -> int:
    with user_errors():
        from runtime.batch_query import query_sets
        from runtime.deletion_sets import DeletionSets
        from runtime.estimators import Options

        if args.hybrid is not None:
            raise CLIError(
                "--hybrid/--no-hybrid belong to a single query's detailed output: with --sets or "
                "--estimator, choose --estimator hybrid (or sketch)"
            )
        sk, source, tests = sketch_and_tests(args)
        if args.sets is not None:
            sets = deletion_sets(args, sk.num_docs)
        else:
            _, sel, _ = deletion(args, source, sk.docs())
            sets = DeletionSets.from_lists([sel], sk.num_docs, args.weight)
        res = query_sets(
            sk,
            tests,
            sets,
            args.estimator or "sketch",
            Options(args.degree, args.groups),
            warn=warn,
        )
    records = res.records()
    if args.out:
        _write_jsonl(args.out, records)
        summary = {
            "out": args.out,
            "records": len(records),
            "sets": len(sets),
            "tests": res.labels,
            "estimator": res.requested,
            "seconds": res.seconds,
        }
        if args.json:
            print_json(summary)
        else:
            print(
                f"answered {len(sets)} sets x {len(res.labels)} test inputs "
                f"({res.requested}) in {res.seconds:.3f} s after loading"
            )
        return 0
    if args.json:
        print(records_json(records))
        return 0
    print(f"{'set':>6} {'size':>5}  {'test input':<16} {'prediction':>28}  estimator")
    for r in records:
        se = "?" if r["stderr"] is None else f"{r['stderr']:.6f}"
        pred = "?" if r["prediction"] is None else f"{r['prediction']:.6f}"
        print(
            f"{r['set']:>6} {r['size']:>5}  {r['doc']:<16} {pred + ' ± ' + se:>28}  "
            f"{r['estimator']}"
        )
    return 0


# ---------------------------------------------------------------- retrain
def run_batch_retrain(args: argparse.Namespace) -> int:
    with user_errors():
        from runtime.batch_retrain import batch_retrain
        from runtime.parallel import default_workers

        source, tests = source_class(args.program).for_training(
            args.program, training_options(args, seed_only_inits=True), requested_tests(args)
        )
        tests = source.check_tests(tests)
        sets = deletion_sets(args, source.num_docs)
        workers = args.workers or default_workers()
        try:
            res = batch_retrain(source, sets, tests, args.out, workers, args.scheduler, warn)
        except KeyboardInterrupt:
            print(
                f"interrupted: finished sets are saved in {args.out}; rerun the same command "
                "to resume"
                if args.out
                else "interrupted (with --out FILE.jsonl finished sets are kept)",
                file=sys.stderr,
            )
            return 130
    records = [
        {
            "set": s,
            "doc": t.label,
            "loss": float(res.losses[s, d]),
            "size": int(sets.sizes[s]),
            "weight": float(sets.weights[s]),
        }
        for s in range(len(sets))
        for d, t in enumerate(tests)
    ]
    summary = {
        "sets": len(sets),
        "tests": [t.label for t in tests],
        "retrained": res.computed,
        "reused": res.reused,
        "seconds": res.seconds,
        "workers": None if args.scheduler else workers,
        "scheduler": args.scheduler,
        "out": args.out,
    }
    if args.json:
        if args.out:
            print_json(summary)
        else:
            print(records_json(records))
        return 0
    how = f"Dask scheduler {args.scheduler}" if args.scheduler else f"{workers} worker(s)"
    print(
        f"retrained {res.computed} of {len(sets)} sets ({res.reused} already in "
        f"{args.out}) in {res.seconds:.1f} s with {how}"
        if args.out
        else f"retrained {res.computed} sets in {res.seconds:.1f} s with {how}"
    )
    if not args.out:
        for r in records:
            print(f"  set {r['set']:>5} (size {r['size']}): {r['doc']!r} test loss {r['loss']:.6f}")
    return 0
