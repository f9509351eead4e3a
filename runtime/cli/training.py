"""Commands that train: ``retrain`` (exact ground truth) and ``metagrad`` (dF/dw).

Both take a training run (microgpt's --docs or a user's --program, read by
its program source) and test inputs; ``metagrad`` can instead take a SKETCH
and store its results beside it.
"""

from __future__ import annotations

import argparse
import sys

from runtime.checkpoints import SCHEDULES
from runtime.cli.common import (
    CLIError,
    Command,
    nonnegative_int,
    one_or_list,
    print_json,
    user_errors,
    warn,
    write,
)
from runtime.cli.options import (
    add_deletion,
    add_json,
    add_test_inputs,
    add_training,
    deletion,
    requested_tests,
    sketch_and_tests,
    training_options,
)
from runtime.cli.sets import add_batch_retrain, run_batch_retrain
from runtime.cli.settings import TRAIN_OPTIONS
from runtime.sources import source_class
from runtime.spec import build_program

__all__ = ["METAGRAD", "RETRAIN"]


def configure_retrain(p: argparse.ArgumentParser) -> None:
    add_training(p)
    add_deletion(p, sets=True)
    add_test_inputs(p)
    add_batch_retrain(p)
    add_json(p)


def run_retrain(args: argparse.Namespace) -> int:
    import time

    if args.sets is not None:
        return run_batch_retrain(args)
    given = [f"--{k}" for k in ("workers", "scheduler", "out") if getattr(args, k) is not None]
    if given:
        raise CLIError(f"{', '.join(given)} apply to --sets (many deletion sets)")

    with user_errors():
        from runtime.query import counted
        from runtime.retrain import retrain

        source, tests = source_class(args.program).for_training(
            args.program, training_options(args, seed_only_inits=True), requested_tests(args)
        )
        w, sel, what = deletion(args, source, list(source.docs))
        t0 = time.perf_counter()
        losses, _ = retrain(source, w, tests)
        seconds = time.perf_counter() - t0
    results = [
        {
            "doc": t.label,
            "loss": v,
            "n_deleted": len(sel),
            "weight": args.weight,
            "steps": source.steps,
        }
        for t, v in zip(tests, losses, strict=True)
    ]
    if args.json:
        print_json(one_or_list(results))
        return 0
    print(
        f"retrained {source.steps} steps on {source.num_docs} docs without "
        f"{counted(len(sel), what)} "
        f"(weight {args.weight:g}) in {seconds:.1f} s"
    )
    for r in results:
        print(f"  {r['doc']!r}: test loss {r['loss']:.6f}")
    return 0


RETRAIN = Command(
    "retrain",
    "Exact ground truth: compiled real training without (or down-weighting) some documents.",
    configure_retrain,
    run_retrain,
)


# ---------------------------------------------------------------- metagrad
def configure_metagrad(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "sketch",
        nargs="?",
        metavar="SKETCH",
        help="a sketch directory: use its training run, and store g beside it "
        "(SKETCH/metagrad; computed once per test input, then read back); with a user "
        "program's sketch, --program FILE.py:FN says where its file is now",
    )
    add_training(p)
    p.set_defaults(seed=None)
    add_test_inputs(p)
    p.add_argument(
        "--out", metavar="FILE.npy", help="write g: (N,) for one test input, (Q, N) for several"
    )
    p.add_argument(
        "--top",
        type=nonnegative_int,
        default=10,
        metavar="N",
        help="show the N documents with the largest |g_i| (0: all; default 10)",
    )
    p.add_argument(
        "--recompute",
        action="store_true",
        help="with SKETCH: compute again and overwrite what is stored",
    )
    p.add_argument(
        "--checkpoint-schedule",
        choices=SCHEDULES,
        default=None,
        help="how forward states are kept for the reverse sweep: sqrt (about sqrt(T) kept "
        "states and a buffer of about sqrt(T) steps, one more forward pass; the default), "
        "binomial (revolve: the fewest recomputations under --memory-budget; the default "
        "with a budget) or tree (a k-ary tree of kept states, as MAGIC's REPLAY)",
    )
    p.add_argument(
        "--memory-budget",
        type=memory_size,
        default=None,
        metavar="SIZE",
        help="bytes for the sweep's arrays (kept states, leaf buffers, the run's tables), "
        "e.g. 2GB or 500MiB; picks the number of kept states and the leaf length",
    )
    p.add_argument(
        "--threads",
        type=int,
        choices=(1, 2),
        default=1,
        help="2: recompute forward states on a second thread beside the reverse steps "
        "(two leaf buffers)",
    )
    p.add_argument(
        "--json", action="store_true", help="print JSON on stdout, with the full vector g"
    )


