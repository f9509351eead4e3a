"""The compiled program of a program source, built once per process; content hashes.

A program source (``runtime.sources``) is all a worker needs to rebuild a
training program; it is small, picklable for the process pool / Dask
transport, and hashes to a stable ``key``.  Each process builds the
``CompiledProgram`` of a (source, degree) pair once and keeps it
(``compiled``): the generated Numba module itself comes from the disk cache.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from circuitsketch.program import Program
    from compiler.compiled import CompiledProgram
    from runtime.sources import ProgramSource

__all__ = ["build_program", "compiled", "fingerprints", "sha256_bytes", "sha256_file"]


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    from runtime.files import sha256_of

    with open(path, "rb") as f:
        return sha256_of(f)


def build_program(source: ProgramSource) -> Program:
    """The training program of a source (what ``compiled`` compiles); ResourceError first
    if its per-step tables alone cannot fit in memory."""
    from runtime import resources

    resources.require(
        resources.program_memory(source.steps, 0),
        f"the training program (--steps {source.steps})",
        "use fewer --steps",
    )
    return source.program()


_COMPILED: dict[tuple[str, int], Any] = {}
_LOCK = threading.Lock()


def compiled(source: ProgramSource, degree: int):
    """The CompiledProgram of (source, degree), built once per process and reused."""
    key = (source.key, int(degree))
    with _LOCK:
        cp = _COMPILED.get(key)
        if cp is None:
            from compiler.compiled import CompiledProgram

            cp = CompiledProgram(build_program(source), int(degree))
            if len(_COMPILED) >= 8:  # bound the memory of long-lived workers
                _COMPILED.clear()
            _COMPILED[key] = cp
        return cp


def fingerprints(program: Program | CompiledProgram) -> dict[str, str]:
    """Canonical fingerprints of the traced circuits, ``{"step:KEY" | "output:KEY": hash}``.

    With a sketch's configuration they decide whether its numbers can be read:
    the circuits as traced, before any compiler pass, so that a change to code
    generation (or to the passes) leaves stored sketches readable.  `program`:
    a Program or a CompiledProgram (its program is used).
    """
    from circuitsketch.program import Program

    if not isinstance(program, Program):
        program = program.program  # a CompiledProgram
    out = {
        f"step:{k!r}": program.step_circuits[k].fingerprint()
        for k in sorted(program.step_circuits, key=repr)
    }
    out.update(
        {
            f"output:{k!r}": program.output_circuits[k].fingerprint()
            for k in sorted(program.output_circuits, key=repr)
        }
    )
    return out
