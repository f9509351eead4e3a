"""Loading a user's program file: FUNCTION() in FILE.py, and what identifies its data.

Errors are ``ProgramError`` with one line naming the file and, where known,
the line of the user's file that failed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from circuitsketch.program import Program, document_data
from runtime.spec import sha256_bytes

__all__ = [
    "ProgramError",
    "doc_labels",
    "load_user_program",
    "parse_program_ref",
    "program_data_sha256",
]

SHIPPED_NAME = "microgpt"  # the shipped program's name, kept free for it


class ProgramError(ValueError):
    """A user program that cannot be loaded, built or traced (one-line message)."""


def parse_program_ref(ref: str) -> tuple[str, str]:
    """'path/to/file.py:build' -> (path, 'build'); ProgramError when malformed."""
    target, sep, fn = ref.rpartition(":")
    if not sep or not target or not fn:
        raise ProgramError(f"--program {ref!r}: expected FILE.py:FUNCTION, e.g. myprog.py:build")
    if not fn.isidentifier():
        raise ProgramError(f"--program {ref!r}: {fn!r} is not a Python function name")
    return target, fn


def _user_line(exc: BaseException, path: str) -> str:
    """' (at file:line)' of the innermost traceback frame in the user's file, if any."""
    import traceback

    if "(at " in str(exc):  # TracingError and friends already name the place
        return ""
    target = os.path.realpath(path)
    frames = [
        f for f in traceback.extract_tb(exc.__traceback__) if os.path.realpath(f.filename) == target
    ]
    return f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""


def load_user_program(
    path: str | Path, function: str, expect_sha256: str | None = None
) -> tuple[Program, str]:
    """Run FILE (exactly the bytes whose sha256 is returned) and call FUNCTION() -> Program.

    Returns (program, sha256 of the file).  Any failure (missing file or
    function, an exception while importing or building, a construct the
    tracer refuses) is a ProgramError naming the file and, where known, the
    line of the user's file.  With `expect_sha256`, a file whose content
    changed is refused.
    """
    import importlib.util
    import sys

    ref = f"{path}:{function}"
    p = Path(path)
    if not p.is_file():
        raise ProgramError(f"program file {str(p)!r} does not exist")
    try:
        source = p.read_bytes()
    except OSError as e:
        raise ProgramError(f"cannot read program file {str(p)!r}: {e.strerror or e}") from None
    sha = sha256_bytes(source)
    if expect_sha256 is not None and sha != expect_sha256:
        raise ProgramError(
            f"program file {str(p)!r} changed since the sketch was made (sha256 {sha[:12]}..., "
            f"the sketch records {expect_sha256[:12]}...): restore it or recompile the sketch"
        )
    name = f"_circuitsketch_program_{sha[:16]}"
    spec = importlib.util.spec_from_file_location(name, p)
    if spec is None:
        raise ProgramError(f"cannot load {str(p)!r} as a Python file")
    module = importlib.util.module_from_spec(spec)
    folder = str(p.resolve().parent)
    sys.modules[name] = module  # dataclasses and pickling look their module up here
    sys.path.insert(0, folder)  # the user's file may import its neighbours
    try:
        try:
            code = compile(source, str(p), "exec")
            exec(code, module.__dict__)
        except SyntaxError as e:
            raise ProgramError(
                f"program file {str(p)!r} does not parse: {e.msg} (at {p}:{e.lineno})"
            ) from None
        except Exception as e:
            raise ProgramError(
                f"cannot import program file {str(p)!r}: {type(e).__name__}: {e}"
                f"{_user_line(e, str(p))}"
            ) from None
        except SystemExit as e:  # else the CLI would exit with its code, silently
            raise ProgramError(
                f"the program file {str(p)!r} exited while loading (SystemExit {e.code})"
                f"{_user_line(e, str(p))}"
            ) from None
        fn = getattr(module, function, None)
        if not callable(fn):
            raise ProgramError(f"program file {str(p)!r} has no function {function!r}")
        try:
            program = fn()
        except Exception as e:
            what = "tracing" if type(e).__name__ == "TracingError" else "building"
            raise ProgramError(
                f"{what} the program {ref} failed: {type(e).__name__}: {e}{_user_line(e, str(p))}"
            ) from None
        except SystemExit as e:
            raise ProgramError(
                f"building the program {ref} exited (SystemExit {e.code}){_user_line(e, str(p))}"
            ) from None
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(folder)
    if not isinstance(program, Program):
        raise ProgramError(
            f"{ref} returned {type(program).__name__}, not a circuitsketch Program "
            "(build it with circuitsketch.training_program)"
        )
    if program.name == SHIPPED_NAME:
        program.name = f"user.{SHIPPED_NAME}"
    return program, sha


def program_data_sha256(program: Program) -> str:
    """sha256 over a program's initial state, schedule and every step's data arrays."""
    h = hashlib.sha256()

    def arr(a: Any) -> None:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape};".encode())
        h.update(a.tobytes())

    h.update(f"{program.name};docs={program.num_docs};steps={program.num_steps};".encode())
    for n in sorted(program.init_state):
        h.update(f"state:{n};".encode())
        arr(program.init_state[n])
    for st in program.steps:
        h.update(f"step:{st.doc};{st.key!r};".encode())
        for k in sorted(st.data):
            h.update(f"{k};".encode())
            arr(st.data[k])
    return h.hexdigest()


def _fmt_array(a: np.ndarray) -> str:
    a = np.asarray(a)
    if a.ndim == 0:
        return f"{a.item():.4g}" if a.dtype.kind == "f" else str(a.item())
    if a.size <= 3:
        vals = (f"{v:.3g}" if a.dtype.kind == "f" else str(v) for v in a.ravel().tolist())
        return "[" + ",".join(vals) + "]"
    return "x".join(map(str, a.shape)) + " array"


def doc_labels(program: Program) -> tuple[str, ...]:
    """A short description of each training document's arrays (for tables and docs.npy)."""
    out = []
    for i in range(program.num_docs):
        data = document_data(program, i)
        if data is None:
            out.append(f"#{i} (never trained on)")
            continue
        text = f"#{i} " + " ".join(f"{k}={_fmt_array(v)}" for k, v in sorted(data.items()))
        out.append(text if len(text) <= 48 else text[:45] + "...")
    return tuple(out)
