"""The program-source interface: where a training program comes from.

A ``ProgramSource`` is everything the command line and the runtime need to
know about one training run without knowing *which* program it is: how to
build the ``Program``, a stable key, what a sketch's manifest records about
it (and how to reopen it from a sketch, checked against that record), how
its documents are labelled and selected, and how test inputs are given
(``--doc`` text for microgpt, ``--test-npz`` / ``--test-index`` arrays for a
user program) and checked.  Each implementation answers in its own way, so
no caller branches on the kind of program.

A source is small and picklable: worker processes receive it and build the
program themselves (``runtime.spec.compiled``).
"""

from __future__ import annotations

import abc
from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from runtime.sources.inputs import TestInput

if TYPE_CHECKING:
    from circuitsketch.program import Program
    from runtime.store import Sketch

__all__ = ["ProgramSource", "TestRequest", "TrainingOptions", "num_params", "optimizer_settings"]


@dataclass(frozen=True)
class TrainingOptions:
    """A training run as the command line describes it (None: the option was not given)."""

    docs: str | None = None  # --docs FILE
    init: str | None = None  # --init INIT.npz
    steps: int | None = None  # --steps T
    seed: int = 0  # --seed S
    seed_only_inits: bool = False  # the seed draws nothing but initial parameters (retrain)
    skip_blank_lines: bool = False  # --skip-blank-lines: blank lines in --docs skipped, warned
    model_config: dict[str, Any] = field(default_factory=dict)  # a model's own settings


@dataclass(frozen=True)
class TestRequest:
    """Test inputs as given: texts (--doc) and arrays, ("npz", FILE) or ("index", I)."""

    __test__ = False  # not a pytest test class

    texts: tuple[str, ...] = ()
    arrays: tuple[tuple[str, Any], ...] = ()
    many: bool = True  # False: the command takes exactly one test input


class ProgramSource(abc.ABC):
    """One training run's program, behind the interface the CLI and the runtime use."""

    kind: ClassVar[str]  # the manifest's "program" value; also what --program names
    text_documents: ClassVar[bool]  # documents are texts: select them by substring or line

    # ---- identity and size (`docs` and `steps` are fields or properties of each source)
    docs: tuple[str, ...]  # one label per training document: its text, or a summary of its arrays
    steps: int  # number of training steps

    @property
    @abc.abstractmethod
    def key(self) -> str:
        """sha256 over everything that determines the training run."""

    @property
    def num_docs(self) -> int:
        return len(self.docs)

    # ---- building
    @abc.abstractmethod
    def program(self) -> Program:
        """The traced training program."""

    # ---- a sketch's manifest
    @abc.abstractmethod
    def manifest_config(
        self, program: Program, docs_sha256: str | None = None, init_sha256: str | None = None
    ) -> dict[str, Any]:
        """What the sketch's configuration records about this run (and checks on resume).

        `program` is the built program (for its hyper-parameters); the shas,
        when given, are of the files the documents and initial parameters
        were read from.
        """

    def manifest_info(self) -> dict[str, Any]:
        """Informative manifest entries (not checked on resume), e.g. where a file is."""
        return {}

    def stored_arrays(self) -> dict[str, np.ndarray]:
        """Arrays stored beside the sketch so the run can be rebuilt from it alone."""
        return {}

    @classmethod
    @abc.abstractmethod
    def reopen(cls, sketch: Sketch, ref: str | None = None, full: bool = False) -> ProgramSource:
        """The source a sketch was made from, checked against its manifest.

        `ref` is the --program given with the sketch (where a file is now);
        `full` asks for the exact initial parameters (to retrain), not only
        the circuits (to evaluate coefficients).
        """

    # ---- from the command line
    @classmethod
    @abc.abstractmethod
    def from_options(cls, ref: str | None, options: TrainingOptions) -> ProgramSource:
        """The source of `--program REF` and the training options (ValueError on a misfit)."""

    @classmethod
    def for_training(
        cls, ref: str | None, options: TrainingOptions, request: TestRequest
    ) -> tuple[ProgramSource, list[TestInput]]:
        """The source of a training run and its test inputs as read (checked later, by use).

        The default builds the source first: a user program's test inputs
        (a training document's arrays) need it.
        """
        source = cls.from_options(ref, options)
        return source, source.test_inputs(request)

    @classmethod
    @abc.abstractmethod
    def inspect_circuit(
        cls, ref: str | None, circuit: str, length: int | None, docs_file: str | None
    ) -> tuple[Program, Hashable, str]:
        """The program whose step or output `circuit` to inspect, that circuit's key, and a
        one-line description of it."""

    # ---- test inputs
    @abc.abstractmethod
    def test_inputs(self, request: TestRequest) -> list[TestInput]:
        """The test inputs given on the command line, read (ValueError on the wrong kind)."""

    @abc.abstractmethod
    def check_tests(self, tests: Sequence[Any]) -> list[TestInput]:
        """`tests` as TestInputs the program can evaluate (ValueError naming a bad one)."""


def optimizer_settings(program: Program) -> dict[str, Any]:
    """The optimizer's name and settings, as recorded in a manifest."""
    opt = program.optimizer
    return {"name": type(opt).__name__, **(asdict(opt) if is_dataclass(opt) else {})}


def num_params(program: Program) -> int:
    """Number of trained parameters."""
    return int(sum(np.prod(np.shape(program.init_state[p])) for p in program.params))
