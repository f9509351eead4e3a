"""What a training run is, as plain data, and the compiled program it becomes.

A ``TrainingSpec`` (documents, number of steps, initial parameters) is all a
worker needs to rebuild the training program; it is small, picklable for the
process pool / Dask transport, and hashes to a stable ``key``.  Each process
builds the ``CompiledProgram`` of a (spec, degree) pair once and keeps it
(``compiled``): the generated Numba module itself comes from the disk cache.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "PROGRAM",
    "TrainingSpec",
    "build_program",
    "check_test_docs",
    "compiled",
    "fingerprints",
    "hyperparameters",
    "load_init",
    "read_training_docs",
    "sha256_bytes",
    "sha256_file",
]

PROGRAM = "microgpt"


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


def build_program(spec: TrainingSpec):
    from circuitsketch.models import microgpt

    return microgpt.build(
        list(spec.docs), steps=spec.steps, init=spec.init_params(), seed=spec.seed
    )


_COMPILED: dict[tuple[str, int], Any] = {}
_LOCK = threading.Lock()


def compiled(spec: TrainingSpec, degree: int):
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


def fingerprints(cp) -> dict[str, str]:
    """Content hashes of the compiled circuits and of the generated module."""
    from compiler import cache

    out = {f"step:{k!r}": cp.steps_c[k].circuit.fingerprint() for k in cp.step_keys}
    out.update({f"output:{k!r}": cp.outs_c[k].circuit.fingerprint() for k in cp.out_keys})
    out["module"] = cache.source_hash(cp.source)
    return out


def hyperparameters(program) -> dict[str, Any]:
    """The model and optimizer settings recorded in a sketch's manifest."""
    from dataclasses import asdict, is_dataclass

    from circuitsketch.models import microgpt

    opt = program.optimizer
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
