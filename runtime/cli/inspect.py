"""The ``inspect`` command: look at a circuit of a training program or of a traced function.

The op table, depth and FLOPs of a circuit (``circuitsketch.inspect``), its
GraphML / DOT / PNG exports, and with ``--generated`` the Numba source the
compiler emits for it.  The circuit comes from a program source (microgpt,
or a user program with --program FILE.py:FN) or from tracing a function
(--function MODULE:FN with --input shapes).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from runtime.cli.common import CLIError, Command, nonnegative_int, positive_int, user_errors, write
from runtime.cli.settings import (
    MODEL_OPTIONS,
    TRAIN_OPTIONS,
    add_model_options,
    add_train_options,
    given,
)
from runtime.sources import TrainingOptions, source_class
from runtime.sources.documents import SKIP_BLANK_OPTION

__all__ = ["INSPECT", "generated_source", "load_function", "parse_inputs", "parse_shape"]


def parse_shape(text: str) -> tuple[int, ...]:
    """'3x4' -> (3, 4), '5' -> (5,), 'scalar' or '' -> ()."""
    text = text.strip().lower()
    if text in ("", "scalar", "()"):
        return ()
    dims = []
    for part in text.split("x"):
        if not part.strip().isdigit() or int(part) < 1:
            raise CLIError(f"bad shape {text!r}: write dimensions like 3x4, or 'scalar'")
        dims.append(int(part))
    return tuple(dims)


def parse_inputs(specs: Sequence[str]) -> dict[str, tuple[tuple[int, ...], str]]:
    """['x=3x4,y=scalar', 'tokens=8:int'] -> {name: (shape, dtype)}."""
    out: dict[str, tuple[tuple[int, ...], str]] = {}
    for spec in specs:
        for item in filter(None, (s.strip() for s in spec.split(","))):
            name, eq, rest = item.partition("=")
            if not eq or not name.strip().isidentifier():
                raise CLIError(f"bad --input {item!r}: expected NAME=SHAPE[:DTYPE], e.g. x=3x4")
            shape_text, _, dtype = rest.partition(":")
            dtype = dtype.strip() or "float"
            if dtype not in ("float", "int", "bool"):
                raise CLIError(f"bad --input {item!r}: dtype must be float, int or bool")
            if name.strip() in out:
                raise CLIError(f"--input {name.strip()!r} given twice")
            out[name.strip()] = (parse_shape(shape_text), dtype)
    return out


def load_function(spec: str) -> Callable[..., Any]:
    """'pkg.module:fn' or 'path/to/file.py:fn' -> the function object."""
    import importlib
    import importlib.util

    target, sep, fn_name = spec.rpartition(":")
    if not sep or not target or not fn_name:
        raise CLIError(f"bad --function {spec!r}: expected MODULE:FUNCTION or FILE.py:FUNCTION")
    try:
        if target.endswith(".py") or os.path.sep in target or os.path.isfile(target):
            if not os.path.isfile(target):
                raise CLIError(f"--function: file {target!r} does not exist")
            mod_name = "_circuitsketch_user_" + os.path.splitext(os.path.basename(target))[0]
            mspec = importlib.util.spec_from_file_location(mod_name, target)
            if mspec is None or mspec.loader is None:
                raise CLIError(f"--function: cannot load {target!r} as a Python file")
            module = importlib.util.module_from_spec(mspec)
            mspec.loader.exec_module(module)
        else:
            sys.path.insert(0, os.getcwd())
            try:
                module = importlib.import_module(target)
            finally:
                sys.path.remove(os.getcwd())
    except CLIError:
        raise
    except Exception as e:  # the user's module failed to import: report it on one line
        raise CLIError(f"--function: cannot import {target!r}: {type(e).__name__}: {e}") from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise CLIError(f"--function: {target!r} has no function {fn_name!r}")
    return fn


def configure_inspect(p: argparse.ArgumentParser) -> None:
    src = p.add_argument_group("which circuit")
    src.add_argument(
        "--program",
        default=None,
        metavar="microgpt|FILE.py:FN",
        help="training program to build: microgpt (the default) or a user program, "
        "FN() in FILE returning a circuitsketch Program",
    )
    src.add_argument(
        "--circuit",
        choices=["step", "output"],
        default=None,
        help="the training-step circuit or the output (test loss) circuit (default: step)",
    )
    src.add_argument(
        "--length",
        type=positive_int,
        default=None,
        metavar="L",
        help="length bucket of the circuit (default: 8)",
    )
    src.add_argument(
        "--docs",
        metavar="FILE",
        default=None,
        help="training documents, one per line, read as compile reads them (default: first "
        "20 names of the shipped corpus)",
    )
    src.add_argument(
        SKIP_BLANK_OPTION,
        action="store_true",
        help="skip blank lines in --docs with a warning (default: a blank line is an error, "
        "as in compile)",
    )
    src.add_argument(
        "--function",
        metavar="MODULE:FN",
        default=None,
        help="instead of a program, trace FN from a module or a file.py",
    )
    src.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="NAME=SHAPE[:DTYPE]",
        help="inputs of --function, e.g. x=3x4,y=scalar,tokens=8:int (repeatable)",
    )
    add_model_options(p)
    add_train_options(p)
    out = p.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="print the summary as JSON")
    out.add_argument(
        "--generated",
        action="store_true",
        help="print the Numba source the compiler generates for the circuit "
        "(after its passes) instead of the summary",
    )
    out.add_argument(
        "--after",
        metavar="PASS",
        default=None,
        help="print what the compiler pass PASS made of the circuit (see --list-passes): "
        "the circuit, its fused loops, its instructions, its source or its module",
    )
    out.add_argument(
        "--list-passes", action="store_true", help="name the compiler's passes, in order"
    )
    out.add_argument(
        "--degree",
        type=nonnegative_int,
        default=1,
        metavar="K",
        help="with --generated or --after: 0 for the real trainer, >= 1 for series code "
        "(default 1)",
    )
    out.add_argument("--graphml", metavar="FILE", help="write the graph as GraphML")
    out.add_argument("--dot", metavar="FILE", help="write the graph as Graphviz DOT")
    out.add_argument("--png", metavar="FILE", help="draw the graph as a PNG picture")
    out.add_argument(
        "--coarse",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="export one node per scope instead of one per equation "
        "(default: GraphML/DOT per equation, PNG coarse above 60 nodes)",
    )


def function_circuit(spec: str, input_specs: Sequence[str]) -> tuple[Any, str]:
    """The circuit of FN traced on inputs of the given shapes, and a description."""
    import circuitsketch as cs

    fn = load_function(spec)
    inputs = parse_inputs(input_specs)
    try:
        c = cs.trace(fn, **{n: cs.Input(s, d) for n, (s, d) in inputs.items()})
    except Exception as e:  # any failure of the user's function is reported on one line
        raise CLIError(f"tracing {spec} failed: {type(e).__name__}: {e}") from None
    return c, f"traced {spec}"


def pipeline_build(args: argparse.Namespace, c: Any, target: tuple | None) -> Any:
    """The compiler's build of the inspected circuit at --degree: a program's step or
    output circuit as its compiled program builds it, or a traced function with every
    float input a series."""
    from compiler.compiled import program_build
    from compiler.function import circuit_build

    if target is not None:
        program, kind, key = target
        return program_build(program, args.degree, only=(kind, key))
    floats = [n for n, i in c.inputs.items() if c.nodes[i].dtype == "float"]
    return circuit_build(c, args.degree, floats if args.degree else ())


def generated_source(b: Any) -> str:
    """The Numba source the compiler emits for a build, after a line on its passes."""
    from compiler.pipeline import run

    run(b, until="emit")
    (u,) = b.units
    summary = u.act.summary(u.circuit)
    head = (
        f"# {len(u.built)} traced equations -> {len(u.circuit)} after the simplifying passes;"
        f"\n# activity: {summary['series']} series nodes, "
        f"{summary['order0_only_series']} series used only at order 0, {summary['real']} real\n"
    )
    return head + b.source


def list_passes() -> str:
    from compiler.pipeline import PASSES

    return "\n".join(f"{p.name:12s} {p.doc}" for p in PASSES)


def run_inspect(args: argparse.Namespace) -> int:
    from circuitsketch import inspect as insp

    if args.list_passes:
        print(list_passes())
        return 0
    if args.function is not None:
        clash = [
            f"--{k}"
            for k in ("program", "circuit", "length", "docs")
            if getattr(args, k) is not None
        ]
        clash += [s.flag for s in (*MODEL_OPTIONS, *TRAIN_OPTIONS)
                  if getattr(args, s.key) is not None]
        clash += [SKIP_BLANK_OPTION] if args.skip_blank_lines else []
        if clash:
            raise CLIError(f"{', '.join(clash)} cannot be combined with --function")
        c, source = function_circuit(args.function, args.input)
        target = None
    else:
        if args.input:
            raise CLIError("--input only applies to --function")
        kind = args.circuit or "step"
        with user_errors():
            options = TrainingOptions(skip_blank_lines=args.skip_blank_lines,
                                      model_config=given(args, MODEL_OPTIONS),
                                      train_config=given(args, TRAIN_OPTIONS))
            program, key, source = source_class(args.program).inspect_circuit(
                args.program, kind, args.length, args.docs, options
            )
        c = (program.step_circuits if kind == "step" else program.output_circuits)[key]
        target = (program, kind, key)
    if args.generated:
        print(generated_source(pipeline_build(args, c, target)))
        return 0
    if args.after is not None:
        from compiler.pipeline import PASS_NAMES, describe, run

        if args.after not in PASS_NAMES:
            names = ", ".join(PASS_NAMES)
            raise CLIError(f"--after {args.after!r}: no such pass (passes: {names})")
        b = pipeline_build(args, c, target)
        with user_errors():
            run(b, until=args.after)
        print(describe(b, args.after), end="")
        return 0
    summ = insp.summary(c)
    if args.json:
        print(json.dumps({"source": source, **summ}, indent=2))
    else:
        print(source)
        print()
        print(insp.format_summary(summ))
    coarse = bool(args.coarse)
    if args.graphml:
        write("GraphML", args.graphml, lambda: insp.write_graphml(c, args.graphml, coarse))
    if args.dot:
        write("DOT", args.dot, lambda: insp.write_dot(c, args.dot, coarse))
    if args.png:
        write("PNG", args.png, lambda: insp.write_png(c, args.png, args.coarse))
    return 0


INSPECT = Command(
    "inspect",
    "Print the op table and cost of a circuit; export it as GraphML, DOT or PNG.",
    configure_inspect,
    run_inspect,
)
