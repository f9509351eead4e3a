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
import contextlib
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
        description=(
            "Predict what a trained model would output if training documents were deleted, "
            "from a Taylor-series sketch of its training (and inspect the circuits behind it)."
        ),
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
    except KeyboardInterrupt:  # Ctrl-C outside a command that handles it itself
        print("interrupted", file=sys.stderr)
        return 130
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
    out.add_argument(
        "--generated",
        action="store_true",
        help="print the Numba source the compiler generates for the circuit "
        "(after its passes) instead of the summary",
    )
    out.add_argument(
        "--degree",
        type=_nonnegative_int_arg,
        default=1,
        metavar="K",
        help="with --generated: 0 for the real trainer, >= 1 for series code (default 1)",
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


def load_program_circuit(
    program: str = "microgpt",
    circuit: str = "step",
    length: int = 8,
    docs_file: str | None = None,
) -> tuple[Any, str]:
    """Build a shipped program and return (circuit, description); CLIError on bad values."""
    if program != "microgpt":
        return _user_program_circuit(program, circuit, length, docs_file)
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


def _user_program_circuit(
    ref: str, circuit: str, length: int | None, docs_file: str | None
) -> tuple[Any, str]:
    """The step or output circuit of a user program FILE.py:FN (its first document shape)."""
    from runtime.spec import ProgramError, UserProgramSpec, parse_program_ref

    if ":" not in ref:
        raise CLIError(f"--program {ref!r}: expected microgpt or FILE.py:FUNCTION")
    if docs_file is not None:
        raise CLIError("--docs applies to microgpt; a user program holds its own documents")
    if length is not None:
        raise CLIError("--length selects a microgpt length bucket; it does not apply to --program")
    try:
        path, fn = parse_program_ref(ref)
        prog = UserProgramSpec.load(path, fn).program()
    except ProgramError as e:
        raise CLIError(str(e)) from None
    table = prog.step_circuits if circuit == "step" else prog.output_circuits
    keys = sorted(table, key=repr)
    which = ""
    if len(keys) > 1:
        which = f", the first of {len(keys)} document shapes"
    return table[keys[0]], f"{ref} ({prog.name}) {circuit} circuit{which}, {prog.num_docs} docs"


def _function_circuit(spec: str, input_specs: Sequence[str]) -> tuple[Any, str]:
    import circuitsketch as cs

    fn = load_function(spec)
    inputs = parse_inputs(input_specs)
    try:
        c = cs.trace(fn, **{n: cs.Input(s, d) for n, (s, d) in inputs.items()})
    except Exception as e:  # any failure of the user's function is reported on one line
        raise CLIError(f"tracing {spec} failed: {type(e).__name__}: {e}") from None
    return c, f"traced {spec}"


def _nonnegative_int_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def generated_source(c: Any, degree: int) -> str:
    """The kernel-call source the compiler emits for c (series in every float input)."""
    from compiler.emit import Interface, Tables, emit_function
    from compiler.passes import activity, simplify

    s = simplify(c)
    floats = [n for n, i in s.inputs.items() if s.nodes[i].dtype == "float"]
    ints = [n for n, i in s.inputs.items() if s.nodes[i].dtype != "float"]
    layout: dict[str, tuple[int, int]] = {}
    off = 0
    for name in [*floats, *s.outputs]:
        nid = s.inputs[name] if name in s.inputs else s.outputs[name]
        layout.setdefault(name, (off, s.nodes[nid].size))
        off += s.nodes[nid].size
    ioff, int_layout = 0, {}
    for name in ints:
        int_layout[name] = (ioff, s.nodes[s.inputs[name]].size)
        ioff += s.nodes[s.inputs[name]].size
    # a step circuit's series are its state (inputs that are also outputs) and the
    # data weight; anything else traced is taken as series in every float input
    state = [n for n in floats if n in s.outputs or n == "w"] if "w" in s.inputs else floats
    act = activity(s, state if degree else [])
    summary = act.summary(s)
    head = (
        f"# {len(c)} traced equations -> {len(s)} after cse, constant folding, concat lowering"
        f" and dce;\n# activity: {summary['series']} series nodes, "
        f"{summary['order0_only_series']} series used only at order 0, {summary['real']} real\n"
    )
    src = emit_function(
        "circuit",
        s,
        act,
        Interface(layout, int_layout, {}, None),
        Tables(),
        degree >= 1,
        state_outputs="loss" not in s.outputs,
    )
    return head + src


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
        if _is_user_program(args.program):
            c, source = _user_program_circuit(
                args.program, args.circuit or "step", args.length, args.docs
            )
        else:
            c, source = load_program_circuit(
                "microgpt", args.circuit or "step", args.length or 8, args.docs
            )
    if args.generated:
        print(generated_source(c, args.degree))
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
        _write("GraphML", args.graphml, lambda: insp.write_graphml(c, args.graphml, coarse))
    if args.dot:
        _write("DOT", args.dot, lambda: insp.write_dot(c, args.dot, coarse))
    if args.png:
        _write("PNG", args.png, lambda: insp.write_png(c, args.png, args.coarse))
    return 0


# ================================================================ runtime commands
# compile / query / coefficients / retrain / influence / stability / verify / demo.
# Their work lives in runtime/ (imported inside the runners); these functions only
# parse options, turn expected failures into one-line errors, and print.
def _nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def _degree(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an integer degree K >= 1, got {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"the degree K must be >= 1, got {value}")
    return value


def _count(what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a number of {what} >= 1, got {text!r}"
            ) from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"the number of {what} must be >= 1, got {value}")
        return value

    return parse


def _unit_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a weight in [0, 1] (1 = delete), got {value}")
    return value


class _user_errors:
    """Turn the runtime's expected failures into CLIError (one line, exit status 2)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, etype: Any, exc: Any, tb: Any) -> bool:
        if exc is None:
            return False
        from compiler.diagnose import NonFiniteError

        if isinstance(exc, (ValueError, NonFiniteError)):
            raise CLIError(str(exc)) from None
        if isinstance(exc, OSError):
            where = f" {exc.filename!r}" if getattr(exc, "filename", None) else ""
            raise CLIError(f"{exc.strerror or exc}{where}") from None
        return False


def _json_safe(obj: Any) -> Any:
    """NaN and infinities as null: strict JSON."""
    import math

    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def _print_json(obj: Any) -> None:
    print(json.dumps(_json_safe(obj), indent=2))


def _warn(message: str) -> None:
    print(f"warning: {' '.join(message.split())}", file=sys.stderr)


def _add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")


def _add_training(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training run (microgpt with --docs, or a user program)")
    g.add_argument("--docs", metavar="FILE", help="microgpt's training documents, one per line")
    g.add_argument(
        "--program",
        metavar="FILE.py:FN",
        help="a user program: FN() in FILE returns a circuitsketch Program (see docs/api.md); "
        "its documents, steps and initial parameters are its own",
    )
    g.add_argument(
        "--steps",
        type=_positive_int,
        metavar="T",
        help="training steps (default: the number of documents)",
    )
    g.add_argument(
        "--init", metavar="INIT.npz", help="initial parameters (default: drawn from --seed)"
    )
    g.add_argument(
        "--seed",
        type=_nonnegative_int,
        default=0,
        metavar="S",
        help="seed of the initial parameters (without --init) and of the directions (default 0)",
    )


def _is_user_program(ref: str | None) -> bool:
    return ref is not None and ref != "microgpt"


def _add_sketch_program(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--program",
        metavar="FILE.py:FN",
        help="a user program's sketch: where its file is now (default: the path recorded "
        "when it was compiled; a file whose content changed is refused)",
    )


def _add_deletion(p: argparse.ArgumentParser) -> None:
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
    g.add_argument(
        "--weight",
        type=_unit_float,
        default=1.0,
        metavar="W",
        help="down-weight in [0, 1] given to the selected documents (default 1: deleted)",
    )


def _add_docs(p: argparse.ArgumentParser, many: bool = True) -> None:
    rep = " (repeatable)" if many else ""
    g = p.add_argument_group(
        "test input (microgpt: --doc; a user program: --test-npz / --test-index)"
    )
    g.add_argument(
        "--doc",
        action="append" if many else "store",
        metavar="TEXT",
        help="microgpt test document" + rep,
    )
    g.add_argument(
        "--test-npz",
        dest="user_tests",
        action="append",
        type=lambda text: ("npz", text),
        metavar="FILE.npz",
        help="a user program's test input: arrays named and shaped like a training "
        "document's" + rep,
    )
    g.add_argument(
        "--test-index",
        dest="user_tests",
        action="append",
        type=lambda text: ("index", _nonnegative_int(text)),
        metavar="I",
        help="a user program's test input: the arrays of training document I" + rep,
    )


def _load_npz(path: str) -> dict[str, Any]:
    import zipfile

    import numpy as np

    if not os.path.isfile(path):
        raise CLIError(f"--test-npz {path!r} does not exist")
    if not zipfile.is_zipfile(path):
        raise CLIError(
            f"--test-npz {path!r} is not an .npz archive (write one with "
            "numpy.savez(FILE, name=array, ...), names as in a training document)"
        )
    try:
        with np.load(path, allow_pickle=False) as z:
            if not hasattr(z, "files"):
                raise ValueError("holds a single array, not named arrays (save it with np.savez)")
            arrays = {name: np.asarray(z[name]) for name in z.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise CLIError(f"--test-npz {path!r} is not a readable .npz file: {e}") from None
    if not arrays:
        raise CLIError(f"--test-npz {path!r} holds no arrays")
    return arrays


def _test_inputs(args: argparse.Namespace, user_spec: Any, many: bool = True) -> list[Any]:
    """The command's test inputs: texts (microgpt) or TestInputs of arrays (`user_spec`)."""
    from runtime.spec import as_test_input

    docs = args.doc if isinstance(args.doc, list) else ([] if args.doc is None else [args.doc])
    user = args.user_tests or []
    if user_spec is None:
        if user:
            raise CLIError(
                "--test-npz and --test-index give a user program's test input; microgpt's "
                "test documents are texts: use --doc"
            )
        if not docs:
            raise CLIError("give a test document with --doc")
        return docs
    if docs:
        raise CLIError(
            "--doc takes a microgpt text; this is a user program: give its test input with "
            "--test-npz FILE.npz or --test-index I"
        )
    if not user:
        raise CLIError(
            "give the user program's test input with --test-npz FILE.npz or --test-index I"
        )
    if not many and len(user) > 1:
        raise CLIError("this command takes one test input (one --test-npz or --test-index)")
    out = []
    for kind, value in user:
        if kind == "npz":
            out.append(as_test_input(_load_npz(value), label=os.path.basename(value)))
        else:
            out.append(as_test_input(user_spec.training_doc(value), f"training document {value}"))
    return out


def _training_spec(args: argparse.Namespace):
    """(spec, docs sha256, init sha256) of --docs (microgpt) or --program FILE.py:FN."""
    from runtime.spec import (
        TrainingSpec,
        UserProgramSpec,
        load_init,
        parse_program_ref,
        read_training_docs,
    )

    if _is_user_program(args.program):
        clash = [f"--{k}" for k in ("docs", "init", "steps") if getattr(args, k) is not None]
        if clash:
            raise CLIError(
                f"{', '.join(clash)} cannot be combined with --program: a user program "
                "defines its own documents, steps and initial parameters"
            )
        path, fn = parse_program_ref(args.program)
        return UserProgramSpec.load(path, fn), None, None
    if args.docs is None:
        raise CLIError(
            "give the training documents with --docs FILE (microgpt) or a user program with "
            "--program FILE.py:FN"
        )
    docs, docs_sha = read_training_docs(args.docs)
    init, init_sha = (None, None) if args.init is None else load_init(args.init)
    steps = args.steps if args.steps is not None else len(docs)
    return TrainingSpec(tuple(docs), steps, seed=args.seed, init=init), docs_sha, init_sha


def _open_sketch(path: str, program: str | None = None):
    """Open a sketch; --program FILE.py:FN says where a user program's file is now."""
    from runtime.query import is_user_sketch
    from runtime.spec import parse_program_ref
    from runtime.store import Sketch

    sk = Sketch.open(path)
    if program is None:
        return sk
    if not is_user_sketch(sk):
        if program == "microgpt":
            return sk
        raise CLIError(f"--program {program}: sketch {path!r} is of microgpt, not a user program")
    file, fn = parse_program_ref(program)
    if fn != sk.config.get("function"):
        raise CLIError(
            f"--program {program}: sketch {path!r} was compiled from function "
            f"{sk.config.get('function')!r}, not {fn!r}"
        )
    sk.program_file = file
    return sk


def _sketch_user_spec(sk: Any) -> Any:
    """The UserProgramSpec of a user program's sketch (loaded and checked), else None."""
    from runtime.query import is_user_sketch, sketch_spec

    return sketch_spec(sk) if is_user_sketch(sk) else None


def _one_or_list(items: list[dict]) -> Any:
    return items[0] if len(items) == 1 else items


def _fmt_pm(value: float, err: float) -> str:
    import math

    return f"{value:+.6f}" + (f" ± {err:.6f}" if math.isfinite(err) else " ± ?")


# ---------------------------------------------------------------- compile
def _configure_compile(p: argparse.ArgumentParser) -> None:
    _add_training(p)
    g = p.add_argument_group("sketch")
    g.add_argument(
        "--degree", type=_degree, required=True, metavar="K", help="series degree K >= 1"
    )
    g.add_argument(
        "--directions",
        type=_count("directions"),
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
        type=_positive_int,
        default=None,
        metavar="B",
        help="directions per unit of work and per stored chunk (default 8)",
    )
    r = p.add_argument_group("where to run")
    r.add_argument(
        "--workers",
        type=_positive_int,
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
    _add_json(p)


def _install_sigterm() -> None:
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)


@command(
    "compile",
    "Precompute a sketch: series training along random directions (resumable, parallel).",
    _configure_compile,
)
def cmd_compile(args: argparse.Namespace) -> int:
    if args.directions is None and args.directions_file is None:
        raise CLIError("give the number of directions with --directions M (or a --directions-file)")
    with _user_errors():
        from runtime.parallel import default_workers
        from runtime.precompute import DEFAULT_CHUNK_SIZE, precompute
        from runtime.store import Sketch

        spec, docs_sha, init_sha = _training_spec(args)
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
                spec,
                args.degree,
                num_directions=args.directions,
                seed=args.seed,
                directions_file=args.directions_file,
                workers=workers,
                scheduler=args.scheduler,
                chunk_size=chunk,
                docs_sha256=docs_sha,
                init_sha256=init_sha,
                info=info,
                progress=args.progress,
                warn=_warn,
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
        _print_json(summary)
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


# ---------------------------------------------------------------- query
def _configure_query(p: argparse.ArgumentParser) -> None:
    p.add_argument("sketch", metavar="SKETCH", help="sketch directory made by compile")
    _add_docs(p)
    _add_sketch_program(p)
    _add_deletion(p)
    p.add_argument(
        "--degree", type=_degree, metavar="k", help="use terms up to degree k (default: all of K)"
    )
    p.add_argument(
        "--groups",
        type=_positive_int,
        metavar="G",
        help="median-of-means groups (default: M/4, between 1 and 9)",
    )
    p.add_argument(
        "--hybrid",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="exact first-order term <g, w> from the metagradient g (computed once per test "
        "input and stored in SKETCH/metagrad) plus the sketched orders >= 2, whose spread "
        "alone makes the error bars; default: hybrid for test inputs whose metagradient is "
        "already stored; --no-hybrid: the pure sketch",
    )
    _add_json(p)


def _deletion(args: argparse.Namespace, docs: list[str], text_docs: bool = True):
    from runtime.query import deletion_weights

    return deletion_weights(
        docs,
        indices=args.delete_indices,
        file=args.delete_file,
        contains=args.delete_contains,
        weight=args.weight,
        text_docs=text_docs,
    )


@command(
    "query",
    "Predict the test loss of documents if some training documents were deleted.",
    _configure_query,
)
def cmd_query(args: argparse.Namespace) -> int:
    with _user_errors():
        from runtime.metagrad import sketch_metagradients
        from runtime.query import check_tests, predict

        sk = _open_sketch(args.sketch, args.program)
        user_spec = _sketch_user_spec(sk)
        tests = check_tests(sk, _test_inputs(args, user_spec))
        w, sel, what = _deletion(args, sk.docs(), text_docs=user_spec is None)
        first_order = None
        if args.hybrid is not False:  # --hybrid computes what is missing; default: stored only
            mgs = sketch_metagradients(sk, tests, compute=bool(args.hybrid), warn=_warn)
            first_order = {k: r.g for k, r in mgs.items() if r is not None}
        results = predict(
            sk, tests, w, args.degree, args.groups, warn=_warn, first_order=first_order
        )
    if sk.config.get("directions", {}).get("source") == "file":
        _warn(
            "this sketch's directions come from a file: the estimator assumes random unit "
            "directions (see `coefficients` for the raw series)"
        )
    for r in results:
        r.update(n_deleted=len(sel), weight=args.weight, degree=args.degree or sk.degree)
        r["warning"] = None
        if not r["reliable"]:
            r["warning"] = (
                f"the prediction for {r['doc']!r} is unreliable: estimated error "
                f"±{r['estimated_error']:.4g} against a predicted change of "
                f"{r['prediction'] - r['c0']:+.4g} when deleting {len(sel)} documents "
                "(use more directions, a lower --degree, or fewer documents)"
            )
            _warn(r["warning"])
    if args.json:
        _print_json(_one_or_list(results))
        return 0
    print(
        f"sketch {args.sketch}: N = {sk.num_docs} docs, T = {sk.steps}, K = {sk.degree}, "
        f"M = {sk.num_directions} directions"
    )
    print(f"deleting {len(sel)} {what} (weight {args.weight:g})")
    for r in results:
        print()
        print(f"test document {r['doc']!r} ({r['estimator']} estimator)")
        print(f"  undeleted loss c0   {r['c0']:.6f}")
        for i, (t, e) in enumerate(zip(r["terms"], r["stderr"]["terms"], strict=True)):
            exact = i == 0 and r["estimator"] == "hybrid"
            cell = f"{t:+.6f} (exact)" if exact else _fmt_pm(t, e)
            print(f"  term r = {i + 1}          {cell}")
        print(f"  predicted change    {_fmt_pm(r['prediction'] - r['c0'], r['stderr']['total'])}")
        print(f"  predicted loss      {r['prediction']:.6f}")
        print(f"  median of means     {r['median_of_means']:.6f} ({r['groups']} groups)")
    return 0


# ---------------------------------------------------------------- coefficients
def _configure_coefficients(p: argparse.ArgumentParser) -> None:
    p.add_argument("sketch", metavar="SKETCH", help="sketch directory made by compile")
    _add_docs(p)
    _add_sketch_program(p)
    _add_json(p)


@command(
    "coefficients",
    "Every direction's raw series coefficients c_0..c_K of a test document's loss.",
    _configure_coefficients,
)
def cmd_coefficients(args: argparse.Namespace) -> int:
    with _user_errors():
        from runtime.query import coefficients

        sk, tests = _sketch_and_tests(args)
        coefs = coefficients(sk, tests, warn=_warn)
    results = [
        {
            "doc": t.label,
            "coefficients": [
                [[float(c.real), float(c.imag)] for c in row] for row in coefs[t.key]
            ],
            "value_at_1": [[float(s.real), float(s.imag)] for s in coefs[t.key].sum(axis=1)],
        }
        for t in tests
    ]
    if args.json:
        _print_json(_one_or_list(results))
        return 0
    k = sk.degree
    for t in tests:
        print(f"test document {t.label!r}: c_0 = {coefs[t.key][0, 0].real:.10g}")
        head = "  dir " + "".join(f"{'c_' + str(r):>32}" for r in range(1, k + 1))
        print(head)
        for j, row in enumerate(coefs[t.key]):
            cells = "".join(f"{c.real:>+16.6e}{c.imag:>+15.6e}j" for c in row[1:])
            print(f"  {j:>3} {cells}")
    return 0


# ---------------------------------------------------------------- retrain
def _configure_retrain(p: argparse.ArgumentParser) -> None:
    _add_training(p)
    _add_deletion(p)
    _add_docs(p)
    _add_json(p)


@command(
    "retrain",
    "Exact ground truth: compiled real training without (or down-weighting) some documents.",
    _configure_retrain,
)
def cmd_retrain(args: argparse.Namespace) -> int:
    import time

    with _user_errors():
        from runtime.retrain import retrain
        from runtime.spec import UserProgramSpec, as_test_input, check_test_docs

        user = _is_user_program(args.program)
        if user and args.seed:
            raise CLIError("--seed sets microgpt's initial parameters; a --program defines its own")
        if not user:
            _test_inputs(args, None)  # the test documents' errors before the training files'
            check_test_docs(args.doc)
        spec, _, _ = _training_spec(args)
        user_spec = spec if isinstance(spec, UserProgramSpec) else None
        tests = [as_test_input(t) for t in _test_inputs(args, user_spec)]
        w, sel, what = _deletion(args, list(spec.docs), text_docs=not user)
        t0 = time.perf_counter()
        losses, _ = retrain(spec, w, tests)
        seconds = time.perf_counter() - t0
    results = [
        {"doc": t.label, "loss": v, "n_deleted": len(sel), "weight": args.weight,
         "steps": spec.steps}
        for t, v in zip(tests, losses, strict=True)
    ]
    if args.json:
        _print_json(_one_or_list(results))
        return 0
    print(
        f"retrained {spec.steps} steps on {spec.num_docs} docs without {len(sel)} {what} "
        f"(weight {args.weight:g}) in {seconds:.1f} s"
    )
    for r in results:
        print(f"  {r['doc']!r}: test loss {r['loss']:.6f}")
    return 0


# ---------------------------------------------------------------- influence
def _configure_influence(p: argparse.ArgumentParser) -> None:
    p.add_argument("sketch", metavar="SKETCH", help="sketch directory made by compile")
    _add_docs(p, many=False)
    _add_sketch_program(p)
    p.add_argument(
        "--exact-first-order",
        action="store_true",
        help="rank by the exact metagradient g_i (computed once and stored in SKETCH/metagrad) "
        "plus the sketched orders >= 2; error bars from orders >= 2 only",
    )
    p.add_argument(
        "--top",
        type=_nonnegative_int,
        default=20,
        metavar="N",
        help="show the N largest effects (0: all; default 20)",
    )
    p.add_argument(
        "--degree", type=_degree, metavar="k", help="use terms up to degree k (default: all of K)"
    )
    p.add_argument("--groups", type=_positive_int, metavar="G", help="median-of-means groups")
    _add_json(p)


def _sketch_and_tests(args: argparse.Namespace, many: bool = True):
    """The sketch named on the command line and its checked test inputs."""
    from runtime.query import check_tests

    sk = _open_sketch(args.sketch, args.program)
    return sk, check_tests(sk, _test_inputs(args, _sketch_user_spec(sk), many=many))


@command(
    "influence",
    "Predicted effect of deleting each single training document (all at once), sorted.",
    _configure_influence,
)
def cmd_influence(args: argparse.Namespace) -> int:
    import time

    import numpy as np

    with _user_errors():
        from runtime import estimate as est
        from runtime.metagrad import sketch_metagradients
        from runtime.query import coefficients

        sk, (test,) = _sketch_and_tests(args, many=False)
        if args.degree is not None and args.degree > sk.degree:
            raise ValueError(f"--degree must be between 1 and the sketch's degree {sk.degree}")
        coefs = coefficients(sk, [test], warn=_warn)[test.key]
        g = None
        if args.exact_first_order:
            mg = sketch_metagradients(sk, [test], warn=_warn)[test.key]
            assert mg is not None
            g = mg.g
        docs = sk.docs()
        t0 = time.perf_counter()
        e = est.influence(coefs, sk.directions(), args.degree, args.groups, first_order=g)
        seconds = time.perf_counter() - t0
    label = test.label
    effect = e.prediction - e.c0
    order = np.argsort(-effect, kind="stable")
    if args.top:
        order = order[: args.top]
    rows = [
        {
            "index": int(i),
            "doc": docs[i],
            "effect": float(effect[i]),
            "stderr": float(e.stderr[i]),
            "prediction": float(e.prediction[i]),
            "terms": [float(t) for t in e.terms[:, i]],
        }
        for i in order
    ]
    if g is not None:
        for r in rows:
            r["first_order_exact"] = float(g[r["index"]])
    estimator = "sketch" if g is None else "hybrid"
    if args.json:
        _print_json(
            {
                "doc": label,
                "c0": e.c0,
                "num_docs": len(docs),
                "seconds": seconds,
                "estimator": estimator,
                "influence": rows,
            }
        )
        return 0
    how = "exact first order + sketched orders >= 2" if g is not None else "sketch"
    print(
        f"test document {label!r}: undeleted loss {e.c0:.6f}; effect of deleting one "
        f"document ({len(docs)} evaluated in {seconds * 1e3:.1f} ms, {how}), largest first"
    )
    print(f"  {'index':>6}  {'document':<16} {'effect on loss':>26}")
    for r in rows:
        print(f"  {r['index']:>6}  {r['doc']:<16} {_fmt_pm(r['effect'], r['stderr']):>26}")
    return 0


# ---------------------------------------------------------------- metagrad
def _configure_metagrad(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "sketch",
        nargs="?",
        metavar="SKETCH",
        help="a sketch directory: use its training run, and store g beside it "
        "(SKETCH/metagrad; computed once per test input, then read back); with a user "
        "program's sketch, --program FILE.py:FN says where its file is now",
    )
    _add_training(p)
    p.set_defaults(seed=None)
    _add_docs(p)
    p.add_argument(
        "--out", metavar="FILE.npy", help="write g: (N,) for one test input, (Q, N) for several"
    )
    p.add_argument(
        "--top",
        type=_nonnegative_int,
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
        "--json", action="store_true", help="print JSON on stdout, with the full vector g"
    )


@command(
    "metagrad",
    "Exact first-order effects dF/dw of every training document (reverse mode through training).",
    _configure_metagrad,
)
def cmd_metagrad(args: argparse.Namespace) -> int:
    import numpy as np

    with _user_errors():
        from runtime.metagrad import compute_metagradients, sketch_metagradients
        from runtime.query import check_arrays
        from runtime.spec import UserProgramSpec, as_test_input, build_program, check_test_docs

        if args.sketch is not None:
            clash = [f"--{k}" for k in ("docs", "init", "steps", "seed")
                     if getattr(args, k) is not None]
            if clash:
                raise CLIError(
                    f"{', '.join(clash)} cannot be combined with SKETCH: the metagradient is "
                    "taken for the sketch's own training run"
                )
            sk, tests = _sketch_and_tests(args)
            stored = sketch_metagradients(sk, tests, recompute=args.recompute, warn=_warn)
            results = [stored[t.key] for t in tests]
            docs = sk.docs()
        else:
            if args.recompute:
                raise CLIError("--recompute applies to a SKETCH's stored metagradients")
            args.seed = 0 if args.seed is None else args.seed
            if not _is_user_program(args.program):
                _test_inputs(args, None)
                check_test_docs(args.doc)
            spec, _, _ = _training_spec(args)
            user_spec = spec if isinstance(spec, UserProgramSpec) else None
            tests = [as_test_input(t) for t in _test_inputs(args, user_spec)]
            program = build_program(spec)
            if user_spec is not None:
                for t in tests:
                    check_arrays(program, t)
            results = compute_metagradients(program, tests)
            docs = list(spec.docs)
    if args.out:
        arr = np.stack([r.g for r in results]) if len(results) > 1 else results[0].g

        def save() -> None:
            with open(args.out, "wb") as f:
                np.save(f, arr, allow_pickle=False)

        _write("metagradient", args.out, save)
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
                "stored": r.path,
                "top": [{"index": int(i), "doc": docs[i], "g": float(r.g[i])} for i in order],
                "metagradient": [float(v) for v in r.g],
            }
        )
    if args.json:
        _print_json(_one_or_list(out))
        return 0
    for r, o in zip(results, out, strict=True):
        print(f"test document {r.label!r}: metagradient dF/dw over {len(docs)} training documents")
        cost = f" = {r.cost:.1f} training runs" if r.cost is not None else ""
        run = f"one training run {r.train_seconds:.3g} s" if r.train_seconds else ""
        setup = (
            f"; once: forward pass with trajectory, reverse program {r.setup_seconds:.2f} s"
            if r.setup_seconds is not None
            else ""
        )
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


