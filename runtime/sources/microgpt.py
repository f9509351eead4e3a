"""microgpt as a program source: documents from a text file, test inputs as text.

A ``MicrogptSource`` (documents, steps, initial parameters from a seed or an
--init file) rebuilds the shipped model's training run; ``model_config``
holds the model's own settings (empty: the shipped one-layer model), which
``microgpt.build`` receives as keywords, the key hashes and a manifest
records, so a configurable model slots in without touching any caller.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
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
from runtime.sources.documents import read_document_lines, read_documents
from runtime.sources.inputs import TestInput, as_test_input
from runtime.spec import sha256_bytes, sha256_file
from runtime.store import SketchError

if TYPE_CHECKING:
    from circuitsketch.program import Program
    from runtime.store import Sketch

__all__ = ["MicrogptSource", "check_test_docs", "load_init", "read_training_docs"]

INSPECTED_DOCS = 20  # `inspect` without --docs: the first names of the shipped corpus
INSPECTED_LENGTH = 8  # `inspect` without --length: the short bucket


@functools.cache
def _tokenizer():
    from circuitsketch.models import microgpt

    return microgpt.Tokenizer.from_corpus()  # reads the whole corpus: once per process


def read_training_docs(path: str | Path, skip_blank: bool = False) -> tuple[list[str], str]:
    """Documents of FILE (one per line, stripped; ``runtime.sources.documents``) and the
    file's sha256.

    Every document is checked against the vocabulary here, so an unknown
    character is reported with its line before anything expensive starts.
    """
    p = Path(path)
    lines = read_document_lines(p, skip_blank=skip_blank)
    tok = _tokenizer()
    for i, (number, d) in enumerate(lines):
        try:
            tok.encode(d)
        except ValueError as e:
            raise ValueError(
                f"documents file {str(p)!r}, line {number}, document {i}: {e}"
            ) from None
    return [d for _, d in lines], sha256_file(p)


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
class MicrogptSource(ProgramSource):
    """microgpt trained on `docs` for `steps` steps, from `init` (flat) or drawn from `seed`."""

    kind: ClassVar[str] = "microgpt"
    text_documents: ClassVar[bool] = True

    docs: tuple[str, ...]
    steps: int
    seed: int = 0
    init: np.ndarray | None = None  # flat (P,) float64 in the model's parameter order
    model_config: dict[str, Any] = field(default_factory=dict)  # empty: the shipped model
    # sha256 of the files the documents and the init were read from (for the manifest)
    docs_sha256: str | None = field(default=None, repr=False, compare=False)
    init_sha256: str | None = field(default=None, repr=False, compare=False)
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
    def key(self) -> str:
        if self._key is None:
            h = hashlib.sha256()
            h.update(f"{self.kind};steps={self.steps};".encode())
            h.update("\n".join(self.docs).encode())
            if self.init is None:
                h.update(f";seed={self.seed}".encode())
            else:
                h.update(b";init=")
                h.update(self.init.tobytes())
            if self.model_config:  # the shipped model keeps the key it always had
                h.update(f";model={json.dumps(self.model_config, sort_keys=True)}".encode())
            self._key = h.hexdigest()
        return self._key

    def init_params(self) -> dict[str, np.ndarray] | None:
        """The initial parameters by name (None: drawn from the seed when building)."""
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

    def program(self) -> Program:
        from circuitsketch.models import microgpt

        return microgpt.build(
            list(self.docs),
            steps=self.steps,
            init=self.init_params(),
            seed=self.seed,
            **self.model_config,
        )

    # ---- a sketch's manifest
    def model_settings(self) -> dict[str, Any]:
        """The model's settings as a manifest records them: the shipped ones, then model_config."""
        from circuitsketch.models import microgpt

        shipped = {
            "n_layer": 1,
            "n_embd": microgpt.N_EMBD,
            "n_head": microgpt.N_HEAD,
            "head_dim": microgpt.HEAD_DIM,
            "block_size": microgpt.BLOCK_SIZE,
            "mlp_dim": microgpt.MLP_DIM,
            "init_std": microgpt.INIT_STD,
            "rms_eps": microgpt.RMS_EPS,
        }
        return {**shipped, **self.model_config}

    def manifest_config(
        self, program: Program, docs_sha256: str | None = None, init_sha256: str | None = None
    ) -> dict[str, Any]:
        config: dict[str, Any] = {
            "program": self.kind,
            "hyperparameters": {
                **self.model_settings(),
                "buckets": list(program.meta.get("buckets", ())),
                "optimizer": optimizer_settings(program),
                "num_params": num_params(program),
            },
            "docs_sha256": docs_sha256
            or self.docs_sha256
            or sha256_bytes(("\n".join(self.docs) + "\n").encode()),
            "init": {"seed": self.seed}
            if self.init is None
            else {"sha256": init_sha256 or self.init_sha256 or sha256_bytes(self.init.tobytes())},
        }
        if self.model_config:
            config["model_config"] = dict(self.model_config)
        return config

    def stored_arrays(self) -> dict[str, np.ndarray]:
        # an --init vector is kept, so that `metagrad SKETCH` can rebuild the training run
        return {} if self.init is None else {"init.npy": self.init}

    @classmethod
    def reopen(cls, sketch: Sketch, ref: str | None = None, full: bool = False) -> MicrogptSource:
        where = f"sketch {str(sketch.path)!r}"
        if ref is not None and ref != cls.kind:
            raise SketchError(f"--program {ref}: {where} is of microgpt, not a user program")
        docs, model = tuple(sketch.docs()), dict(sketch.config.get("model_config", {}))
        if not full:  # the circuits only (coefficients): no need for the initial parameters
            return cls(docs, sketch.steps, seed=sketch.seed, model_config=model)
        init = sketch.config.get("init", {})
        if "seed" in init:
            return cls(docs, sketch.steps, seed=int(init["seed"]), model_config=model)
        if "init.npy" in sketch.manifest["files"]:
            return cls(docs, sketch.steps, init=sketch.load("init.npy"), model_config=model)
        init_file = sketch.manifest.get("info", {}).get("init_file")
        if init_file and Path(init_file).is_file() and sha256_file(init_file) == init.get("sha256"):
            return cls(docs, sketch.steps, init=load_init(init_file)[0], model_config=model)
        raise SketchError(
            f"{where} was compiled with an --init file that is no longer at "
            f"{init_file!r} (or has changed): cannot rebuild its training run"
        )

    # ---- from the command line
    @classmethod
    def from_options(cls, ref: str | None, options: TrainingOptions) -> MicrogptSource:
        if options.docs is None:
            raise ValueError(
                "give the training documents with --docs FILE (microgpt) or a user program "
                "with --program FILE.py:FN"
            )
        docs, docs_sha = read_training_docs(options.docs, options.skip_blank_lines)
        init, init_sha = (None, None) if options.init is None else load_init(options.init)
        return cls(
            tuple(docs),
            options.steps if options.steps is not None else len(docs),
            seed=options.seed,
            init=init,
            model_config=dict(options.model_config),
            docs_sha256=docs_sha,
            init_sha256=init_sha,
        )

    @classmethod
    def for_training(
        cls, ref: str | None, options: TrainingOptions, request: TestRequest
    ) -> tuple[MicrogptSource, list[TestInput]]:
        tests = cls.check_tests(cls.test_inputs(request))  # a mistyped --doc before any file
        return cls.from_options(ref, options), tests

    @classmethod
    def inspect_circuit(
        cls, ref: str | None, circuit: str, length: int | None, docs_file: str | None
    ) -> tuple[Program, Hashable, str]:
        from circuitsketch.models import microgpt

        length = INSPECTED_LENGTH if length is None else length
        try:
            if docs_file is None:
                docs = microgpt.read_docs(microgpt.corpus_path())[:INSPECTED_DOCS]
            else:
                docs = read_documents(docs_file, "--docs", blank_ok=True)
            prog = cls(tuple(docs), len(docs)).program()
        except OSError as e:
            raise ValueError(str(e)) from None
        buckets = tuple(prog.meta.get("buckets", sorted(prog.output_circuits)))
        table = prog.step_circuits if circuit == "step" else prog.output_circuits
        if length not in buckets:
            raise ValueError(
                f"--length {length}: microgpt has length buckets {', '.join(map(str, buckets))}"
            )
        if length not in table:
            raise ValueError(
                f"--length {length}: no training document falls in that bucket, so "
                f"there is no step circuit for it (have {', '.join(map(str, table))})"
            )
        what = f"{cls.kind} {circuit} circuit, length bucket {length}, {len(docs)} docs"
        return prog, length, what

    # ---- test inputs: texts, the same whatever the documents (so no instance is needed)
    @classmethod
    def test_inputs(cls, request: TestRequest) -> list[TestInput]:
        if request.arrays:
            raise ValueError(
                "--test-npz and --test-index give a user program's test input; microgpt's "
                "test documents are texts: use --doc"
            )
        if not request.texts:
            raise ValueError("give a test document with --doc")
        return [as_test_input(t) for t in request.texts]

    @classmethod
    def check_tests(cls, tests: Sequence[Any]) -> list[TestInput]:
        items = [as_test_input(t) for t in tests]
        if any(not isinstance(t.value, str) for t in items):
            raise ValueError("microgpt's test inputs are texts (--doc), not arrays")
        check_test_docs([t.value for t in items])
        return items
