"""The ``circuitsketch`` command line.

Subcommands live in one table, ``COMMANDS``: each is a ``Command`` holding a
function that adds its options to an argparse parser and a function that runs
it; ``@command(...)`` registers one.  To add a subcommand, write those two
functions next to the existing ones and decorate the runner.

Heavy modules (the models, networkx, matplotlib, sympy) are imported inside the
runners so that ``import circuitsketch.cli`` and ``circuitsketch --help`` stay
fast.  A user error (bad option value, missing file, a function that does not
trace) prints one line ``error: ...`` on stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["COMMANDS", "CLIError", "Command", "build_parser", "command", "main"]

PROG = "circuitsketch"


class CLIError(Exception):
    """A user error: reported as one ``error: ...`` line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors raise CLIError instead of printing usage and exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise CLIError(message)


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: dict[str, Command] = {}


def command(
    name: str, help: str, configure: Callable[[argparse.ArgumentParser], None]
) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    """Register the decorated function as subcommand `name` with options from `configure`."""

    def register(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        if name in COMMANDS:
            raise ValueError(f"subcommand {name!r} registered twice")
        COMMANDS[name] = Command(name, help, configure, run)
        return run

    return register


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subparser per registered command."""
    parser = _Parser(
        prog=PROG,
        description="Compile training programs to arithmetic circuits and look at them.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for cmd in COMMANDS.values():
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        cmd.configure(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 user error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
        if args.command is None:
            parser.print_help(sys.stderr)
            raise CLIError(f"no command given (choose from {', '.join(COMMANDS)})")
        return COMMANDS[args.command].run(args)
    except CLIError as e:
        message = " ".join(str(e).split())  # one line, whatever the message holds
        print(f"error: {message}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # stdout closed early (e.g. piped into head): not our error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # keep the interpreter's final flush quiet
        return 1
    except SystemExit as e:  # --help and --version exit through argparse
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)


# ---------------------------------------------------------------- shared helpers
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


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


def _write(what: str, path: str, writer: Callable[[], None]) -> None:
    try:
        writer()
    except OSError as e:
        raise CLIError(f"cannot write {what} file {path!r}: {e.strerror or e}") from None
    print(f"wrote {what} to {path}", file=sys.stderr)


# ---------------------------------------------------------------- inspect
def _configure_inspect(p: argparse.ArgumentParser) -> None:
    src = p.add_argument_group("which circuit")
    src.add_argument(
        "--program",
        choices=["microgpt"],
        default=None,
        help="training program to build (default: microgpt)",
    )
    src.add_argument(
        "--circuit",
        choices=["step", "output"],
        default=None,
        help="the training-step circuit or the output (test loss) circuit (default: step)",
    )
    src.add_argument(
        "--length",
        type=_positive_int,
        default=None,
        metavar="L",
        help="length bucket of the circuit (default: 8)",
    )
    src.add_argument(
        "--docs",
        metavar="FILE",
        default=None,
        help="training documents, one per line (default: first 20 names of the shipped corpus)",
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
    out = p.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="print the summary as JSON")
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


def load_program_circuit(
    program: str = "microgpt",
    circuit: str = "step",
    length: int = 8,
    docs_file: str | None = None,
) -> tuple[Any, str]:
    """Build a shipped program and return (circuit, description); CLIError on bad values."""
    if program != "microgpt":
        raise CLIError(f"unknown program {program!r} (choose from microgpt)")
    from circuitsketch.models import microgpt

    try:
        if docs_file is None:
            docs = microgpt.read_docs(microgpt.corpus_path())[:20]
        else:
            docs = microgpt.read_docs(docs_file)
        prog = microgpt.build(docs)
    except (ValueError, OSError) as e:
        raise CLIError(str(e)) from None
    buckets = tuple(prog.meta.get("buckets", sorted(prog.output_circuits)))
    table = prog.step_circuits if circuit == "step" else prog.output_circuits
    if length not in buckets:
        raise CLIError(
            f"--length {length}: microgpt has length buckets {', '.join(map(str, buckets))}"
        )
    if length not in table:
        raise CLIError(
            f"--length {length}: no training document falls in that bucket, so "
            f"there is no step circuit for it (have {', '.join(map(str, table))})"
        )
    return table[length], f"{program} {circuit} circuit, length bucket {length}, {len(docs)} docs"


def _function_circuit(spec: str, input_specs: Sequence[str]) -> tuple[Any, str]:
    import circuitsketch as cs

    fn = load_function(spec)
    inputs = parse_inputs(input_specs)
    try:
        c = cs.trace(fn, **{n: cs.Input(s, d) for n, (s, d) in inputs.items()})
    except Exception as e:  # any failure of the user's function is reported on one line
        raise CLIError(f"tracing {spec} failed: {type(e).__name__}: {e}") from None
    return c, f"traced {spec}"


@command(
    "inspect",
    "Print the op table and cost of a circuit; export it as GraphML, DOT or PNG.",
    _configure_inspect,
)
def cmd_inspect(args: argparse.Namespace) -> int:
    from circuitsketch import inspect as insp

    if args.function is not None:
        clash = [
            f"--{k}"
            for k in ("program", "circuit", "length", "docs")
            if getattr(args, k) is not None
        ]
        if clash:
            raise CLIError(f"{', '.join(clash)} cannot be combined with --function")
        c, source = _function_circuit(args.function, args.input)
    else:
        if args.input:
            raise CLIError("--input only applies to --function")
        c, source = load_program_circuit(
            args.program or "microgpt", args.circuit or "step", args.length or 8, args.docs
        )
    summ = insp.summary(c)
    if args.json:
        print(json.dumps({"source": source, **summ}, indent=2))
    else:
        print(source)
        print()
        print(insp.format_summary(summ))
    coarse = bool(args.coarse)
    if args.graphml:
        _write("GraphML", args.graphml, lambda: insp.write_graphml(c, args.graphml, coarse))
    if args.dot:
        _write("DOT", args.dot, lambda: insp.write_dot(c, args.dot, coarse))
    if args.png:
        _write("PNG", args.png, lambda: insp.write_png(c, args.png, args.coarse))
    return 0