# ---------------------------------------------------------------- stability
def _configure_stability(p: argparse.ArgumentParser) -> None:
    p.add_argument("sketch", metavar="SKETCH", help="sketch directory made by compile")
    _add_docs(p, many=False)
    _add_sketch_program(p)
    p.add_argument("--plot", metavar="FILE.png", help="draw the curves into a PNG picture")
    _add_json(p)


def _plot_stability(path: str, doc: str, vals: Any, mean: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    r = np.arange(vals.shape[1])
    fig, ax = plt.subplots(figsize=(6, 4))
    for row in vals:
        ax.plot(r, row, color="0.7", lw=0.8)
    ax.plot(r, mean, color="C0", lw=2.5, marker="o", label="mean over directions")
    ax.set_xlabel("degree r")
    ax.set_ylabel("log2( sqrt(binom(N+r-1, r)) |c_r| )")
    ax.set_title(f"stability of the series for {doc!r}")
    ax.set_xticks(r)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@command(
    "stability",
    "The spec's stability curve log2(sqrt(binom(N+r-1,r)) |c_r|) per direction and averaged.",
    _configure_stability,
)
def cmd_stability(args: argparse.Namespace) -> int:
    with _user_errors():
        from runtime import estimate as est
        from runtime.query import coefficients

        sk, (test,) = _sketch_and_tests(args, many=False)
        coefs = coefficients(sk, [test], warn=_warn)[test.key]
        vals, mean = est.stability(coefs, sk.num_docs)
    label = test.label
    if args.plot:
        _write("stability plot", args.plot, lambda: _plot_stability(args.plot, label, vals, mean))
    if args.json:
        _print_json(
            {
                "doc": label,
                "num_docs": sk.num_docs,
                "degrees": list(range(vals.shape[1])),
                "mean": [float(v) for v in mean],
                "per_direction": [[float(v) for v in row] for row in vals],
            }
        )
        return 0
    k = vals.shape[1] - 1
    print(f"test document {label!r}: log2(sqrt(binom(N+r-1, r)) |c_r|), N = {sk.num_docs}")
    print("  " + f"{'':>6}" + "".join(f"{'r=' + str(r):>9}" for r in range(k + 1)))
    print("  " + f"{'mean':>6}" + "".join(f"{v:>9.2f}" for v in mean))
    for j, row in enumerate(vals):
        print("  " + f"{j:>6}" + "".join(f"{v:>9.2f}" for v in row))
    return 0


# ---------------------------------------------------------------- verify
def _configure_verify(p: argparse.ArgumentParser) -> None:
    p.add_argument("sketch", metavar="SKETCH", help="sketch directory made by compile")
    _add_json(p)


@command(
    "verify", "Check a sketch's manifest and the checksum of every array file.", _configure_verify
)
def cmd_verify(args: argparse.Namespace) -> int:
    with _user_errors():
        sk = _open_sketch(args.sketch)
        sk.verify_all()
    files = len(sk.manifest["files"])
    if args.json:
        _print_json({"sketch": args.sketch, "ok": True, "files": files, "config": sk.config})
    else:
        print(f"sketch {args.sketch}: ok ({files} array files verified)")
    return 0


# ---------------------------------------------------------------- demo
def _configure_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--out",
        metavar="DIR",
        help="keep the documents and the sketch in DIR (default: a temporary directory)",
    )
    p.add_argument(
        "--num-docs",
        type=_positive_int,
        default=None,
        metavar="N",
        help="training names (default 250)",
    )
    p.add_argument("--directions", type=_count("directions"), default=None, metavar="M")
    p.add_argument("--degree", type=_degree, default=None, metavar="K")
    p.add_argument("--letter", default=None, help="delete the names containing this letter")
    p.add_argument("--test", default=None, metavar="NAME", help="test name whose loss is predicted")
    p.add_argument("--workers", type=_positive_int, default=None, metavar="W")
    p.add_argument("--seed", type=_nonnegative_int, default=0, metavar="S")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    _add_json(p)


@command(
    "demo",
    "End to end: sketch a few hundred names, predict a deletion, retrain, compare.",
    _configure_demo,
)
def cmd_demo(args: argparse.Namespace) -> int:
    with _user_errors():
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
            warn=_warn,
        )
    if args.json:
        _print_json(result)
    else:
        print(demo.format_result(result))
    return 0
