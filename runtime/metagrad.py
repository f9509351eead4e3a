"""Exact first-order influence: reverse mode backwards through the whole training run.

g = dF/dw at w = 0 (F = test loss after training, w the data weights) is one
reverse pass: the cotangent of the state is carried from step T-1 down to 0
through the transposed step circuit (``grad.reverse_step``), and each step
adds its weight cotangent to g[doc].  Memory: the forward trajectory is
stored whole (T states of S floats; 100 MB for microgpt at T = 1000), not
recomputed from checkpoints.  Both loops run in compiled code (degree 0).

Stored beside a sketch (``sketch_metagradients``)::

    SKETCH/metagrad/<sha256(key)>.npy   (N,) float64, g for one test input
    SKETCH/metagrad/<sha256(key)>.json  its checksum, the test input, the checksums of
                                        what it was computed from, the time it took

a derived result of the sketch (``runtime.derived``), so each test input's g
is computed once; one computed from another state of the sketch (or whose
bytes fail the checksum) is dropped with a warning and computed again, never
used; ``recompute`` overwrites it.  Before storing anything, the training run rebuilt from the
sketch's program source must reproduce the sketch's undeleted parameters.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from circuitsketch import interpret
from circuitsketch.grad import grad, reverse_step
from circuitsketch.program import LOSS, WEIGHT, Program, Step, per_document
from compiler.compiled import CompiledProgram

FWD = "fwd."


@dataclass(frozen=True)
class _NoSchedule:
    """The reverse run's per-step scalars are already in each step's data."""

    def schedule(self, step: int, num_steps: int) -> dict[str, float]:
        return {}

    def buffers(self, name: str) -> tuple[str, ...]:
        return ()


def trajectory(cp: CompiledProgram, weights=None) -> np.ndarray:
    """States before every step, (T+1, S): row s is the state step s reads."""
    T = cp.program.num_steps
    traj = np.empty((T + 1, cp.state_size))
    traj[-1], _ = cp.train(weights, trajectory=traj[:T])
    return traj


def reverse_program(program: Program, cp: CompiledProgram, traj: np.ndarray) -> Program:
    """The reverse run as a Program: its state is the cotangent of the forward state.

    Its initial state is a placeholder: each test input supplies its own
    (``Metagradient.__call__``).
    """
    names = list(program.init_state)
    T = program.num_steps
    steps = []
    for s in range(T - 1, -1, -1):
        fwd = cp.unpack_state(traj[s])
        step = program.steps[s]
        data = {**step.data, **program.optimizer.schedule(s, T), **{FWD + n: fwd[n] for n in names}}
        steps.append(Step(step.key, step.doc, data))
    circuits = {k: reverse_step(c, names, WEIGHT, FWD) for k, c in program.step_circuits.items()}
    return Program(
        name=f"{program.name}.reverse",
        init_state={n: np.zeros_like(program.init_state[n]) for n in names},
        params=tuple(names),
        step_circuits=circuits,
        output_circuits={},
        steps=steps,
        num_docs=program.num_docs,
        optimizer=_NoSchedule(),
        encode_test=program.encode_test,
        meta=dict(program.meta),
    )


class Metagradient:
    """dF/dw for any test input, for one training run (program, weights).

    Building it runs the forward pass once (storing the trajectory) and
    prepares the compiled reverse run; each call then costs one reverse run.
    """

    def __init__(self, program: Program, weights=None):
        self.program = program
        self.weights = weights
        self.forward = CompiledProgram(program, 0)
        self.traj = trajectory(self.forward, weights)
        self.reverse = CompiledProgram(reverse_program(program, self.forward, self.traj), 0)

    def seed(self, test) -> np.ndarray:
        """The cotangent of the final state: dF/dparams, zero for optimizer buffers."""
        prog = self.program
        final = self.forward.unpack_state(self.traj[-1])
        key, test_inputs = prog.encode_test(test)
        out_grad = grad(prog.output_circuits[key], LOSS, list(prog.params))
        g = interpret.evaluate(out_grad, {**{p: final[p] for p in prog.params}, **test_inputs})
        seed = np.zeros(self.forward.state_size)
        for name, (off, n) in self.forward.state_layout.items():
            if name in prog.params:
                seed[off : off + n] = np.ravel(g[f"grad_{name}"])
        return seed

    def __call__(self, test) -> np.ndarray:
        _, per_step = self.reverse.train(self.weights, state=self.seed(test))
        # per_step: each step's weight cotangent, one per document of a minibatch step
        return per_document(self.reverse.program, per_step)


def metagradient(program: Program, test, weights=None) -> np.ndarray:
    """dF/dw (N,) at the given weights (default 0) for the test loss F on `test`."""
    return Metagradient(program, weights)(test)


# ---------------------------------------------------------------- stored beside a sketch
METAGRAD_DIR = "metagrad"


@dataclass
class MetagradResult:
    """g for one test input, and where it came from."""

    label: str
    key: str
    g: np.ndarray  # (N,)
    computed: bool  # False: read from the sketch's store
    seconds: float  # the reverse pass that produced it (when it was computed)
    train_seconds: float | None  # one plain training run, for the cost ratio
    setup_seconds: float | None  # forward pass with trajectory and compiled reverse program
    path: str | None = None  # where it is stored
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def cost(self) -> float | None:
        """The reverse pass's time as a multiple of one training run."""
        if not self.train_seconds:
            return None
        return self.seconds / self.train_seconds


