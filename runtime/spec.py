"""What a training run is, as plain data, and the compiled program it becomes.

A ``TrainingSpec`` (documents, number of steps, initial parameters) is all a
worker needs to rebuild the training program; it is small, picklable for the
process pool / Dask transport, and hashes to a stable ``key``.  Each process
builds the ``CompiledProgram`` of a (spec, degree) pair once and keeps it
(``compiled``): the generated Numba module itself comes from the disk cache.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from circuitsketch.program import Program
    from compiler.compiled import CompiledProgram

__all__ = [
    "PROGRAM",
    "USER_PROGRAM",
    "ProgramError",
    "TestInput",
    "TrainingSpec",
    "UserProgramSpec",
    "arrays_key",
    "as_test_input",
    "build_program",
    "check_test_docs",
    "compiled",
    "doc_labels",
    "fingerprints",
    "hyperparameters",
    "load_init",
    "load_user_program",
    "parse_program_ref",
    "program_data_sha256",
    "read_training_docs",
    "sha256_bytes",
    "sha256_file",
]

PROGRAM = "microgpt"
USER_PROGRAM = "user"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@functools.cache
def _tokenizer():
    from circuitsketch.models import microgpt

    return microgpt.Tokenizer.from_corpus()  # reads the whole corpus: once per process


def read_training_docs(path: str | Path) -> tuple[list[str], str]:
    """Documents of FILE (one per line, stripped, blanks skipped) and the file's sha256.

    Every document is checked against the vocabulary here, so an unknown
    character is reported with its line before anything expensive starts.
    """
    from circuitsketch.models import microgpt

    p = Path(path)
    if p.is_dir():
        raise ValueError(f"documents file {str(p)!r} is a directory")
    docs = microgpt.read_docs(p)  # ValueError: missing or empty file
    tok = _tokenizer()
    for i, d in enumerate(docs):
        try:
            tok.encode(d)
        except ValueError as e:
            raise ValueError(f"documents file {str(p)!r}, document {i}: {e}") from None
    return docs, sha256_file(p)


def check_test_docs(docs: Sequence[str]) -> None:
    """ValueError naming the first test document the tokenizer cannot encode."""
    if not docs:
        raise ValueError("give at least one test document with --doc")
    tok = _tokenizer()
    for d in docs:
        if not d.strip():
            raise ValueError("--doc: empty test document")
        tok.encode(d)


def load_init(path: str | Path) -> tuple[np.ndarray, str]:
    """Initial parameters of an .npz (validated) as a flat vector in spec order, and its sha256."""
    from circuitsketch.models import microgpt

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"init file {str(p)!r} does not exist")
    params = microgpt.load_params(p)
    return np.concatenate([v.ravel() for v in params.values()]), sha256_file(p)


@dataclass
class TrainingSpec:
    """Documents, steps and initial parameters of one training run (init from `seed` if None)."""

    docs: tuple[str, ...]
    steps: int
    seed: int = 0
    init: np.ndarray | None = None  # flat (P,) float64 in the spec's order
    _key: str | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.docs = tuple(self.docs)
        if not self.docs:
            raise ValueError("no training documents")
        if int(self.steps) < 1:
            raise ValueError(f"number of steps must be >= 1, got {self.steps}")
        self.steps = int(self.steps)
        self.seed = int(self.seed)
        if self.init is not None:
            self.init = np.ascontiguousarray(self.init, dtype=np.float64)

    @property
    def num_docs(self) -> int:
        return len(self.docs)

    @property
    def key(self) -> str:
        """sha256 over everything that determines the training run."""
        if self._key is None:
            h = hashlib.sha256()
            h.update(f"{PROGRAM};steps={self.steps};".encode())
            h.update("\n".join(self.docs).encode())
            if self.init is None:
                h.update(f";seed={self.seed}".encode())
            else:
                h.update(b";init=")
                h.update(self.init.tobytes())
            self._key = h.hexdigest()
        return self._key

    def init_params(self) -> dict[str, np.ndarray] | None:
        if self.init is None:
            return None
        from circuitsketch.models import microgpt

        out, pos = {}, 0
        for name, shape in microgpt.param_shapes().items():
            n = int(np.prod(shape))
            out[name] = self.init[pos : pos + n].reshape(shape).copy()
            pos += n
        if pos != self.init.size:
            raise ValueError(f"init vector has {self.init.size} values, expected {pos}")
        return out


def build_program(spec: TrainingSpec | UserProgramSpec):
    if isinstance(spec, UserProgramSpec):
        return spec.program()
    from circuitsketch.models import microgpt

    return microgpt.build(
        list(spec.docs), steps=spec.steps, init=spec.init_params(), seed=spec.seed
    )


_COMPILED: dict[tuple[str, int], Any] = {}
_LOCK = threading.Lock()


def compiled(spec: TrainingSpec | UserProgramSpec, degree: int):
    """The CompiledProgram of (spec, degree), built once per process and reused."""
    key = (spec.key, int(degree))
    with _LOCK:
        cp = _COMPILED.get(key)
        if cp is None:
            from compiler.compiled import CompiledProgram

            cp = CompiledProgram(build_program(spec), int(degree))
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


def hyperparameters(program) -> dict[str, Any]:
    """The model and optimizer settings recorded in a sketch's manifest."""
    from dataclasses import asdict, is_dataclass

    from circuitsketch.models import microgpt

    opt = program.optimizer
    if program.name != PROGRAM:  # a user program: its parameters and optimizer
        return {
            "name": program.name,
            "params": {p: list(np.shape(program.init_state[p])) for p in program.params},
            "optimizer": {
                "name": type(opt).__name__,
                **(asdict(opt) if is_dataclass(opt) else {}),
            },
            "num_params": int(
                sum(np.prod(np.shape(program.init_state[p])) for p in program.params)
            ),
        }
    return {
        "n_layer": 1,
        "n_embd": microgpt.N_EMBD,
        "n_head": microgpt.N_HEAD,
        "head_dim": microgpt.HEAD_DIM,
        "block_size": microgpt.BLOCK_SIZE,
        "mlp_dim": microgpt.MLP_DIM,
        "init_std": microgpt.INIT_STD,
        "rms_eps": microgpt.RMS_EPS,
        "buckets": list(program.meta.get("buckets", ())),
        "optimizer": {"name": type(opt).__name__, **(asdict(opt) if is_dataclass(opt) else {})},
        "num_params": int(sum(np.prod(np.shape(program.init_state[p])) for p in program.params)),
    }


