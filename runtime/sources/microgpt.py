"""microgpt as a program source: documents from a text file, test inputs as text.

A ``MicrogptSource`` (documents, steps, initial parameters from a seed or an
--init file) rebuilds the shipped model's training run; ``model_config``
holds the model's own settings (empty: the shipped one-layer model) and
``train_config`` how it is trained (empty: one document per step in order,
the spec's Adam), both only where they differ from the spec
(``runtime.sources.microgpt_settings``).  ``microgpt.build`` receives them as
keywords, the key hashes them and a manifest records them; a run with
minibatches or shuffling also stores its schedule (``schedule.npy``), which
reopening the sketch checks step by step.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Hashable, Sequence
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
from runtime.sources.documents import _warn, read_document_lines
from runtime.sources.inputs import TestInput, as_test_input
from runtime.sources.microgpt_settings import (
    MODEL_DEFAULTS,
    build_keywords,
    normalized_model,
    normalized_train,
    num_steps,
    schedule_array,
)
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


def warn_cut_test_docs(docs: Sequence[str], block_size: int,
                       warn: Callable[[str], None] | None = None) -> None:
    """Warn of test documents longer than the context: the model cuts them as it cuts
    training documents (n = min(block_size, len(tokens) - 1) predictions), silently."""
    for d in docs:
        if len(d) + 1 > block_size:  # its characters and the closing BOS are predicted
            (warn or _warn)(
                f"test document {d!r} has {len(d)} characters: microgpt's context is "
                f"{block_size} positions, so its loss covers only its first {block_size} "
                "predicted tokens (the rest is cut, as in training documents)"
            )


def load_init(path: str | Path, model_config: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, str]:
    """Initial parameters of an .npz (validated) as a flat vector in spec order, and its sha256."""
    from circuitsketch.models import microgpt
    from circuitsketch.models.microgpt_config import Config

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"init file {str(p)!r} does not exist")
    params = microgpt.load_params(p, config=Config(**(model_config or {})))
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
    train_config: dict[str, Any] = field(default_factory=dict)  # empty: the spec's training
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
        self.model_config = normalized_model(self.model_config)
        self.train_config = normalized_train(self.train_config)
        warmup = int(self.train_config.get("warmup", 0))
        if warmup >= self.steps:
            raise ValueError(
                f"--warmup {warmup} must be less than the number of training steps ({self.steps})"
            )
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
            if self.train_config:
                h.update(f";train={json.dumps(self.train_config, sort_keys=True)}".encode())
            self._key = h.hexdigest()
        return self._key

    def init_params(self) -> dict[str, np.ndarray] | None:
        """The initial parameters by name (None: drawn from the seed when building)."""
        if self.init is None:
            return None
        from circuitsketch.models import microgpt
        from circuitsketch.models.microgpt_config import Config

        out, pos = {}, 0
        for name, shape in microgpt.param_shapes(config=Config(**self.model_config)).items():
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
            **build_keywords(self.model_config, self.train_config),
        )

    @property
    def minibatched(self) -> bool:
        """Whether steps differ from the spec's one document s mod N per step."""
        return self.train_config.get("batch_size", 1) != 1 or "shuffle_seed" in self.train_config

    def schedule(self) -> list[tuple[int, ...]]:
        """The documents of every step (what ``build`` trains on, without tracing)."""
        from circuitsketch.batches import minibatches

        return minibatches(
            self.num_docs,
            int(self.train_config.get("batch_size", 1)),
            self.steps,
            shuffle_seed=self.train_config.get("shuffle_seed"),
        )

    # ---- a sketch's manifest
    def model_settings(self) -> dict[str, Any]:
        """The model's settings as a manifest records them: the shipped ones, then model_config."""
        from circuitsketch.models import microgpt
        from circuitsketch.models.microgpt_config import Config

        cfg = Config(**self.model_config)
        settings: dict[str, Any] = {
            "n_layer": cfg.n_layer,
            "n_embd": cfg.n_embd,
            "n_head": cfg.n_head,
            "head_dim": cfg.head_dim,
            "block_size": cfg.block_size,
            "mlp_dim": cfg.mlp_dim,
            "init_std": microgpt.INIT_STD,
            "rms_eps": microgpt.RMS_EPS,
        }
        if cfg.activation != MODEL_DEFAULTS["activation"]:  # the spec's keeps its manifest
            settings["activation"] = cfg.activation
        return settings

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
        if self.train_config:
            config["train_config"] = dict(self.train_config)
        return config

    def stored_arrays(self) -> dict[str, np.ndarray]:
        # an --init vector is kept, so that `metagrad SKETCH` can rebuild the training run
        out = {} if self.init is None else {"init.npy": self.init}
        if self.minibatched:  # which documents each step trained on
            out["schedule.npy"] = schedule_array(self.schedule())
        return out

    def check_schedule(self, sketch: Sketch) -> None:
        """SketchError unless the sketch's stored schedule is the one this source trains."""
        if not self.minibatched and "schedule.npy" not in sketch.manifest["files"]:
            return
        where = f"sketch {str(sketch.path)!r}"
        if "schedule.npy" not in sketch.manifest["files"]:
            raise SketchError(f"{where} stores no schedule.npy for its minibatched training run")
        stored, mine = sketch.load("schedule.npy"), schedule_array(self.schedule())
        if stored.shape != mine.shape or not np.array_equal(stored, mine):
            bad = next((s for s in range(min(len(stored), len(mine)))
                        if not np.array_equal(stored[s], mine[s])), min(len(stored), len(mine)))
            raise SketchError(
                f"{where}: its stored schedule differs from the one its settings draw now "
                f"(first at step {bad}); numpy's random generator or the schedule changed: "
                "recompile the sketch"
            )

    @classmethod
    def reopen(cls, sketch: Sketch, ref: str | None = None, full: bool = False) -> MicrogptSource:
        where = f"sketch {str(sketch.path)!r}"
        if ref is not None and ref != cls.kind:
            raise SketchError(f"--program {ref}: {where} is of microgpt, not a user program")
        docs = tuple(sketch.docs())
        settings = {
            "model_config": dict(sketch.config.get("model_config", {})),
            "train_config": dict(sketch.config.get("train_config", {})),
        }
        source = cls._reopened(sketch, docs, full, settings)
        source.check_schedule(sketch)
        return source

    @classmethod
    def _reopened(cls, sketch: Sketch, docs: tuple[str, ...], full: bool,
                  settings: dict[str, Any]) -> MicrogptSource:
        where = f"sketch {str(sketch.path)!r}"
        if not full:  # the circuits only (coefficients): no need for the initial parameters
            return cls(docs, sketch.steps, seed=sketch.seed, **settings)
        init = sketch.config.get("init", {})
        if "seed" in init:
            return cls(docs, sketch.steps, seed=int(init["seed"]), **settings)
        if "init.npy" in sketch.manifest["files"]:
            return cls(docs, sketch.steps, init=sketch.load("init.npy"), **settings)
        init_file = sketch.manifest.get("info", {}).get("init_file")
        if init_file and Path(init_file).is_file() and sha256_file(init_file) == init.get("sha256"):
            init_vec = load_init(init_file, settings["model_config"])[0]
            return cls(docs, sketch.steps, init=init_vec, **settings)
        raise SketchError(
            f"{where} was compiled with an --init file that is no longer at "
            f"{init_file!r} (or has changed): cannot rebuild its training run"
        )

    @classmethod
    def check_model(cls, sketch: Sketch, asked: dict[str, Any]) -> None:
        # a setting recorded only when changed (activation) is the default when absent
        model = {"activation": MODEL_DEFAULTS["activation"],
                 **sketch.config.get("hyperparameters", {})}
        for key, value in asked.items():
            if model.get(key) != value:
                raise ValueError(
                    f"--{key.replace('_', '-')} {value}: sketch {str(sketch.path)!r} is of a "
                    f"model with {key} = {model.get(key)}; it answers only for its own model "
                    "(compile a sketch of this one)"
                )

    # ---- from the command line
    @classmethod
    def from_options(cls, ref: str | None, options: TrainingOptions) -> MicrogptSource:
        if options.docs is None:
            raise ValueError(
                "give the training documents with --docs FILE (microgpt) or a user program "
                "with --program FILE.py:FN"
            )
        model = normalized_model(options.model_config)  # a bad setting before any file
        train = normalized_train(options.train_config)
        docs, docs_sha = read_training_docs(options.docs, options.skip_blank_lines)
        init, init_sha = (None, None) if options.init is None else load_init(options.init, model)
        steps = num_steps(len(docs), options.steps, options.epochs, train.get("batch_size", 1))
        return cls(
            tuple(docs),
            steps,
            seed=options.seed,
            init=init,
            model_config=model,
            train_config=train,
            docs_sha256=docs_sha,
            init_sha256=init_sha,
        )

    @classmethod
    def for_training(
        cls, ref: str | None, options: TrainingOptions, request: TestRequest
    ) -> tuple[MicrogptSource, list[TestInput]]:
        cls.check_tests(cls._texts(request))  # a mistyped --doc before any file
        source = cls.from_options(ref, options)
        return source, source.test_inputs(request)

    @classmethod
    def inspect_circuit(
        cls,
        ref: str | None,
        circuit: str,
        length: int | None,
        docs_file: str | None,
        options: TrainingOptions | None = None,
    ) -> tuple[Program, Hashable, str]:
        from circuitsketch.models import microgpt

        length = INSPECTED_LENGTH if length is None else length
        options = options or TrainingOptions()
        try:
            if docs_file is None:
                docs = microgpt.read_docs(microgpt.corpus_path())[:INSPECTED_DOCS]
            else:
                # compile's reader, so inspect refuses (or skips) what compile does
                docs, _ = read_training_docs(docs_file, options.skip_blank_lines)
            source = cls(tuple(docs), len(docs), model_config=options.model_config,
                         train_config=options.train_config)
            prog = source.program()
        except OSError as e:
            raise ValueError(str(e)) from None
        buckets = tuple(prog.meta.get("buckets", sorted(prog.output_circuits)))
        if circuit == "output":
            buckets = tuple(sorted(prog.output_circuits))
        table = prog.step_circuits if circuit == "step" else prog.output_circuits
        if length not in buckets:
            raise ValueError(
                f"--length {length}: microgpt has length buckets {', '.join(map(str, buckets))}"
            )
        batch = int(source.train_config.get("batch_size", 1))
        key: Any = length
        if circuit == "step" and batch > 1:  # (documents, bucket, packed rows)
            key = microgpt.busiest_packed_key(prog.steps, batch, length)
        if key not in table:
            if batch > len(docs):  # the one batch per epoch is smaller: none is inspected
                raise ValueError(
                    f"--batch-size {batch}: there are only {len(docs)} training documents, so "
                    f"no full batch of {batch} trains and there is no step circuit for one "
                    f"(inspect shows full batches: use --batch-size {len(docs)} or less)"
                )
            have = ", ".join(str(b) for b in sorted({k[1] if batch > 1 else k for k in table
                                                     if batch == 1 or k[0] == batch}))
            what = f"full training batch of {batch}" if batch > 1 else "training document"
            smaller = "; smaller last batches are left out" if batch > 1 else ""
            raise ValueError(
                f"--length {length}: no {what} falls in that bucket, so there is "
                f"no step circuit for it (buckets with one: {have}{smaller})"
            )
        of = (f", batches of {batch} packed in {key[2]} rows"
              if circuit == "step" and batch > 1 else "")
        what = f"{cls.kind} {circuit} circuit, length bucket {length}{of}, {len(docs)} docs"
        return prog, key, what

    # ---- test inputs: texts, the same whatever the documents
    def test_inputs(self, request: TestRequest) -> list[TestInput]:
        """The --doc texts; one longer than the model's context is warned about."""
        from circuitsketch.models.microgpt_config import Config

        items = self._texts(request)
        warn_cut_test_docs([t.value for t in items], Config(**self.model_config).block_size)
        return items

    @classmethod
    def _texts(cls, request: TestRequest) -> list[TestInput]:
        if request.arrays:
            raise ValueError(
                "--test-npz and --test-index give a user program's test input; microgpt's "
                "test documents are texts: use --doc"
            )
        if not request.texts:
            raise ValueError("give a test document with --doc")
        if not request.many and len(request.texts) > 1:
            raise ValueError("this command takes one test input (one --doc)")
        return [as_test_input(t) for t in request.texts]

    @classmethod
    def check_tests(cls, tests: Sequence[Any]) -> list[TestInput]:
        items = [as_test_input(t) for t in tests]
        if any(not isinstance(t.value, str) for t in items):
            raise ValueError("microgpt's test inputs are texts (--doc), not arrays")
        check_test_docs([t.value for t in items])
        return items
