"""A user's training program as a program source: FUNCTION() in a Python FILE.

``--program FILE.py:FN`` names it.  The source is picklable (the file, the
function and the file's sha256 only): each process loads the program
itself, refusing a file whose content changed.  Its documents are arrays:
test inputs are given as ``--test-npz`` files or ``--test-index`` (a
training document's arrays), and deletions by index only.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from runtime.sources.base import (
    ProgramSource,
    TestRequest,
    TrainingOptions,
    num_params,
    optimizer_settings,
)
from runtime.sources.inputs import TestInput, as_test_input, load_npz
from runtime.sources.user_file import (
    ProgramError,
    doc_labels,
    load_user_program,
    parse_program_ref,
    program_data_sha256,
)
from runtime.spec import sha256_bytes
from runtime.store import SketchError

if TYPE_CHECKING:
    from circuitsketch.program import Program
    from runtime.store import Sketch

__all__ = ["ProgramError", "UserProgramSource", "check_arrays"]

_PROGRAMS: dict[tuple[str, str], Any] = {}  # (sha256 of the file, function) -> Program


@dataclass
class UserProgramSource(ProgramSource):
    """The training program FUNCTION() in the user's Python FILE returns."""

    kind: ClassVar[str] = "user"
    text_documents: ClassVar[bool] = False

    file: str
    function: str
    sha256: str

    @classmethod
    def load(
        cls, path: str | Path, function: str, expect_sha256: str | None = None
    ) -> UserProgramSource:
        """Run FILE and build its program now (ProgramError naming what failed)."""
        program, sha = load_user_program(path, function, expect_sha256)
        source = cls(str(Path(path).resolve()), function, sha)
        _PROGRAMS[(sha, function)] = program
        return source

    def program(self) -> Program:
        prog = _PROGRAMS.get((self.sha256, self.function))
        if prog is None:
            prog, _ = load_user_program(self.file, self.function, self.sha256)
            _PROGRAMS[(self.sha256, self.function)] = prog
        return prog

    @property
    def ref(self) -> str:
        return f"{self.file}:{self.function}"

    @property
    def key(self) -> str:
        return sha256_bytes(f"{self.kind};{self.sha256};{self.function}".encode())

    @property
    def num_docs(self) -> int:
        return int(self.program().num_docs)

    @property
    def steps(self) -> int:
        return int(self.program().num_steps)

    @property
    def docs(self) -> tuple[str, ...]:
        return doc_labels(self.program())

    def data_sha256(self) -> str:
        """sha256 over every array the program holds: its documents and initial state."""
        return program_data_sha256(self.program())

    def training_doc(self, index: int) -> dict[str, np.ndarray]:
        """The arrays of training document `index` (ValueError when there is none)."""
        prog = self.program()
        n = prog.num_docs
        if not 0 <= index < n:
            raise ValueError(
                f"--test-index {index} is out of range: the program has {n} training documents "
                f"(indices 0..{n - 1})"
            )
        for st in prog.steps:
            if st.doc == index:
                return {k: np.asarray(v) for k, v in st.data.items()}
        raise ValueError(f"--test-index {index}: training document {index} is never trained on")

    # ---- a sketch's manifest: the file by content, the function, every array by its hash
    def manifest_config(
        self, program: Program, docs_sha256: str | None = None, init_sha256: str | None = None
    ) -> dict[str, Any]:
        data_sha = self.data_sha256()
        return {
            "program": self.kind,
            "hyperparameters": {
                "name": program.name,
                "params": {p: list(np.shape(program.init_state[p])) for p in program.params},
                "optimizer": optimizer_settings(program),
                "num_params": num_params(program),
            },
            "docs_sha256": data_sha,
            "init": {"sha256": data_sha},
            "program_sha256": self.sha256,
            "function": self.function,
        }

    def manifest_info(self) -> dict[str, Any]:
        return {"program_file": self.file}

    @classmethod
    def reopen(
        cls, sketch: Sketch, ref: str | None = None, full: bool = False
    ) -> UserProgramSource:
        """Loaded from `ref`'s file, else from the file recorded at compile time.

        A changed file, another function or a program that now builds other
        data is refused.
        """
        cfg = sketch.config
        where = f"sketch {str(sketch.path)!r}"
        if ref is not None:
            file, fn = parse_program_ref(ref)
            if fn != cfg.get("function"):
                raise SketchError(
                    f"--program {ref}: {where} was compiled from function "
                    f"{cfg.get('function')!r}, not {fn!r}"
                )
            sketch.program_file = file
        path = sketch.program_file or sketch.manifest.get("info", {}).get("program_file")
        if not path:
            raise SketchError(f"{where} records no program file: give it with --program FILE:FN")
        if sketch.program_file is None and not Path(path).is_file():
            raise SketchError(
                f"{where}: its program file {path!r} does not exist any more: give its new "
                "place with --program FILE.py:FN"
            )
        source = cls.load(path, cfg["function"], expect_sha256=cfg["program_sha256"])
        if source.data_sha256() != cfg["docs_sha256"]:
            raise SketchError(
                f"{where}: program {source.ref} now builds other documents or initial parameters "
                "than when the sketch was made (is its data generated without a fixed seed?)"
            )
        if source.num_docs != sketch.num_docs or source.steps != sketch.steps:
            raise SketchError(f"{where}: program {source.ref} builds another training run")
        return source

    # ---- from the command line
    @classmethod
    def from_options(cls, ref: str | None, options: TrainingOptions) -> UserProgramSource:
        if options.seed_only_inits and options.seed:
            raise ValueError(
                "--seed sets microgpt's initial parameters; a --program defines its own"
            )
        clash = [f"--{k}" for k in ("docs", "init", "steps") if getattr(options, k) is not None]
        clash += [f"--{k.replace('_', '-')}" for k in options.model_config]  # microgpt's model
        clash += ["--skip-blank-lines"] if options.skip_blank_lines else []
        if clash:
            raise ValueError(
                f"{', '.join(clash)} cannot be combined with --program: a user program "
                "defines its own documents, steps and initial parameters"
            )
        path, fn = parse_program_ref(ref or "")
        return cls.load(path, fn)

    @classmethod
    def inspect_circuit(
        cls, ref: str | None, circuit: str, length: int | None, docs_file: str | None
    ) -> tuple[Program, Hashable, str]:
        """The circuit of the program's first document shape (in the order of their keys)."""
        ref = ref or ""
        if ":" not in ref:
            raise ValueError(f"--program {ref!r}: expected microgpt or FILE.py:FUNCTION")
        if docs_file is not None:
            raise ValueError("--docs applies to microgpt; a user program holds its own documents")
        if length is not None:
            raise ValueError(
                "--length selects a microgpt length bucket; it does not apply to --program"
            )
        path, fn = parse_program_ref(ref)
        prog = cls.load(path, fn).program()
        table = prog.step_circuits if circuit == "step" else prog.output_circuits
        keys = sorted(table, key=repr)
        which = f", the first of {len(keys)} document shapes" if len(keys) > 1 else ""
        return prog, keys[0], f"{ref} ({prog.name}) {circuit} circuit{which}, {prog.num_docs} docs"

    # ---- test inputs: arrays, from an .npz file or a training document
    def test_inputs(self, request: TestRequest) -> list[TestInput]:
        if request.texts:
            raise ValueError(
                "--doc takes a microgpt text; this is a user program: give its test input with "
                "--test-npz FILE.npz or --test-index I"
            )
        if not request.arrays:
            raise ValueError(
                "give the user program's test input with --test-npz FILE.npz or --test-index I"
            )
        if not request.many and len(request.arrays) > 1:
            raise ValueError("this command takes one test input (one --test-npz or --test-index)")
        out = []
        for how, value in request.arrays:
            if how == "npz":
                out.append(as_test_input(load_npz(value), label=os.path.basename(value)))
            else:
                out.append(as_test_input(self.training_doc(value), f"training document {value}"))
        return out

    def check_tests(self, tests: Sequence[Any]) -> list[TestInput]:
        items = [as_test_input(t) for t in tests]
        if not items:
            raise ValueError("give a test input with --test-npz FILE.npz or --test-index I")
        if any(not isinstance(t.value, dict) for t in items):
            raise ValueError(
                "a user program's test inputs are arrays: give them with --test-npz FILE.npz "
                "or --test-index I (--doc takes microgpt text)"
            )
        program = self.program()
        for t in items:
            check_arrays(program, t)
        return items


def _describe_signature(key: Any) -> str | None:
    """'label () int, x (4,) float' for a training_program signature key, else None."""
    try:
        return ", ".join(f"{n} {tuple(shape)} {dtype}" for n, shape, dtype in key)
    except (TypeError, ValueError):
        return None


def check_arrays(program: Program, t: TestInput) -> None:
    """ValueError (naming the input) unless `program` can evaluate test input `t`."""
    try:
        program.encode_test(t.value)
    except Exception as e:  # the program's own check: names, shapes and dtypes
        from circuitsketch.program import doc_signature

        want = [_describe_signature(k) for k in sorted(program.output_circuits, key=repr)]
        try:
            got = _describe_signature(doc_signature(t.value))
        except Exception:
            got = None
        if got is None or any(w is None for w in want):
            raise ValueError(f"test input {t.label}: {e}") from None
        raise ValueError(
            f"test input {t.label} has arrays {got}, which match no training document's "
            f"names, shapes and dtypes ({' | '.join(want)})"
        ) from None
