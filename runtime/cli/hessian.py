"""The ``hessian`` command: the second-order data of test inputs, stored beside a sketch.

What the ``second-order`` estimator reads (``runtime.second_order``): the
exact diagonal of H = d^2F/dw dw and its row sums H 1 (with ``--diagonal
windowed``, what ``second-order-windowed`` reads: the cheaper windowed diagonal,
``runtime.windowed_diagonal``), and with ``--doc-groups`` the groups' terms that
``third-order-groups`` reads (``runtime.group_terms``).  ``query`` and ``evaluate``
compute them when an estimator needs them; this command computes them ahead, on worker
processes, and says what they cost.
"""

from __future__ import annotations

import argparse

from runtime.cli.common import (
    Command,
    nonnegative_int,
    positive_int,
    print_json,
    user_errors,
    warn,
)
from runtime.cli.options import add_sketch_and_tests, sketch_and_tests
from runtime.windowed_diagonal import DEFAULT_SAMPLE, DEFAULT_WINDOW

__all__ = ["HESSIAN"]


def configure_hessian(p: argparse.ArgumentParser) -> None:
    add_sketch_and_tests(p)
    d = p.add_argument_group("which diagonal")
    d.add_argument("--diagonal", choices=("exact", "windowed"), default="exact",
                   help="exact: a series pass along each document's weight to the end of "
                   "training (about 4 training runs a document); windowed: passes WINDOW "
                   "steps long plus the exact diagonal of SAMPLE documents (default: exact)")
    d.add_argument("--window", type=positive_int, default=DEFAULT_WINDOW, metavar="STEPS",
                   help=f"windowed: steps each pass runs past its documents' (default "
                   f"{DEFAULT_WINDOW})")
    d.add_argument("--sample", type=nonnegative_int, default=DEFAULT_SAMPLE, metavar="DOCS",
                   help="windowed: documents whose exact diagonal sets the mean of what the "
                   f"windows miss (default {DEFAULT_SAMPLE})")
    d.add_argument("--doc-groups", metavar="SPEC",
                   help="also the terms of groups of documents that third-order-groups reads: "
                   "'letters' (microgpt: the documents holding each character) or a JSONL "
                   "file of index sets, one group a line ({\"delete\": [...]}); two "
                   "metagradients and two training runs a group")
    r = p.add_argument_group("where to run")
    r.add_argument("--workers", type=positive_int, metavar="W",
                   help="local worker processes for the diagonal's series passes "
                   "(default: the number of CPUs)")
    r.add_argument("--scheduler", metavar="ADDRESS",
                   help="run those passes on an existing Dask cluster")
    r.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="show a progress bar over the documents (default: when stderr is a "
                   "terminal)")
    p.add_argument("--json", action="store_true", help="print JSON on stdout")


def run_hessian(args: argparse.Namespace) -> int:
    import numpy as np

    with user_errors():
        from runtime.parallel import default_workers
        from runtime.second_order import Windowed, sketch_second_order

        sk, _, tests = sketch_and_tests(args)
        windowed = Windowed(args.window, args.sample) if args.diagonal == "windowed" else None
        workers = args.workers or default_workers()
        found = sketch_second_order(sk, tests, warn=warn, workers=workers,
                                    scheduler=args.scheduler, progress=args.progress,
                                    windowed=windowed)
        terms = {}
        if args.doc_groups:
            from runtime.group_terms import group_terms_data, read_groups
            from runtime.sources import sketch_source

            groups = read_groups(args.doc_groups, sketch_source(sk, full=True), sk.num_docs)
            terms = group_terms_data(sk, tests, groups, True, warn, workers, args.scheduler)
    out = []
    for t in tests:
        r = found[t.key]
        out.append(
            {
                "doc": t.label,
                "diagonal": args.diagonal,
                "seconds": r.seconds,
                "cost_training_runs": r.cost,
                "diagonal_sum": float(np.sum(r.diag)),
                "diagonal_max": float(np.max(np.abs(r.diag))),
                "row_sums_total": float(np.sum(r.rows)),
            }
        )
        if terms:
            g = terms[t.key]
            out[-1]["groups"] = {"count": len(g.members), "seconds": g.seconds,
                                 "cost_training_runs": g.cost,
                                 "retrained": g.anchors is not None}
    if args.json:
        print_json(out if len(out) > 1 else out[0])
        return 0
    for o in out:
        cost = "" if o["cost_training_runs"] is None else f" ({o['cost_training_runs']:.1f} runs)"
        print(f"test input {o['doc']!r}: second-order data stored beside {args.sketch!r}, "
              f"{o['seconds']:.3g} s{cost}; max |H_ii| {o['diagonal_max']:.3e}")
        if "groups" in o:
            g = o["groups"]
            runs = g["cost_training_runs"]
            runs = "" if runs is None else f" ({runs:.1f} runs)"
            print(f"  and the terms of {g['count']} groups, {g['seconds']:.3g} s{runs}")
    return 0


HESSIAN = Command(
    "hessian",
    "Second derivatives of a test output in the data weights (the second-order estimator's data).",
    configure_hessian,
    run_hessian,
)
