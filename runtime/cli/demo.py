"""The ``demo`` command: the README's main job end to end (``runtime.demo``)."""

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
from runtime.cli.options import add_json
from runtime.cli.settings import (
    MODEL_OPTIONS,
    TRAIN_OPTIONS,
    add_model_options,
    add_train_options,
    given,
)

__all__ = ["DEMO"]


def configure_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--out",
        metavar="DIR",
        help="keep the documents and the sketch in DIR (default: a temporary directory)",
    )
    p.add_argument(
        "--num-docs",
        type=positive_int,
        default=None,
        metavar="N",
        help="training names (default 250)",
    )
    p.add_argument(
        "--directions",
        type=count_of("directions"),
        default=None,
        metavar="M",
        help="random directions of the sketch (default 32)",
    )
    p.add_argument(
        "--degree", type=series_degree, default=None, metavar="K", help="series degree (default 3)"
    )
    p.add_argument(
        "--letter", default=None, help="delete the names containing this letter (default f)"
    )
    p.add_argument(
        "--test",
        default=None,
        metavar="NAME",
        help="test name whose loss is predicted (default fiona)",
    )
    p.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        metavar="W",
        help="local worker processes of the sketch (default 1: the demo's sketch is "
        "small, computed in this process while a second process retrains)",
    )
    plot = p.add_mutually_exclusive_group()
    plot.add_argument(
        "--plot",
        metavar="FILE.png",
        default=None,
        help="where to draw the picture (default: circuitsketch-demo.png in --out DIR, "
        "else in the working directory)",
    )
    plot.add_argument("--no-plot", action="store_true", help="draw no picture")
    p.add_argument(
        "--seed",
        type=nonnegative_int,
        default=0,
        metavar="S",
        help="seed of the initial parameters and of the directions (default 0)",
    )
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar (default: when stderr is a terminal)",
    )
    p.add_argument("--epochs", type=count_of("epochs"), default=None, metavar="E",
                   help="passes over the names (default 1)")
    add_model_options(p)
    add_train_options(p)
    add_json(p)


def run_demo(args: argparse.Namespace) -> int:
    with user_errors():
        from runtime import demo

        result = demo.run(
            out=args.out,
            num_docs=args.num_docs,
            directions=args.directions,
            degree=args.degree,
            letter=args.letter,
            test=args.test,
            workers=args.workers,
            seed=args.seed,
            progress=args.progress,
            log=None if args.json else (lambda s: print(s, file=sys.stderr)),
            warn=warn,
            model_config=given(args, MODEL_OPTIONS),
            train_config=given(args, TRAIN_OPTIONS),
            epochs=args.epochs,
            plot="" if args.no_plot else args.plot,
        )
    if args.json:
        print_json(result)
    else:
        print(demo.format_result(result))
    return 0


DEMO = Command(
    "demo",
    "End to end: sketch a few hundred names, predict a deletion, retrain, compare.",
    configure_demo,
    run_demo,
)