# ---------------------------------------------------------------- user programs
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
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if os.path.realpath(f.filename) == target
    ]
    return f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""


def load_user_program(path: str | Path, function: str, expect_sha256: str | None = None):
    """Run FILE (exactly the bytes whose sha256 is returned) and call FUNCTION() -> Program.

    Returns (program, sha256 of the file).  Any failure (missing file or
    function, an exception while importing or building, a construct the
    tracer refuses) is a ProgramError naming the file and, where known, the
    line of the user's file.  With `expect_sha256`, a file whose content
    changed is refused.
    """
    import importlib.util
    import sys

    from circuitsketch.program import Program

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
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(folder)
    if not isinstance(program, Program):
        raise ProgramError(
            f"{ref} returned {type(program).__name__}, not a circuitsketch Program "
            "(build it with circuitsketch.training_program)"
        )
    if program.name == PROGRAM:
        program.name = f"user.{PROGRAM}"  # keep the name free for the shipped program
    return program, sha


def program_data_sha256(program) -> str:
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


def doc_labels(program) -> tuple[str, ...]:
    """A short description of each training document's arrays (for tables and docs.npy)."""
    first: dict[int, Any] = {}
    for st in program.steps:
        first.setdefault(st.doc, st.data)
    out = []
    for i in range(program.num_docs):
        data = first.get(i)
        if data is None:
            out.append(f"#{i} (never trained on)")
            continue
        text = f"#{i} " + " ".join(f"{k}={_fmt_array(v)}" for k, v in sorted(data.items()))
        out.append(text if len(text) <= 48 else text[:45] + "...")
    return tuple(out)


_USER_PROGRAMS: dict[tuple[str, str], Any] = {}


@dataclass
class UserProgramSpec:
    """A training program defined by FUNCTION() in a user's Python FILE (--program FILE:FUNCTION).

    Picklable (file, function and the file's sha256 only): each process loads
    the program itself, refusing a file whose content changed.
    """

    file: str
    function: str
    sha256: str

    @classmethod
    def load(
        cls, path: str | Path, function: str, expect_sha256: str | None = None
    ) -> UserProgramSpec:
        program, sha = load_user_program(path, function, expect_sha256)
        spec = cls(str(Path(path).resolve()), function, sha)
        _USER_PROGRAMS[(sha, function)] = program
        return spec

    def program(self):
        prog = _USER_PROGRAMS.get((self.sha256, self.function))
        if prog is None:
            prog, _ = load_user_program(self.file, self.function, self.sha256)
            _USER_PROGRAMS[(self.sha256, self.function)] = prog
        return prog

    # the interface precompute / retrain use (like TrainingSpec)
    @property
    def ref(self) -> str:
        return f"{self.file}:{self.function}"

    @property
    def num_docs(self) -> int:
        return int(self.program().num_docs)

    @property
    def steps(self) -> int:
        return int(self.program().num_steps)

    @property
    def docs(self) -> tuple[str, ...]:
        return doc_labels(self.program())

    seed = 0
    init = None

    @property
    def key(self) -> str:
        return sha256_bytes(f"{USER_PROGRAM};{self.sha256};{self.function}".encode())

    def data_sha256(self) -> str:
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


# ---------------------------------------------------------------- test inputs
@dataclass(frozen=True, eq=False)
class TestInput:
    """One test input: what is shown (`label`), its cache identity (`key`), the value itself.

    For microgpt a test input is simply its text (label = key = value); the
    runtime accepts plain strings there.  A user program's is a dict of arrays.
    """

    __test__ = False  # not a pytest test class

    label: str
    key: str
    value: Any


def arrays_key(arrays: dict[str, Any]) -> str:
    """Content identity of a dict of arrays (floats as float64, integers as int64)."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.asarray(arrays[name])
        kind = a.dtype.kind
        a = a.astype(np.float64 if kind == "f" else np.int64 if kind in "iu" else a.dtype)
        a = np.ascontiguousarray(a)
        h.update(f"{name};{a.dtype.str};{a.shape};".encode())
        h.update(a.tobytes())
    return "arrays:" + h.hexdigest()


def as_test_input(value: Any, label: str | None = None) -> TestInput:
    """A TestInput from a microgpt text or a dict of arrays (a TestInput is returned as is)."""
    if isinstance(value, TestInput):
        return value
    if isinstance(value, str):
        return TestInput(value if label is None else label, value, value)
    if isinstance(value, dict):
        arrays = {str(k): np.asarray(v) for k, v in value.items()}
        key = arrays_key(arrays)
        return TestInput(label or key[:19], key, arrays)
    raise TypeError(f"a test input is a text or a dict of arrays, got {type(value).__name__}")
