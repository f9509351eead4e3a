"""Option groups several commands share, and what they become in the runtime.

A training run (--docs / --program / --steps / --init / --seed), test inputs
(--doc / --test-npz / --test-index), a sketch's program (--program) and a
deletion set (--delete-...) are read here into the program-source
interface's terms (``runtime.sources``); which kind of program they name is
the source's business, not the command's.
"""

from __future__ import annotations

import argparse

import numpy as np

from runtime.cli.common import count_of, nonnegative_int, positive_int, unit_float
from runtime.cli.settings import (
    MODEL_OPTIONS,
    TRAIN_OPTIONS,
    add_model_options,
    add_train_options,
    check_sketch_settings,
    given,
)
from runtime.deletion_sets import DeletionSets
from runtime.sources import (
    ProgramSource,
    TestInput,
    TestRequest,
    TrainingOptions,
    sketch_source,
)
from runtime.store import Sketch

__all__ = [
    "add_deletion",
    "add_json",
    "add_sketch_and_tests",
    "add_sketch_program",
    "add_test_inputs",
    "add_training",
    "deletion",
    "deletion_sets",
    "requested_tests",
    "sketch_and_tests",
    "training_options",
]


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")


def add_training(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training run (microgpt with --docs, or a user program)")
    g.add_argument(
        "--docs",
        metavar="FILE",
        help="microgpt's training documents, one per line (document i is line i + 1)",
    )
    g.add_argument(
        "--skip-blank-lines",
        action="store_true",
        help="skip blank lines in --docs with a warning (default: a blank line is an error, "
        "since indices would no longer follow line numbers)",
    )
    g.add_argument(
        "--program",
        metavar="FILE.py:FN",
        help="a user program: FN() in FILE returns a circuitsketch Program (see docs/api.md); "
        "its documents, steps and initial parameters are its own",
    )
    g.add_argument(
        "--steps",
        type=positive_int,
        metavar="T",
        help="training steps (default: the number of documents)",
    )
    g.add_argument(
        "--init", metavar="INIT.npz", help="initial parameters (default: drawn from --seed)"
    )
    g.add_argument(
        "--seed",
        type=nonnegative_int,
        default=0,
        metavar="S",
        help="seed of the initial parameters (without --init) and of the directions (default 0)",
    )
    g.add_argument(
        "--epochs",
        type=count_of("epochs"),
        metavar="E",
        help="train E passes over the documents (instead of --steps)",
    )
    add_model_options(p)
    add_train_options(p)


def training_options(args: argparse.Namespace, seed_only_inits: bool = False) -> TrainingOptions:
    """The training run of `add_training`'s options (`seed_only_inits`: retrain's --seed)."""
    return TrainingOptions(
        docs=args.docs,
        init=args.init,
        steps=args.steps,
        seed=0 if args.seed is None else args.seed,
        seed_only_inits=seed_only_inits,
        skip_blank_lines=getattr(args, "skip_blank_lines", False),
        model_config=given(args, MODEL_OPTIONS),
        train_config=given(args, TRAIN_OPTIONS),
        epochs=args.epochs,
    )


def add_sketch_and_tests(p: argparse.ArgumentParser, many: bool = True) -> None:
    """SKETCH, its test inputs and --program: what `sketch_and_tests` reads."""
    p.add_argument("sketch", metavar="SKETCH", help="sketch directory made by compile")
    add_test_inputs(p, many)
    add_sketch_program(p)
    add_model_options(p, check=True)


def add_sketch_program(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--program",
        metavar="FILE.py:FN",
        help="a user program's sketch: where its file is now (default: the path recorded "
        "when it was compiled; a file whose content changed is refused)",
    )


def sketch_and_tests(
    args: argparse.Namespace, many: bool = True
) -> tuple[Sketch, ProgramSource, list[TestInput]]:
    """The SKETCH argument opened, its program source, and its checked test inputs.

    --program FILE.py:FN says where a user program's file is now.
    """
    sk = Sketch.open(args.sketch)
    check_sketch_settings(args, sk)
    source = sketch_source(sk, args.program)
    return sk, source, source.check_tests(source.test_inputs(requested_tests(args, many)))


def add_deletion(p: argparse.ArgumentParser, sets: bool = False) -> None:
    """The --delete-... options (exactly one); with `sets`, --sets FILE.jsonl is a fourth."""
    g = p.add_argument_group("documents to delete (exactly one)")
    x = g.add_mutually_exclusive_group(required=True)
    x.add_argument(
        "--delete-indices", metavar="I,J,..", help="0-based indices, ranges like 3-7 allowed"
    )
    x.add_argument(
        "--delete-file",
        metavar="F",
        help="a file of indices, or of document texts (every equal training document is deleted)",
    )
    x.add_argument("--delete-contains", metavar="SUBSTR", help="every document containing SUBSTR")
    if sets:
        x.add_argument(
            "--sets",
            metavar="FILE.jsonl",
            help='many deletion sets, one JSON object a line: {"delete": [3, 17], "weight": 1.0} '
            "(weight optional, default 1); answered all at once",
        )
    g.add_argument(
        "--weight",
        type=unit_float,
        default=None,
        metavar="W",
        help="down-weight in [0, 1] given to the selected documents (default 1: deleted; "
        "a --sets line has its own)",
    )


def deletion(
    args: argparse.Namespace, source: ProgramSource, docs: list[str]
) -> tuple[np.ndarray, list[int], str]:
    """(weights, selected indices, description) of the --delete-... options over `docs`.

    Sets ``args.weight`` to the weight used (1 when --weight is not given).
    """
    from runtime.query import deletion_weights

    if args.weight is None:
        args.weight = 1.0
    return deletion_weights(
        docs,
        indices=args.delete_indices,
        file=args.delete_file,
        contains=args.delete_contains,
        weight=args.weight,
        text_docs=source.text_documents,
    )


def deletion_sets(args: argparse.Namespace, num_docs: int) -> DeletionSets:
    """The --sets FILE's deletion sets (ValueError naming the file and line)."""
    from runtime.deletion_sets import read_sets

    if args.weight is not None:
        raise ValueError('--weight applies to --delete-...; each --sets line has its own "weight"')
    return read_sets(args.sets, num_docs)


def add_test_inputs(p: argparse.ArgumentParser, many: bool = True) -> None:
    rep = " (repeatable)" if many else ""
    g = p.add_argument_group(
        "test input (microgpt: --doc; a user program: --test-npz / --test-index)"
    )
    g.add_argument(
        "--doc",
        action="append",  # also when one is taken: a second is refused, not dropped
        metavar="TEXT",
        help="microgpt test document" + rep,
    )
    g.add_argument(
        "--test-npz",
        dest="test_arrays",
        action="append",
        type=lambda text: ("npz", text),
        metavar="FILE.npz",
        help="a user program's test input: arrays named and shaped like a training "
        "document's" + rep,
    )
    g.add_argument(
        "--test-index",
        dest="test_arrays",
        action="append",
        type=lambda text: ("index", nonnegative_int(text)),
        metavar="I",
        help="a user program's test input: the arrays of training document I" + rep,
    )


def requested_tests(args: argparse.Namespace, many: bool = True) -> TestRequest:
    """The test inputs `add_test_inputs`'s options give, for the source to read."""
    return TestRequest(tuple(args.doc or ()), tuple(args.test_arrays or ()), many)
