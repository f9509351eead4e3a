"""Exact first-order influence: reverse mode backwards through the whole training run.

g = dF/dw at w = 0 (F = test loss after training, w the data weights) is one
reverse pass: the cotangent of the state is carried from step T-1 down to 0
through the transposed step circuit (``grad.reverse_step``), and each step
adds its weight cotangent to g[doc].  The reverse steps need the forward
states in reverse order; they are recomputed from checkpoints, a leaf of
steps at a time (``runtime.sweep``, schedules in ``runtime.checkpoints``):
by default about sqrt(T) kept states and a buffer of about sqrt(T) states, at
the price of one more forward pass.  ``trajectory`` and ``reverse_program``
are the plain method, holding all T states (twice): the reference the
checkpointed sweep is tested against.  All loops run in compiled code (degree 0).

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

import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from circuitsketch import interpret
from circuitsketch.grad import grad
from circuitsketch.program import LOSS, Program, Step
from runtime.checkpoints import MemoryModel, Plan, choose, simulate, summary

if TYPE_CHECKING:  # compiled code (numba) is imported where it runs: reading a stored g
    from compiler.compiled import CompiledProgram  # must stay light (a query's start-up)
    from runtime.sweep import Observer, SweepPoint


# ---------------------------------------------------------------- the full-trajectory reference
def trajectory(cp: CompiledProgram, weights=None) -> np.ndarray:
    """States before every step, (T+1, S): row s is the state step s reads."""
    T = cp.program.num_steps
    traj = np.empty((T + 1, cp.state_size))
    traj[-1], _ = cp.train(weights, trajectory=traj[:T])
    return traj


def reverse_program(program: Program, cp: CompiledProgram, traj: np.ndarray) -> Program:
    """The reverse run as a Program whose step data hold every forward state (T x S floats).

    Its initial state is a placeholder: each test input supplies its own.
    """
    from runtime.sweep import FWD, reverse_shell

    names = list(program.init_state)
    T = program.num_steps
    steps = []
    for s in range(T - 1, -1, -1):
        fwd = cp.unpack_state(traj[s])
        step = program.steps[s]
        data = {**step.data, **program.optimizer.schedule(s, T), **{FWD + n: fwd[n] for n in names}}
        steps.append(Step(step.key, step.doc, data))
    return reverse_shell(program, steps)


def full_trajectory_metagradient(program: Program, test, weights=None) -> np.ndarray:
    """dF/dw by the plain method: the whole trajectory stored, one reverse run over it."""
    from compiler.compiled import CompiledProgram
    from runtime.sweep import REVERSE, accumulate

    cp = CompiledProgram(program, 0)
    traj = trajectory(cp, weights)
    rev = CompiledProgram(reverse_program(program, cp, traj), 0, **REVERSE)
    _, per_step = rev.train(weights, state=output_cotangent(cp, traj[-1], test))
    g = np.zeros(program.num_docs)
    accumulate(g, rev.docs, rev.ndocs, per_step)
    return g


def output_cotangent(cp: CompiledProgram, final: np.ndarray, test) -> np.ndarray:
    """The cotangent of the final state: dF/dparams, zero for optimizer buffers."""
    prog = cp.program
    state = cp.unpack_state(final)
    key, test_inputs = prog.encode_test(test)
    out_grad = grad(prog.output_circuits[key], LOSS, list(prog.params))
    g = interpret.evaluate(out_grad, {**{p: state[p] for p in prog.params}, **test_inputs})
    seed = np.zeros(cp.state_size)
    for name, (off, n) in cp.state_layout.items():
        if name in prog.params:
            seed[off : off + n] = np.ravel(g[f"grad_{name}"])
    return seed


# ---------------------------------------------------------------- checkpointed
class Metagradient:
    """dF/dw for any test inputs, for one training run (program, weights), in bounded memory.

    schedule: ``sqrt`` (default without a budget), ``binomial`` (default with one) or
    ``tree``; memory_budget: bytes for the sweep's arrays (``Sweep.memory_model``);
    threads: 2 recomputes forward states on a second thread.  Each call is one sweep:
    a forward pass keeping checkpoints, then the reverse, shared by all its test inputs.
    """

    def __init__(
        self,
        program: Program,
        weights=None,
        schedule: str | None = None,
        memory_budget: int | None = None,
        threads: int = 1,
        plan: Plan | None = None,
        seeds: int = 1,
        forward: CompiledProgram | None = None,
    ):
        from runtime.sweep import Sweep

        self.program = program
        self.weights = weights
        self.threads = threads
        self.sweep = Sweep(program, weights, forward)
        self.forward = self.sweep.forward
        self.memory = self.sweep.memory_model(buffers=threads, seeds=seeds)
        if plan is None:
            schedule = schedule or ("sqrt" if memory_budget is None else "binomial")
            plan = choose(schedule, program.num_steps, self.memory, memory_budget)
        self.plan = plan

    def summary(self) -> dict[str, Any]:
        """The plan: schedule, leaves, kept states, forward steps, memory estimate."""
        return {**summary(self.plan, self.memory), "threads": self.threads}

    def reweight(self, weights=None) -> None:
        """The metagradient at other data weights from the next call on, with the compiled
        steps and the plan kept (``runtime.hessian``'s differences of metagradients)."""
        self.sweep.reweight(weights)
        self.weights = weights

    def warm(self) -> None:
        """Build and load the compiled reverse steps and make the plan's leaf buffers (so
        that a timed sweep is the sweep)."""
        self.sweep.warm(self.plan, self.threads)

    def many(
        self,
        tests: Sequence[Any],
        check_final: Callable[[np.ndarray], None] | None = None,
        observe: Observer | None = None,
        resume: SweepPoint | None = None,
    ) -> np.ndarray:
        """g (Q, N) for Q test inputs in one sweep; check_final(x_T) may refuse the run;
        `observe` sees each leaf's states and cotangents (``sweep.Observer``); `resume`
        goes on from where a sweep of these inputs stood (``Observer.reached``)."""

        def seeds(final: np.ndarray) -> list[np.ndarray]:
            if check_final is not None:
                check_final(final)
            return [output_cotangent(self.forward, final, t) for t in tests]

        g, _ = self.sweep.run(self.plan, seeds, self.threads, observe, resume)
        return g

    def __call__(self, test) -> np.ndarray:
        return self.many([test])[0]


def metagradient(program: Program, test, weights=None, **options) -> np.ndarray:
    """dF/dw (N,) at the given weights (default 0) for the test loss F on `test`."""
    return Metagradient(program, weights, **options)(test)


def peak_rss_bytes() -> int:
    """The process's peak resident memory so far (getrusage)."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(kb) * (1 if sys.platform == "darwin" else 1024)


# ---------------------------------------------------------------- stored beside a sketch
METAGRAD_DIR = "metagrad"


@dataclass
class MetagradResult:
    """g for one test input, and where it came from."""

    label: str
    key: str
    g: np.ndarray  # (N,)
    computed: bool  # False: read from the sketch's store
    seconds: float  # the sweep that produced it (forward and reverse; shared, see info)
    train_seconds: float | None  # one plain training run, for the cost ratio
    setup_seconds: float | None  # compiling (or loading) the forward and reverse steps
    path: str | None = None  # where it is stored
    info: dict[str, Any] = field(default_factory=dict)  # the sweep: plan, test inputs, RSS

    @property
    def tests_in_sweep(self) -> int:
        """The test inputs the sweep that produced it served (its time is shared)."""
        return max(1, int(self.info.get("tests_in_sweep") or 1))

    @property
    def cost(self) -> float | None:
        """Its share of the sweep's time as a multiple of one training run: the sweep's
        time divided by the test inputs it served (as ``SecondOrder.cost``)."""
        if not self.train_seconds:
            return None
        return self.seconds / self.train_seconds / self.tests_in_sweep


RUN_FILES = ("docs.npy", "params0.npy", "init.npy", "schedule.npy")
"""The arrays of a sketch that a result of its training run is computed from (with its
configuration): documents, undeleted parameters, initial parameters and the minibatch
schedule, those stored."""


def run_results(sketch, kind: str, label: str, warn: Callable[[str], None] | None = None):
    """A store beside `sketch` (``Sketch.derived``) of results computed from its training
    run: metagradients here, second-order data (``runtime.second_order``)."""
    inputs = [n for n in RUN_FILES if n in sketch.manifest["files"]]
    return sketch.derived(kind, inputs, label=label, warn=warn)


def metagradient_store(sketch, warn: Callable[[str], None] | None = None):
    """The store of metagradients beside `sketch` (``run_results``)."""
    return run_results(sketch, METAGRAD_DIR, "stored metagradient", warn)


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


@dataclass(frozen=True)
class SweepOptions:
    """How to checkpoint the reverse sweep (see ``Metagradient``)."""

    schedule: str | None = None
    memory_budget: int | None = None
    threads: int = 1


def compute_metagradients(
    program: Program,
    tests: Sequence[Any],
    reference_params: np.ndarray | None = None,
    options: SweepOptions | None = None,
    announce: Callable[[dict[str, Any]], None] | None = None,
) -> list[MetagradResult]:
    """g for each test input (texts or TestInputs) of one training program, in one sweep.

    With `reference_params`, the forward run must reproduce them (the sketch's
    undeleted parameters): ValueError otherwise, before any reverse step.
    `announce` gets the plan's summary before the sweep starts.
    """
    from compiler.compiled import params_of
    from runtime import resources
    from runtime.sources import as_test_input

    opts = options or SweepOptions()
    items = [as_test_input(t) for t in tests]
    # before compiling anything: the plan under a model of the dominant arrays (states
    # kept and buffered, the run's tables); the compiled sweep then refines it
    T, size = program.num_steps, int(sum(np.size(v) for v in program.init_state.values()))
    rough = MemoryModel(8 * size, 8 * size + 512, resources.program_memory(T, size), opts.threads)
    sim = simulate(choose(opts.schedule or ("binomial" if opts.memory_budget else "sqrt"), T,
                          rough, opts.memory_budget))  # fmt: skip
    resources.require(
        rough.bytes(sim.peak_kept, sim.leaf_steps),
        f"the metagradient (--steps {T}: {sim.peak_kept} kept states and a buffer of "
        f"{sim.leaf_steps} x {opts.threads} states of {size} values x 8 bytes)",
        "give a smaller --memory-budget" if opts.memory_budget else "use fewer --steps",
    )
    t0 = time.perf_counter()
    mg = Metagradient(program, schedule=opts.schedule, memory_budget=opts.memory_budget,
                      threads=opts.threads, seeds=len(items))  # fmt: skip
    mg.warm()
    setup = time.perf_counter() - t0
    plan = mg.summary()
    if announce is not None:
        announce(plan)

    def check(final: np.ndarray) -> None:
        if reference_params is None:
            return
        p0, _ = params_of(mg.forward, final)
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
    t2 = time.perf_counter()
    g = mg.many([t.value for t in items], check)
    seconds = time.perf_counter() - t2
    info = {"plan": plan, "tests_in_sweep": len(items), "peak_rss_bytes": peak_rss_bytes()}
    return [
        MetagradResult(t.label, t.key, g[i], True, seconds, train_seconds, setup, info=dict(info))
        for i, t in enumerate(items)
    ]


def sketch_metagradients(
    sketch,
    tests: Sequence[Any],
    compute: bool = True,
    recompute: bool = False,
    warn: Callable[[str], None] | None = None,
    options: SweepOptions | None = None,
    announce: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, MetagradResult | None]:
    """key -> g of each test input for the sketch's training run, computed once and stored.

    A stored g is read (and checked); the others are computed when `compute`
    (else None) and written to ``SKETCH/metagrad``.  A stored g refused with a warning
    (damaged, or of another state of the sketch) is computed again even without
    `compute`, as docs/integrity.md says of derived results: the caller had one stored
    and must not get another estimator silently.  `recompute` ignores and overwrites
    what is stored.
    """
    from runtime.query import check_tests
    from runtime.sources import sketch_source
    from runtime.spec import build_program

    items = {t.key: t for t in check_tests(sketch, tests)}
    store = metagradient_store(sketch, warn)
    out: dict[str, MetagradResult | None] = {}
    refused: set[str] = set()  # a stored g was there: a plain miss is not warned about
    for k, t in items.items():
        said: list[str] = []
        out[k] = None if recompute else stored_metagradient(sketch, t, said.append)
        for message in said:
            store.warn(message)
        if out[k] is None and said:
            refused.add(k)
    todo = [t for k, t in items.items() if out[k] is None and (compute or k in refused)]
    if not todo:
        return out
    source = sketch_source(sketch, full=True)
    program = build_program(source)
    results = compute_metagradients(
        program, todo, reference_params=sketch.params0(), options=options, announce=announce
    )
    for r in results:
        r.info = {
            "doc": r.key,
            "label": r.label,
            "spec": source.key,
            "seconds": r.seconds,
            "train_seconds": r.train_seconds,
            "setup_seconds": r.setup_seconds,
            **r.info,  # the sweep: its plan, test inputs, peak RSS
        }
        path = store.put(r.key, r.g, r.info)  # None: a read-only sketch, still answered
        r.path = None if path is None else str(path)
        out[r.key] = r
    return out
