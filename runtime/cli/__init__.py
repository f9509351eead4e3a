"""The ``circuitsketch`` command line, on top of the runtime (and of everything below it).

Subcommands live in one table, ``COMMANDS``: each is a ``Command`` holding a
function that adds its options to an argparse parser and a function that
runs it.  A command group is one module (``inspect``, ``compile``, ``query``
for the questions to a sketch (``sets`` when they come many at once),
``training`` for retrain and metagrad, ``evaluate``,
``verify``, ``demo``); to add a subcommand, write its two functions and its
``Command`` in one of them and list it here.

Modules that load Numba, networkx or matplotlib are imported inside the
runners so that ``circuitsketch --help`` stays fast.  A user error (bad
option value, missing file, a function that does not trace) prints one line
``error: ...`` on stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from runtime.cli.common import CLIError, Command, Parser
from runtime.cli.compile import COMPILE
from runtime.cli.demo import DEMO
from runtime.cli.evaluate import EVALUATE
from runtime.cli.hessian import HESSIAN
from runtime.cli.inspect import INSPECT
from runtime.cli.query import COEFFICIENTS, INFLUENCE, QUERY, STABILITY
from runtime.cli.training import METAGRAD, RETRAIN
from runtime.cli.verify import VERIFY

__all__ = ["COMMANDS", "CLIError", "Command", "build_parser", "main"]

PROG = "circuitsketch"

# in the order `circuitsketch --help` lists them
COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (
        INSPECT,
        COMPILE,
        QUERY,
        COEFFICIENTS,
        RETRAIN,
        INFLUENCE,
        METAGRAD,
        HESSIAN,
        EVALUATE,
        STABILITY,
        VERIFY,
        DEMO,
    )
}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subparser per command."""
    parser = Parser(
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


@contextlib.contextmanager
def _interrupts_delivered() -> Iterator[None]:
    """Ctrl-C landing in a callback from compiled code (LLVM's object cache, called while
    Numba compiles) is swallowed there by ctypes, and the compile then fails later with a
    traceback: deliver such an interrupt again a millisecond later (SIGALRM: raising it in
    the hook would be swallowed too), so that the command stops as on any Ctrl-C."""
    main_thread = threading.current_thread() is threading.main_thread()
    if not (hasattr(signal, "setitimer") and main_thread):
        yield
        return
    default, alarm = sys.unraisablehook, signal.getsignal(signal.SIGALRM)

    def hook(unraisable: Any) -> None:
        if unraisable.exc_type is KeyboardInterrupt:
            signal.signal(signal.SIGALRM, _raise_interrupt)
            signal.setitimer(signal.ITIMER_REAL, 0.001)
        else:
            default(unraisable)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = default
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, alarm)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 user error)."""
    with _interrupts_delivered():
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
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
