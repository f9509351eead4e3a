"""The ``evaluate`` command: every estimator against exact retraining, with scores and costs."""

from __future__ import annotations

import argparse
import sys

from runtime.cli.common import (
    Command,
    count_of,
    nonnegative_int,
    positive_int,
    print_json,
    series_degree,
    user_errors,
    warn,
)
from runtime.cli.options import add_json, add_sketch_and_tests, sketch_and_tests

__all__ = ["EVALUATE"]


def sizes_list(text: str) -> list[int]:
    """'1,10,100' -> [1, 10, 100] (each >= 1, no repeats)."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        try:
            z = int(part)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected sizes like 1,10,100, got {text!r}"
            ) from None
        if z < 1:
            raise argparse.ArgumentTypeError(f"a deletion set size must be >= 1, got {z}")
        if z in out:
            raise argparse.ArgumentTypeError(f"size {z} is given twice")
        out.append(z)
    return out


def configure_evaluate(p: argparse.ArgumentParser) -> None:
    add_sketch_and_tests(p)
    g = p.add_argument_group("deletion sets (exactly one way)")
    x = g.add_mutually_exclusive_group(required=True)
    x.add_argument(
        "--sizes",
        type=sizes_list,
        metavar="Z1,Z2,..",
        help="sample random sets of these sizes (weight 1)",
    )
    x.add_argument(
        "--sets",
        metavar="FILE.jsonl",
        help='read them: {"delete": [...], "weight": w} a line (LDS per size)',
    )
    g.add_argument(
        "--sets-per-size",
        type=count_of("sets per size"),
        default=50,
        metavar="S",
        help="sets sampled per size (default 50)",
    )
    g.add_argument(
        "--seed",
        type=nonnegative_int,
        default=0,
        metavar="S",
        help="seed of the sampled sets and of the bootstrap (default 0)",
    )
    e = p.add_argument_group("estimators")
    e.add_argument(
        "--estimators",
        metavar="A,B,..",
        help="the estimators to compare (default: sketch, first-order, hybrid; second-order "
        "is costly and only on request; auto, once findings exist, is judged on these sets "
        "and leaves the findings as they are)",
    )
    e.add_argument(
        "--degree",
        type=series_degree,
        metavar="k",
        help="use terms up to degree k (default: all of K)",
    )
    e.add_argument("--groups", type=positive_int, metavar="G", help="median-of-means groups")
    e.add_argument(
        "--bootstrap",
        type=nonnegative_int,
        default=1000,
        metavar="B",
        help="bootstrap resamples of the LDS interval (default 1000; 0: none)",
    )
    r = p.add_argument_group("where to run, where the results go")
    r.add_argument(
        "--out",
        metavar="DIR",
        help="sets, retraining results, predictions, report and figure "
        "(default SKETCH/evaluate); a rerun resumes the retraining",
    )
    r.add_argument(
        "--workers",
        type=positive_int,
        metavar="W",
        help="local worker processes for retraining (default: the number of CPUs)",
    )
    r.add_argument("--scheduler", metavar="ADDRESS", help="retrain on an existing Dask cluster")
    r.add_argument(
        "--findings",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="store the ranking per size beside the sketch for --estimator auto (default: yes)",
    )
    r.add_argument(
        "--figure",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="draw DIR/evaluation.png (default: yes)",
    )
    add_json(p)


def _fmt(v: float | None, spec: str = ".3f") -> str:
    return "n/a" if v is None else format(v, spec)


def run_evaluate(args: argparse.Namespace) -> int:
    with user_errors():
        from runtime.deletion_sets import read_sets
        from runtime.estimators import Options
        from runtime.evaluate import evaluate
        from runtime.parallel import default_workers

        sk, _, tests = sketch_and_tests(args)
        names = None
        if args.estimators:
            names = [n.strip() for n in args.estimators.split(",") if n.strip()]
        sets = None if args.sets is None else read_sets(args.sets, sk.num_docs)
        try:
            report = evaluate(
                sk,
                tests,
                sets,
                args.sizes,
                args.sets_per_size,
                args.seed,
                names,
                args.out,
                args.workers or default_workers(),
                args.scheduler,
                Options(args.degree, args.groups),
                args.bootstrap,
                args.findings,
                args.figure,
                warn,
            )
        except KeyboardInterrupt:
            print(
                "interrupted: finished retrainings are saved; rerun the same command to resume",
                file=sys.stderr,
            )
            return 130
    if args.json:
        print_json(report)
        return 0
    c = report["costs"]
    print(
        f"sketch {report['sketch']}: N = {report['num_docs']}, T = {report['steps']}, "
        f"K = {report['degree']}, M = {report['directions']}; test inputs: "
        f"{', '.join(report['tests'])}"
    )
    r = report["retrain"]
    print(
        f"{report['sets']['count']} deletion sets: retrained {r['computed']} "
        f"({r['reused']} already done) in {r['seconds']:.1f} s"
    )
    fo = c["first_order_runs_per_test"]
    print(
        f"cost in training runs ({c['train_seconds'] * 1e3:.3g} ms each): sketch "
        f"{c['sketch_runs']:.1f} ({c['sketch_direction_runs']:.1f} per direction), "
        f"metagradient {_fmt(fo, '.1f')} per test input, retraining "
        f"{c['retrain_runs_per_set']:.2f} per set"
    )
    print()
    print(
        f"{'size':>6}  {'estimator':<12} {'LDS':>6} {'[95% interval]':>17} {'MAE':>10} "
        f"{'2-s.e. cov.':>11} {'cost, runs':>11}"
    )
    for z in map(str, report["sets"]["sizes"]):
        for name in report["ranking"][z]:
            est = report["estimators"][name]
            s = est["by_size"][z]
            lo, hi = s["lds_ci"]
            total = est["cost"]["total_runs"]
            print(
                f"{z:>6}  {name:<12} {_fmt(s['lds'], '.3f'):>6} "
                f"{'[' + _fmt(lo, '.2f') + ', ' + _fmt(hi, '.2f') + ']':>17} "
                f"{s['mae']:>10.4g} {s['coverage']:>11.0%} {_fmt(total, '.1f'):>11}"
            )
    if report.get("figure"):
        print(f"\nfigure: {report['figure']}")
    if report.get("findings"):
        print(f"findings for --estimator auto: {report['findings']}")
    return 0


EVALUATE = Command(
    "evaluate",
    "Compare every estimator with exact retraining on random or given deletion sets: LDS, "
    "error, coverage and cost.",
    configure_evaluate,
    run_evaluate,
)