def metagradient_store(sketch, warn: Callable[[str], None] | None = None):
    """The store of metagradients beside `sketch` (``Sketch.derived``): computed from its
    configuration, documents, undeleted parameters and initial parameters if stored."""
    files = sketch.manifest["files"]
    inputs = [n for n in ("docs.npy", "params0.npy", "init.npy") if n in files]
    return sketch.derived(METAGRAD_DIR, inputs, label="stored metagradient", warn=warn)


def stored_metagradient(
    sketch, test, warn: Callable[[str], None] | None = None
) -> MetagradResult | None:
    """The stored g of `test` (a text or TestInput), None if there is none.

    One computed for another state of the sketch, or failing its checksum, is
    dropped with a warning (None: compute it again); SketchError if the
    sketch's own files it was computed from are corrupt.
    """
    from runtime.sources import as_test_input

    t = as_test_input(test)
    store = metagradient_store(sketch, warn)
    hit = store.get(
        t.key,
        shape=(sketch.num_docs,),
        dtype=np.float64,
        what=f"stored metagradient for {t.label!r}",
    )
    if hit is None:
        return None
    entry = hit.meta
    return MetagradResult(
        t.label,
        t.key,
        hit.array,
        computed=False,
        seconds=float(entry.get("seconds", float("nan"))),
        train_seconds=entry.get("train_seconds"),
        setup_seconds=entry.get("setup_seconds"),
        path=str(hit.path),
        info=entry,
    )


def compute_metagradients(
    program: Program, tests: Sequence[Any], reference_params: np.ndarray | None = None
) -> list[MetagradResult]:
    """g for each test input (texts or TestInputs) of one training program, timed.

    With `reference_params`, the forward run must reproduce them (the sketch's
    undeleted parameters): ValueError otherwise.
    """
    from compiler.compiled import params_of
    from runtime import resources
    from runtime.sources import as_test_input

    items = [as_test_input(t) for t in tests]
    size = int(sum(np.size(v) for v in program.init_state.values()))
    resources.require(
        resources.metagrad_memory(program.num_steps, size),
        f"the metagradient (the training trajectory: --steps {program.num_steps} states x "
        f"{size} values x 8 bytes, twice)",
        "use fewer --steps",
    )
    t0 = time.perf_counter()
    mg = Metagradient(program)
    # load (or JIT-compile) the reverse run's compiled loop with one step, so that the
    # per-input time below is the reverse pass itself
    mg.reverse.train(mg.weights, state=np.zeros(mg.reverse.state_size), stop=1)
    setup = time.perf_counter() - t0
    if reference_params is not None:
        p0, _ = params_of(mg.forward, mg.traj[-1])
        ref = np.asarray(reference_params)
        diff = float(np.max(np.abs(p0 - ref))) if p0.shape == ref.shape else np.inf
        if not diff <= 1e-9 * max(float(np.max(np.abs(ref))), 1e-300):
            raise ValueError(
                "the training run rebuilt from the sketch does not reproduce its undeleted "
                f"parameters (max difference {diff:.3g}): the program or its inputs changed"
            )
    t1 = time.perf_counter()
    mg.forward.train()  # one plain training run: the unit of the cost
    train_seconds = time.perf_counter() - t1
    out = []
    for t in items:
        t2 = time.perf_counter()
        g = mg(t.value)
        out.append(
            MetagradResult(t.label, t.key, g, True, time.perf_counter() - t2, train_seconds, setup)
        )
    return out


def sketch_metagradients(
    sketch,
    tests: Sequence[Any],
    compute: bool = True,
    recompute: bool = False,
    warn: Callable[[str], None] | None = None,
) -> dict[str, MetagradResult | None]:
    """key -> g of each test input for the sketch's training run, computed once and stored.

    A stored g is read (and checked); the others are computed when `compute`
    (else None) and written to ``SKETCH/metagrad``.  `recompute` ignores and
    overwrites what is stored.
    """
    from runtime.query import check_tests
    from runtime.sources import sketch_source
    from runtime.spec import build_program

    items = {t.key: t for t in check_tests(sketch, tests)}
    out: dict[str, MetagradResult | None] = {}
    for k, t in items.items():
        out[k] = None if recompute else stored_metagradient(sketch, t, warn)
    todo = [t for k, t in items.items() if out[k] is None]
    if not todo or not compute:
        return out
    source = sketch_source(sketch, full=True)
    program = build_program(source)
    store = metagradient_store(sketch, warn)
    for r in compute_metagradients(program, todo, reference_params=sketch.params0()):
        r.info = {
            "doc": r.key,
            "label": r.label,
            "spec": source.key,
            "seconds": r.seconds,
            "train_seconds": r.train_seconds,
            "setup_seconds": r.setup_seconds,
        }
        path = store.put(r.key, r.g, r.info)  # None: a read-only sketch, still answered
        r.path = None if path is None else str(path)
        out[r.key] = r
    return out