def memory_size(text: str) -> int:
    from runtime.checkpoints import parse_bytes

    try:
        return parse_bytes(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _announce(plan: dict) -> None:
    print(f"metagrad: {describe_plan(plan)}", file=sys.stderr, flush=True)


def describe_plan(plan: dict) -> str:
    """One line: schedule, leaves, kept states, forward passes, memory estimate."""
    extra = f", arity {plan['arity']}" if "arity" in plan else ""
    threads = ", 2 threads" if plan.get("threads", 1) > 1 else ""
    return (
        f"{plan['schedule']} checkpoints{extra}: {plan['leaves']} leaves of <= "
        f"{plan['leaf_steps']} steps, {plan['checkpoints']} kept states, "
        f"{plan['forward_passes']:.2f} forward passes, memory estimate "
        f"{plan['memory_estimate_bytes'] / 1e6:.3g} MB{threads}"
    )


def run_metagrad(args: argparse.Namespace) -> int:
    import numpy as np

    with user_errors():
        from runtime.metagrad import SweepOptions, compute_metagradients, sketch_metagradients

        options = SweepOptions(args.checkpoint_schedule, args.memory_budget, args.threads)
        announce = None if args.json else _announce

        if args.sketch is not None:
            clash = [
                f"--{k}" for k in ("docs", "init", "steps", "seed", "epochs")
                if getattr(args, k) is not None
            ]
            clash += [s.flag for s in TRAIN_OPTIONS if getattr(args, s.key) is not None]
            if clash:
                raise CLIError(
                    f"{', '.join(clash)} cannot be combined with SKETCH: the metagradient is "
                    "taken for the sketch's own training run"
                )
            sk, _, tests = sketch_and_tests(args)
            stored = sketch_metagradients(
                sk, tests, recompute=args.recompute, warn=warn, options=options, announce=announce
            )
            results = [stored[t.key] for t in tests]
            docs = sk.docs()
        else:
            if args.recompute:
                raise CLIError("--recompute applies to a SKETCH's stored metagradients")
            source, tests = source_class(args.program).for_training(
                args.program, training_options(args), requested_tests(args)
            )
            tests = source.check_tests(tests)
            results = compute_metagradients(
                build_program(source), tests, options=options, announce=announce
            )
            docs = list(source.docs)
    if args.out:
        arr = np.stack([r.g for r in results]) if len(results) > 1 else results[0].g

        def save() -> None:
            with open(args.out, "wb") as f:
                np.save(f, arr, allow_pickle=False)

        write("metagradient", args.out, save)
    out = []
    for r in results:
        order = np.argsort(-np.abs(r.g), kind="stable")
        if args.top:
            order = order[: args.top]
        out.append(
            {
                "doc": r.label,
                "num_docs": len(docs),
                "computed": r.computed,
                "seconds": r.seconds,
                "train_seconds": r.train_seconds,
                "setup_seconds": r.setup_seconds,
                "cost_training_runs": r.cost,
                "sweep": r.info.get("plan"),
                "tests_in_sweep": r.info.get("tests_in_sweep"),
                "peak_rss_bytes": r.info.get("peak_rss_bytes"),
                "stored": r.path,
                "top": [{"index": int(i), "doc": docs[i], "g": float(r.g[i])} for i in order],
                "metagradient": [float(v) for v in r.g],
            }
        )
    if args.json:
        print_json(one_or_list(out))
        return 0
    for r, o in zip(results, out, strict=True):
        print(f"test document {r.label!r}: metagradient dF/dw over {len(docs)} training documents")
        n = r.tests_in_sweep
        cost = "" if r.cost is None else f" = {r.cost * n:.1f} training runs" + (
            f", {r.cost:.1f} per test input of the {n} it served" if n > 1 else "")
        run = f"one training run {r.train_seconds:.3g} s" if r.train_seconds else ""
        setup = (
            f"; once: compiled forward and reverse steps {r.setup_seconds:.2f} s"
            if r.setup_seconds is not None
            else ""
        )
        plan = r.info.get("plan")
        if plan:
            setup += f"; {describe_plan(plan)}"
        if r.computed:
            print(f"  computed in {r.seconds:.3g} s{cost} ({run}{setup})")
        else:
            print(f"  read from {r.path} (computed earlier in {r.seconds:.3g} s{cost})")
        if r.computed and r.path:
            print(f"  stored in {r.path}")
        print("  g_i ~ change of the test loss when document i is deleted, to first order")
        print(f"  {'index':>6}  {'document':<16} {'g_i':>14}")
        for row in o["top"]:
            print(f"  {row['index']:>6}  {row['doc']:<16} {row['g']:>+14.6e}")
    return 0


METAGRAD = Command(
    "metagrad",
    "Exact first-order effects dF/dw of every training document (reverse mode through training).",
    configure_metagrad,
    run_metagrad,
)
