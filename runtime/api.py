"""The Python API: the command line's whole path, from Python (docs/api.md).

::

    import runtime.api as rt

    src = rt.microgpt(["emma", "olivia", ...], steps=20, seed=3)  # or rt.program("f.py:build")
    cp = rt.compile_program(src, degree=0)        # compiler.compiled.CompiledProgram
    sk = rt.precompute(src, "sk", degree=3, directions=64)         # -> rt.Sketch
    res = sk.query([[0, 3], [5]], ["olivia"])     # res.prediction, res.stderr: (S, D)
    truth = sk.retrain([[0, 3], [5]], ["olivia"])  # (S, D)

It sits in the runtime layer, beside the CLI's own calls: it imports the
runtime modules (and through them the compiler and ``circuitsketch``), and
nothing below imports it.  Test inputs are microgpt texts or, for a user
program, dicts of arrays named and shaped like a training document's.
Deletion sets are ``DeletionSets``, a JSONL path, an (S, L) index matrix or
a list of index lists.  Errors are ValueError subclasses with the CLI's
one-line messages.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from runtime import estimators as E
from runtime.batch_query import BatchResult, query_sets
from runtime.deletion_sets import DeletionSets, as_sets, read_sets, sample_sets
from runtime.sources import ProgramSource, TestInput, TrainingOptions, sketch_source, source_class
from runtime.store import Sketch as StoredSketch

__all__ = [
    "BatchResult",
    "DeletionSets",
    "Sketch",
    "compile_program",
    "estimators",
    "microgpt",
    "open_sketch",
    "precompute",
    "program",
    "read_sets",
    "retrain",
    "sample_sets",
]

Sets = DeletionSets | str | Path | np.ndarray | Sequence[Sequence[int]]


def microgpt(
    docs: Sequence[str] | str | Path,
    steps: int | None = None,
    seed: int = 0,
    init: str | Path | None = None,
    *,
    epochs: int | None = None,
    model: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
) -> ProgramSource:
    """microgpt trained on `docs` (a list of names, or a file with one per line) for `steps`
    steps or `epochs` epochs (default: one epoch), from initial parameters drawn from
    `seed` or read from an `init` .npz (as ``--docs``, ``--steps``, ``--epochs``,
    ``--seed``, ``--init``).  `model`: its size and MLP, keys n_layer, n_embd, n_head,
    block_size, activation ("gelu" or "relu"); `training`: how it is trained, keys
    batch_size, shuffle_seed, optimizer, lr, lr_schedule, warmup, weight_decay, momentum,
    nesterov, clip_norm (the options of the same names, docs/microgpt.md)."""
    if isinstance(docs, (str, Path)):
        opts = TrainingOptions(
            docs=str(docs), init=None if init is None else str(init), steps=steps, seed=seed,
            model_config=dict(model or {}), train_config=dict(training or {}), epochs=epochs,
        )
        return source_class(None).from_options(None, opts)
    from runtime.sources.microgpt import MicrogptSource, check_test_docs, load_init
    from runtime.sources.microgpt_settings import normalized_model, normalized_train, num_steps

    docs = tuple(docs)
    check_test_docs(docs)  # every character in the vocabulary
    model_config, train_config = normalized_model(model or {}), normalized_train(training or {})
    flat = None if init is None else load_init(init, model_config)[0]
    total = num_steps(len(docs), steps, epochs, train_config.get("batch_size", 1))
    return MicrogptSource(docs, total, seed=seed, init=flat, model_config=model_config,
                          train_config=train_config)


def program(ref: str) -> ProgramSource:
    """A user program, ``"FILE.py:FUNCTION"`` (as ``--program``): FUNCTION() returns a
    ``circuitsketch`` Program (docs/api.md)."""
    return source_class(ref).from_options(ref, TrainingOptions())


def compile_program(source: ProgramSource, degree: int = 0) -> Any:
    """The source's program compiled at `degree` (a ``compiler.compiled.CompiledProgram``,
    built once per process and cached on disk; docs/api.md lists its methods)."""
    from runtime.spec import compiled

    return compiled(source, degree)


def precompute(
    source: ProgramSource,
    out: str | Path,
    degree: int,
    directions: int | None = None,
    seed: int = 0,
    directions_file: str | Path | None = None,
    workers: int = 1,
    scheduler: str | None = None,
    chunk_size: int | None = None,
    progress: bool = False,
    real_beside: bool = False,
) -> Sketch:
    """Compile (or resume) a sketch into directory `out` (as ``circuitsketch compile``);
    `real_beside`: compile the real-mode code meanwhile in a second process (as the
    command does; ``runtime.real_beside``)."""
    from runtime.precompute import DEFAULT_CHUNK_SIZE
    from runtime.precompute import precompute as run

    report = run(
        out,
        source,
        degree,
        num_directions=directions,
        seed=seed,
        directions_file=directions_file,
        workers=workers,
        scheduler=scheduler,
        chunk_size=chunk_size or DEFAULT_CHUNK_SIZE,
        progress=progress,
        real_beside=real_beside,
    )
    return Sketch(report.sketch)


def open_sketch(path: str | Path, program: str | None = None) -> Sketch:
    """Open a sketch directory; `program` ("FILE.py:FN") is where a user program's file is
    now, if it moved since the sketch was compiled."""
    return Sketch(StoredSketch.open(path), program)


def retrain(
    source: ProgramSource,
    sets: Sets,
    tests: Sequence[Any],
    weight: float = 1.0,
    workers: int = 1,
    scheduler: str | None = None,
    out: str | Path | None = None,
) -> np.ndarray:
    """Exact test outputs (S, D) after training without each deletion set (as ``retrain
    --sets``): in parallel, and resumable through `out` (a JSONL file)."""
    from runtime.batch_retrain import batch_retrain

    s = as_sets(sets, source.num_docs, weight)
    return batch_retrain(source, s, tests, out, workers, scheduler).losses


def estimators() -> dict[str, str]:
    """The registered estimators, name -> what it does (plus ``auto``)."""
    return {
        **{e.name: e.summary for e in E.ESTIMATORS.values()},
        E.AUTO: "per query, the estimator evaluate found best at the nearest set size",
    }


def _all_stored(got: dict[str, Any], items: Sequence[TestInput], what: str) -> list[Any]:
    """The results of `items` in order; ValueError naming the first one not stored."""
    missing = [t.label for t in items if got[t.key] is None]
    if missing:
        raise ValueError(f"no stored {what} for {missing[0]!r} (compute=False)")
    return [got[t.key] for t in items]


class Sketch:
    """A sketch opened for questions: ``query``, ``influence``, ``coefficients``,
    ``metagradient``, ``retrain``, ``evaluate``, ``stability``.

    ``store`` is the directory's ``runtime.store.Sketch``; ``source`` the
    program source it was made from.
    """

    def __init__(self, store: StoredSketch, program: str | None = None):
        self.store = store
        self.source = sketch_source(store, program)
        self.warn: Callable[[str], None] | None = None  # warnings: silent unless set

    @classmethod
    def open(cls, path: str | Path, program: str | None = None) -> Sketch:
        return open_sketch(path, program)

    def __repr__(self) -> str:
        return (
            f"Sketch({str(self.path)!r}: N = {self.num_docs}, T = {self.steps}, "
            f"K = {self.degree}, M = {self.num_directions})"
        )

    # ---- what it is
    @property
    def path(self) -> Path:
        return Path(self.store.path)

    @property
    def num_docs(self) -> int:
        return self.store.num_docs

    @property
    def steps(self) -> int:
        return self.store.steps

    @property
    def degree(self) -> int:
        return self.store.degree

    @property
    def num_directions(self) -> int:
        return self.store.num_directions

    def docs(self) -> list[str]:
        """Each training document's label (microgpt: its text)."""
        return self.store.docs()

    def sets(self, sets: Sets, weight: float = 1.0) -> DeletionSets:
        """`sets` as checked DeletionSets over this sketch's documents."""
        return as_sets(sets, self.num_docs, weight)

    def tests(self, tests: Sequence[Any]) -> list[TestInput]:
        """Test inputs as checked TestInputs (ValueError naming a bad one)."""
        return self.source.check_tests(list(tests))

    # ---- answers
    def coefficients(self, tests: Sequence[Any]) -> np.ndarray:
        """(D, M, K+1) complex: c_0..c_K of each test output along every direction."""
        from runtime.query import coefficients

        items = self.tests(tests)
        got = coefficients(self.store, items, warn=self.warn)
        return np.stack([got[t.key] for t in items])

    def metagradient(
        self, tests: Sequence[Any], compute: bool = True, recompute: bool = False
    ) -> np.ndarray:
        """(D, N) exact dF/dw of each test output, stored beside the sketch once computed."""
        from runtime.metagrad import sketch_metagradients

        items = self.tests(tests)
        got = sketch_metagradients(
            self.store, items, compute=compute, recompute=recompute, warn=self.warn
        )
        return np.stack([r.g for r in _all_stored(got, items, "metagradient")])

    def second_order(
        self,
        tests: Sequence[Any],
        compute: bool = True,
        workers: int = 1,
        scheduler: str | None = None,
        progress: bool | None = False,
        diagonal: str = "exact",
        window: int | None = None,
        sample: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(diag, rows), each (D, N): H's exact diagonal and its row sums H 1 per test output,
        the second-order estimator's data (``hessian SKETCH``), stored beside the sketch once
        computed; the diagonal's series passes run once per sketch, on `workers` processes
        or a Dask `scheduler`.  diagonal="windowed": the windowed diagonal instead
        (``second-order-windowed``'s data; `window` steps, `sample` documents exact)."""
        from runtime.second_order import Windowed, sketch_second_order

        if diagonal not in ("exact", "windowed"):
            raise ValueError(f"diagonal: {diagonal!r}; expected 'exact' or 'windowed'")
        windowed = None
        if diagonal == "windowed":
            d = Windowed()
            windowed = Windowed(d.window if window is None else window,
                                d.sample if sample is None else sample)
        items = self.tests(tests)
        got = sketch_second_order(self.store, items, compute=compute, warn=self.warn,
                                  workers=workers, scheduler=scheduler, progress=progress,
                                  windowed=windowed)
        found = _all_stored(got, items, "second-order data")
        return np.stack([r.diag for r in found]), np.stack([r.rows for r in found])

    def group_terms(
        self,
        tests: Sequence[Any],
        doc_groups: str = "letters",
        compute: bool = True,
        workers: int = 1,
        scheduler: str | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(members (K, N), H 1_Gk (D, K, N), T(1_Gk, 1_Gk, .) (D, K, N), the test outputs
        retrained without each group and without its part (D, 2, K), ``anchor_sets``): the
        terms of the groups `doc_groups` ("letters" or a JSONL file of index sets) that
        ``third-order-groups`` reads (``hessian --doc-groups``), stored beside the sketch."""
        from runtime.group_terms import group_terms_data, read_groups

        items = self.tests(tests)
        groups = read_groups(doc_groups, self.source, self.num_docs)
        got = group_terms_data(self.store, items, groups, compute, self.warn, workers, scheduler)
        found = _all_stored(got, items, "group terms")
        anchors = [np.full((2, len(r.members)), np.nan) if r.anchors is None else r.anchors
                   for r in found]  # none: stored before anchors existed, not computed
        return (found[0].members, np.stack([r.hv for r in found]),
                np.stack([r.tv for r in found]), np.stack(anchors))

    def query(
        self,
        sets: Sets,
        tests: Sequence[Any],
        estimator: str = "sketch",
        weight: float = 1.0,
        degree: int | None = None,
        groups: int | None = None,
        compute_first_order: bool = True,
    ) -> BatchResult:
        """Predicted test outputs after each deletion set: ``.prediction``, ``.stderr``,
        ``.estimator`` (S, D), ``.records()`` (as ``query --sets``)."""
        return query_sets(
            self.store,
            self.tests(tests),
            self.sets(sets, weight),
            estimator,
            E.Options(degree, groups),
            compute_first_order,
            self.warn,
        )

    def influence(
        self,
        tests: Sequence[Any],
        estimator: str = "sketch",
        weight: float = 1.0,
        degree: int | None = None,
        groups: int | None = None,
    ) -> BatchResult:
        """Every single-document deletion at once: sets 0..N-1 are {0}, ..., {N-1}."""
        return self.query(
            DeletionSets.singletons(self.num_docs, weight),
            tests,
            estimator,
            degree=degree,
            groups=groups,
        )

    def retrain(
        self,
        sets: Sets,
        tests: Sequence[Any],
        weight: float = 1.0,
        workers: int = 1,
        scheduler: str | None = None,
        out: str | Path | None = None,
    ) -> np.ndarray:
        """Exact outputs (S, D) by retraining the sketch's own training run without each set."""
        full = sketch_source(self.store, full=True)
        return retrain(full, self.sets(sets, weight), tests, weight, workers, scheduler, out)

    def evaluate(
        self,
        tests: Sequence[Any],
        sizes: Sequence[int] | None = None,
        sets_per_size: int = 50,
        seed: int = 0,
        sets: Sets | None = None,
        estimators: Sequence[str] | None = None,
        out: str | Path | None = None,
        workers: int = 1,
        scheduler: str | None = None,
        degree: int | None = None,
        groups: int | None = None,
        resamples: int = 1000,
        store_findings: bool = True,
        figure: bool = True,
    ) -> dict[str, Any]:
        """Every estimator against retraining (as ``circuitsketch evaluate``); the report."""
        from runtime.evaluate import evaluate

        given = None if sets is None else self.sets(sets)
        return evaluate(
            self.store,
            self.tests(tests),
            given,
            sizes,
            sets_per_size,
            seed,
            estimators,
            out,
            workers,
            scheduler,
            E.Options(degree, groups),
            resamples,
            store_findings,
            figure,
            self.warn,
        )

    def stability(self, test: Any) -> tuple[np.ndarray, np.ndarray]:
        """The stability curve of one test output: per direction (M, K+1) and the mean."""
        from runtime.estimate import stability

        return stability(self.coefficients([test])[0], self.num_docs)

    def verify(self) -> None:
        """Check every array's checksum (SketchError naming the first bad one)."""
        self.store.verify_all()
