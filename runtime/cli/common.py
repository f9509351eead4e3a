"""What every command shares: the command record, user errors, argument types, output.

A user error (bad option value, missing file, a function that does not
trace) is a ``CLIError``, or a ValueError/OSError from the runtime turned
into one by ``user_errors``; ``main`` prints it as one line ``error: ...``
and exits with status 2.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CLIError",
    "Command",
    "Parser",
    "count_of",
    "fmt_pm",
    "nonnegative_int",
    "one_or_list",
    "positive_int",
    "print_json",
    "series_degree",
    "unit_float",
    "user_errors",
    "warn",
    "write",
]


class CLIError(Exception):
    """A user error: reported as one ``error: ...`` line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors raise CLIError instead of printing usage and exiting.

    Abbreviated options are not accepted, so an error names the option as typed.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        """An unknown --option is named first (argparse would report a missing one)."""
        if args is not None:
            known = {s for a in self._actions for s in a.option_strings}
            top = any(isinstance(a, argparse._SubParsersAction) for a in self._actions)
            for tok in args:
                if tok == "--" or (top and not tok.startswith("-")):
                    break
                name = tok.split("=", 1)[0]
                if tok.startswith("--") and name not in known:
                    close = difflib.get_close_matches(name, sorted(known), n=1)
                    hint = f" (did you mean {close[0]}?)" if close else ""
                    raise CLIError(f"unrecognized option {name}{hint}")
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> None:  # type: ignore[override]
        raise CLIError(message)


@dataclass(frozen=True)
class Command:
    """A subcommand: `configure` adds its options to a parser, `run` runs it (exit status)."""

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


class user_errors:
    """Turn the runtime's expected failures into CLIError (one line, exit status 2)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, etype: Any, exc: Any, tb: Any) -> bool:
        if exc is None:
            return False
        from compiler.diagnose import NonFiniteError

        if isinstance(exc, (ValueError, NonFiniteError)):
            raise CLIError(str(exc)) from None
        if isinstance(exc, MemoryError):  # past the resource guards' estimates
            detail = f": {exc}" if str(exc) else ""
            raise CLIError(
                f"out of memory{detail} (work finished so far is saved; use a smaller job)"
            ) from None
        if isinstance(exc, OSError):
            where = f" {exc.filename!r}" if getattr(exc, "filename", None) else ""
            raise CLIError(f"{exc.strerror or exc}{where}") from None
        return False


# ---------------------------------------------------------------- argument types
def _int_at_least(low: int, not_int: str, too_small: str) -> Callable[[str], int]:
    """An argument type for integers >= `low`; the messages get {text!r} or {value}."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(not_int.format(text=text)) from None
        if value < low:
            raise argparse.ArgumentTypeError(too_small.format(value=value))
        return value

    return parse


positive_int = _int_at_least(
    1, "expected a positive integer, got {text!r}", "expected a positive integer, got {value}"
)
nonnegative_int = _int_at_least(
    0, "expected an integer >= 0, got {text!r}", "expected an integer >= 0, got {value}"
)
series_degree = _int_at_least(
    1, "expected an integer degree K >= 1, got {text!r}", "the degree K must be >= 1, got {value}"
)


def count_of(what: str) -> Callable[[str], int]:
    """The argument type of a number of `what` (>= 1)."""
    return _int_at_least(
        1,
        f"expected a number of {what} >= 1, got {{text!r}}",
        f"the number of {what} must be >= 1, got {{value}}",
    )


def unit_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a weight in [0, 1] (1 = delete), got {value}")
    return value


# ---------------------------------------------------------------- output
def _json_safe(obj: Any) -> Any:
    """NaN and infinities as null: strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def print_json(obj: Any) -> None:
    print(json.dumps(_json_safe(obj), indent=2))


def one_or_list(items: list[dict]) -> Any:
    """One result as itself, several as a list (what --json prints)."""
    return items[0] if len(items) == 1 else items


def warn(message: str) -> None:
    print(f"warning: {' '.join(message.split())}", file=sys.stderr)


def write(what: str, path: str, writer: Callable[[], None]) -> None:
    """Run `writer` (which writes `path`); a failure is a CLIError naming the file."""
    try:
        writer()
    except OSError as e:
        raise CLIError(f"cannot write {what} file {path!r}: {e.strerror or e}") from None
    print(f"wrote {what} to {path}", file=sys.stderr)


def fmt_pm(value: float, err: float) -> str:
    return f"{value:+.6f}" + (f" ± {err:.6f}" if math.isfinite(err) else " ± ?")
