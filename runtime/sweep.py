"""The reverse sweep through a training run, in bounded memory, one leaf at a time.

A checkpoint plan (``runtime.checkpoints``) cuts the T steps into leaves.  The
forward work (advancing between kept states, and recomputing a leaf's states
into a buffer) runs in the compiled real trainer, ``CompiledProgram.train``;
the reverse steps of a leaf run in one compiled loop too, over a table of
rows packed per leaf (``ReverseRows``): the leaf's forward states next to the
step's own inputs, copied column blocks at a time from the trainer's packed
schedule.  So only leaves and checkpoints cross into Python, never single
steps, and the memory held is the kept states plus one buffer of L rows (two
with ``threads=2``, where the forward work of the next leaf runs on a second
thread beside the reverse steps of this one; the buffers stay for the next sweep).

The reverse steps are the same compiled code as the full-trajectory method's
(``runtime.metagrad.reverse_program``) and the recomputed states are the same
bits, so both give the same metagradient bit for bit.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from circuitsketch.grad import reverse_step
from circuitsketch.program import WEIGHT, Program, Step
from compiler.compiled import CompiledProgram, NonFiniteError
from compiler.passes import shared_reciprocals
from runtime.checkpoints import MemoryModel, Plan

FWD = "fwd."
REVERSE = {"sink": True, "fma": True}
"""How reverse runs are compiled (``CompiledProgram`` options): elementwise equations
sunk to their readers (the same bits), products by fused multiply-adds (other bits)."""


@dataclass(frozen=True)
class _NoSchedule:
    """The reverse run's per-step scalars are already in each step's data."""

    def schedule(self, step: int, num_steps: int) -> dict[str, float]:
        return {}

    def buffers(self, name: str) -> tuple[str, ...]:
        return ()


def reverse_circuits(program: Program) -> dict:
    """key -> the transposed step circuit (``grad.reverse_step``) of each step circuit, each
    divisor inverted once (``compiler.passes.shared_reciprocals``)."""
    names = list(program.init_state)
    return {k: shared_reciprocals(reverse_step(c, names, WEIGHT, FWD))
            for k, c in program.step_circuits.items()}


def reverse_shell(program: Program, steps: list[Step], circuits: dict | None = None) -> Program:
    """The reverse run as a Program over `steps`: its state is the forward state's cotangent.

    Its initial state is a placeholder: each test input supplies its own.
    """
    names = list(program.init_state)
    return Program(
        name=f"{program.name}.reverse",
        init_state={n: np.zeros_like(program.init_state[n]) for n in names},
        params=tuple(names),
        step_circuits=circuits if circuits is not None else reverse_circuits(program),
        output_circuits={},
        steps=steps,
        num_docs=program.num_docs,
        optimizer=_NoSchedule(),
        encode_test=program.encode_test,
        meta=dict(program.meta),
    )


def step_docs(docs: np.ndarray) -> np.ndarray:
    """Which document's weight each entry of a step's weight cotangent belongs to: rows of
    the trainer's packed schedule ``docs`` (n, W), a step's documents and then zeros.
    The one place a step maps to documents."""
    return docs


def accumulate(g: np.ndarray, docs: np.ndarray, ndocs: np.ndarray, per_step: np.ndarray) -> None:
    """g[doc] += the weight cotangents of each reverse step, in the order they ran.

    per_step: (n,) for one-document steps or (n, W): one entry per document of a step;
    ndocs (n,): how many of a row's entries are documents.
    """
    vals = per_step.reshape(len(ndocs), -1)
    width = vals.shape[1]
    mask = np.arange(width)[None, :] < ndocs[:, None]
    np.add.at(g, step_docs(docs)[:, :width][mask], vals[mask])


class ReverseRows(CompiledProgram):
    """The reverse steps, compiled once, run over tables of at most `rows` rows.

    The tables (keys, docs, int and float inputs per row) are not packed from
    the Program's steps but filled per leaf by ``Sweep`` and handed over with
    ``load``; row i of a leaf [a, b) is the reverse of forward step b - 1 - i.
    """

    def __init__(self, program: Program, rows: int, circuits: dict | None = None):
        self._placeholder = Step(next(iter(program.step_circuits)), 0, {})
        self.doc_width = max((len(st.docs) for st in program.steps), default=1)
        super().__init__(reverse_shell(program, [self._placeholder] * rows, circuits), 0,
                         **REVERSE)
        self.steps_of_rows = np.zeros(0, np.int64)

    def resize(self, rows: int) -> None:
        """Tables of up to `rows` rows from now on (the length of its losses)."""
        self.program.steps = [self._placeholder] * rows

    def _pack_schedule(self) -> None:
        ints = [sum(n for _, n in u.iface.ints.values()) for u in self.steps_c.values()]
        floats = [sum(n for _, n in u.iface.floats.values()) for u in self.steps_c.values()]
        self.int_width, self.float_width = max(max(ints), 1), max(max(floats), 1)
        self.load(*self.new_tables(0))

    def new_tables(self, rows: int) -> tuple[np.ndarray, ...]:
        """Empty keys, docs, ndocs, II, FF tables of `rows` rows."""
        return (np.zeros(rows, np.int64), np.zeros((rows, self.doc_width), np.int64),
                np.zeros(rows, np.int64), np.zeros((rows, self.int_width), np.int64),
                np.zeros((rows, self.float_width)))  # fmt: skip

    def load(self, keys, docs, ndocs, II, FF, steps: np.ndarray | None = None) -> None:
        """Run the next ``train`` over these tables (`steps`: the forward step of each row)."""
        self.keys, self.docs, self.ndocs, self.II, self.FF = keys, docs, ndocs, II, FF
        if steps is not None:
            self.steps_of_rows = steps

    def _raise_nonfinite(self, step: int, s0, hi, w, psi) -> None:
        s = int(self.steps_of_rows[step]) if step < len(self.steps_of_rows) else -1
        raise NonFiniteError(
            f"non-finite cotangent in the reverse of training step {s} "
            f"(documents {self.docs[step, : self.ndocs[step]].tolist()})"
        )


def _one_if_same(plans: dict) -> dict:
    """{None: plan} when every key has the same plan, else the plans per key."""
    first = next(iter(plans.values()))
    return {None: first} if all(p == first for p in plans.values()) else plans


def _runs(items: list[tuple[int, str, int, int]]) -> list[tuple[int, str, int, int]]:
    """Merge (dst, source, src, size) column copies that continue each other."""
    out: list[tuple[int, str, int, int]] = []
    for dst, src_kind, src, n in sorted(items):
        if out and out[-1][1] == src_kind and out[-1][0] + out[-1][3] == dst \
                and out[-1][2] + out[-1][3] == src:  # fmt: skip
            d0, k0, s0, n0 = out[-1]
            out[-1] = (d0, k0, s0, n0 + n)
        else:
            out.append((dst, src_kind, src, n))
    return out


@dataclass(frozen=True)
class Observer:
    """What a sweep shows of each leaf [a, b) once it is reversed (last leaf first), while
    its states are held: ``keep(a, b)``, the steps s in (a, b] whose cotangents of x_s
    (one per seed) to keep, then ``seen(a, b, state, cotangents)`` with `state(s)` = x_s
    for a <= s < b and cotangents {s: (Q, S)}.  The cotangents pass through one buffer
    of a leaf's rows, seed after seed."""

    keep: Callable[[int, int], np.ndarray]
    seen: Callable[[int, int, Callable[[int], np.ndarray], dict], None]
    reached: Callable[[SweepPoint], None] | None = None  # after each leaf: where it stands


@dataclass(frozen=True)
class SweepPoint:
    """A sweep reversed down to step `a` (a leaf's first step; 0 when done): its seeds'
    cotangents of x_a (Q, S), the g (Q, N) they have summed, and x_T (S,).  ``Sweep.run``
    resumes from one with the same bits as a sweep without a stop."""

    a: int
    cotangents: np.ndarray
    g: np.ndarray
    final: np.ndarray


@dataclass
class _Leaf:
    """A leaf buffer: the recomputed states and the reverse steps' tables."""

    traj: np.ndarray | None  # None: the states go straight into the float table
    tables: tuple[np.ndarray, ...]
    capacity: int  # rows
    a: int = 0
    b: int = 0
    final: np.ndarray | None = None  # x_T, with the last leaf

    def arrays(self) -> list[np.ndarray]:
        """The buffer's arrays: the states' own buffer, if any, and the tables."""
        return [a for a in (self.traj, *self.tables) if a is not None]


class Sweep:
    """Forward recomputation and reverse steps of one training run (program, weights).

    ``run(plan, seeds)`` returns the per-document weight cotangents of any number
    of seeds (cotangents of the final state) in one sweep.
    """

    def __init__(self, program: Program, weights=None, forward: CompiledProgram | None = None):
        self.program = program
        self.forward = forward if forward is not None else CompiledProgram(program, 0)
        self.reweight(weights)
        self.circuits = reverse_circuits(program)
        self.rows = ReverseRows(program, 1, self.circuits)
        self.seconds: dict[str, float] = {}  # where the last run's time went, per part
        self._buffers: list[_Leaf] = []  # the last run's leaf buffers
        self._rev_iface = {k: u.iface for k, u in self.rows.steps_c.items()}
        cp = self.forward
        self._key_map = np.array([self.rows.step_keys.index(k) for k in cp.step_keys], np.int64)
        plans = {i: self._copy_plan(k) for i, k in enumerate(cp.step_keys)}
        self._fplans = _one_if_same({i: p[0] for i, p in plans.items()})
        iplans = {i: p[1] for i, p in plans.items()}
        if all(d == s for p in iplans.values() for d, _, s, _ in p):
            # every int input where the trainer has it (microgpt's): copy whole rows
            width = min(cp.II.shape[1], max(sum(n for *_, n in p) for p in iplans.values()))
            iplans = {None: [(0, "ii", 0, width)]}
        self._iplans = _one_if_same(iplans)
        # the forward trainer writes each state straight into its reverse row when the
        # state sits in one block of it, in order; else into a buffer of its own, copied
        blocks = {tuple(c for c in p if c[1] == "traj") for p in self._fplans.values()}
        (block,) = blocks if len(blocks) == 1 else [()]
        direct = len(block) == 1 and block[0][2:] == (0, cp.state_size)
        self.direct_column: int | None = block[0][0] if direct else None

    # ---------------------------------------------------------------- memory
    def memory_model(self, buffers: int = 1, seeds: int = 1) -> MemoryModel:
        """Bytes of the sweep's arrays (see ``checkpoints.MemoryModel``).

        Not counted: the process itself (Python, Numba, compiled code) and the
        program's own objects (circuits, the documents of every step).
        """
        cp, S = self.forward, self.forward.state_size
        iw = max(sum(n for _, n in f.ints.values()) for f in self._rev_iface.values())
        fw = max(sum(n for _, n in f.floats.values()) for f in self._rev_iface.values())
        # a reverse row (int and float inputs, the state among them; key, its documents and
        # their count, step), and the state again when it cannot be written there directly
        docs = self.rows.doc_width
        row = 8 * (max(iw, 1) + max(fw, 1) + 3 + docs + (S if self.direct_column is None else 0))
        T = cp.program.num_steps
        tables = cp.keys.nbytes + cp.docs.nbytes + cp.ndocs.nbytes + cp.II.nbytes + cp.FF.nbytes
        # per train call: two state buffers, the losses and the workspace (both threads);
        # per seed: its cotangent and g, and while its seed is computed the interpreter's
        # arrays (a few states' worth, counted as 4); the current state
        per_seed = 5 * S + self.program.num_docs
        fixed = tables + 8 * (2 * T + 5 * S + seeds * per_seed + cp.ws_size + self.rows.ws_size)
        return MemoryModel(8 * S, row, fixed, buffers)

    # ---------------------------------------------------------------- tables
    def reweight(self, weights=None) -> None:
        """Sweep the training run at other data weights from now on (default 0): what is
        compiled and planned does not depend on them."""
        n = self.program.num_docs
        w = np.zeros(n) if weights is None else np.asarray(weights, np.float64)
        if w.shape != (n,):
            raise ValueError(f"weights: shape {w.shape}, expected ({n},)")
        self.weights = w

    def _copy_plan(self, key) -> tuple[list, list]:
        """Column copies filling a reverse row of `key`: float ones from the state row
        (``traj``) or the trainer's float row (``ff``), int ones from its int row."""
        fwd = self.forward.steps_c[key].iface
        rev = self._rev_iface[key]
        state = self.forward.state_layout
        floats = []
        for name, (off, n) in rev.floats.items():
            if name.startswith(FWD) and name[len(FWD):] in state:
                floats.append((off, "traj", state[name[len(FWD):]][0], n))
            else:
                floats.append((off, "ff", fwd.floats[name][0], n))
        ints = [(off, "ii", fwd.ints[name][0], n) for name, (off, n) in rev.ints.items()]
        return _runs(floats), _runs(ints)

    def _fill(self, leaf: _Leaf) -> None:
        """Pack the reverse tables of leaf [a, b) from its states and the trainer's rows."""
        cp, a, b = self.forward, leaf.a, leaf.b
        n = b - a
        keys, docs, ndocs, II, FF = leaf.tables
        src_rows = slice(b - 1, a - 1 if a > 0 else None, -1)
        fkeys = cp.keys[src_rows]
        keys[:n] = self._key_map[fkeys]
        docs[:n] = cp.docs[src_rows]
        ndocs[:n] = cp.ndocs[src_rows]
        traj = leaf.traj[n - 1 :: -1] if leaf.traj is not None else None
        for which, fplan in self._fplans.items():
            sel = slice(0, n) if which is None else np.flatnonzero(fkeys == which)
            for dst, kind, src, size in fplan:
                if kind == "traj" and traj is None:
                    continue  # written there by the trainer
                block = (traj if kind == "traj" else cp.FF[src_rows])[:, src : src + size]
                FF[sel, dst : dst + size] = block if which is None else block[sel]
        for which, iplan in self._iplans.items():
            sel = slice(0, n) if which is None else np.flatnonzero(fkeys == which)
            for dst, _kind, src, size in iplan:
                block = cp.II[src_rows, src : src + size]
                II[sel, dst : dst + size] = block if which is None else block[sel]

    # ---------------------------------------------------------------- running
    def warm(self, plan: Plan | None = None, threads: int = 1) -> None:
        """Load (or compile) both compiled loops, so that a timed sweep is the sweep; with a
        `plan`, also make and touch the leaf buffers of its sweeps on `threads` threads."""
        if plan is not None:
            for leaf in self._leaf_buffers(plan.leaf_steps, threads):
                for a in leaf.arrays():
                    a.fill(0)  # np.zeros leaves the pages to the first write
        S = self.forward.state_size
        self.forward.train(self.weights, stop=0)
        # the trainer writing into a strided view of the float table: a second compiled
        # variant of its loop (Numba specialises on the array layout)
        view = np.zeros((2, S + 1))[::-1, :S]
        self.forward.train(self.weights, stop=0, trajectory=view)
        self.rows.train(self.weights, state=np.zeros(self.rows.state_size), stop=0)

    def _leaves(self, plan: Plan, acquire: Callable[[], _Leaf], below: int) -> Iterator[_Leaf]:
        """The forward work of a plan: each leaf's buffer filled, last leaf first; leaves
        from step `below` on are skipped (reversed before a resumed sweep's stop)."""
        cp, w = self.forward, self.weights
        cur = cp.initial_state()
        kept = {0: cur}
        for act in plan.actions():
            if act.kind == "advance":
                t0 = time.perf_counter()
                cur, _ = cp.train(w, state=cur, start=act.a, stop=act.b)
                self._clock("advance", t0)
            elif act.kind == "save":
                kept[act.a] = cur
            elif act.kind == "restore":
                cur = kept[act.a]
            elif act.kind == "free":
                del kept[act.a]
            elif act.a >= below:
                cur = None
            else:
                if act.b > below:
                    raise ValueError(f"cannot resume at step {below}: the plan's leaf "
                                     f"[{act.a}, {act.b}) holds it")
                leaf = acquire()
                t0 = time.perf_counter()
                self._recompute(leaf, cur, act.a, act.b)
                t1 = self._clock("recompute", t0)
                self._fill(leaf)
                self._clock("pack", t1)
                cur = None
                yield leaf

    def _recompute(self, leaf: _Leaf, x_a: np.ndarray, a: int, b: int) -> None:
        """States x_a .. x_{b-1} into the leaf's buffer (and x_T if b = T).

        Directly: x_s goes to float row b - 1 - s of the reverse table, where the reverse
        of step s reads it (a strided view for the trainer's ``trajectory``).
        """
        cp, w, n = self.forward, self.weights, b - a
        leaf.a, leaf.b, leaf.final = a, b, None
        if leaf.traj is None:
            o, S = self.direct_column, cp.state_size
            rows = leaf.tables[4][:, o : o + S]  # row i <- x_{b-1-i}
        else:
            rows = leaf.traj[n - 1 :: -1]
        if b == self.program.num_steps:
            leaf.final, _ = cp.train(w, state=x_a, start=a, stop=b, trajectory=rows[n - 1 :: -1])
        elif n > 1:
            last, _ = cp.train(w, state=x_a, start=a, stop=b - 1, trajectory=rows[n - 1 : 0 : -1])
            rows[0] = last
        else:
            rows[0] = x_a

    def _clock(self, part: str, t0: float) -> float:
        t = time.perf_counter()
        self.seconds[part] = self.seconds.get(part, 0.0) + t - t0
        return t

    @property
    def buffer_bytes(self) -> int:
        """Bytes of the leaf buffers held (from ``warm`` or the last run)."""
        return sum(a.nbytes for leaf in self._buffers for a in leaf.arrays())

    def _leaf_buffers(self, L: int, n: int) -> list[_Leaf]:
        """n leaf buffers of L rows, kept from the last run when it had the same: the next
        sweep (another test input, other weights) does not pay the kernel again for fresh
        pages (bench/RESULTS.md, "Under 4x")."""
        kept = self._buffers if len(self._buffers) == n and self._buffers[0].capacity == L else []
        self._buffers = kept or [self._new_leaf(L) for _ in range(n)]
        return self._buffers

    def _new_leaf(self, L: int) -> _Leaf:
        traj = None if self.direct_column is not None else np.empty((L, self.forward.state_size))
        return _Leaf(traj, self.rows.new_tables(L), L)

    def run(
        self,
        plan: Plan,
        seeds: Callable[[np.ndarray], Sequence[np.ndarray]],
        threads: int = 1,
        observe: Observer | None = None,
        resume: SweepPoint | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """g (Q, N) for the seeds that `seeds(x_T)` returns, and x_T.

        threads=2 recomputes the next leaf on a second thread while this one is reversed
        (two leaf buffers).  Any exception of `seeds` (e.g. a check of x_T) stops the sweep.
        `observe` (an ``Observer``), if given, is shown each leaf once reversed.  `resume`:
        go on from where a sweep of the same run and plan stood (its ``reached``).
        """
        if plan.num_steps != self.program.num_steps:
            raise ValueError(
                f"plan for {plan.num_steps} steps, the run has {self.program.num_steps}"
            )
        if threads not in (1, 2):
            raise ValueError(f"threads must be 1 or 2, got {threads}")
        L = plan.leaf_steps
        self.rows.resize(L)
        self.seconds = {}
        below = plan.num_steps if resume is None else resume.a
        if threads == 1:
            (leaf,) = self._leaf_buffers(L, 1)
            return self._reverse(self._leaves(plan, lambda: leaf, below), seeds,
                                 lambda _: None, observe, resume)
        pool: queue.Queue = queue.Queue()
        for leaf in self._leaf_buffers(L, 2):
            pool.put(leaf)
        ready: queue.Queue = queue.Queue()
        stop = threading.Event()

        def acquire() -> _Leaf:
            item = pool.get()
            if stop.is_set():
                raise _Stopped
            return item

        def produce() -> None:
            try:
                for leaf in self._leaves(plan, acquire, below):
                    ready.put(leaf)
                ready.put(None)
            except _Stopped:
                pass
            except BaseException as e:  # handed to the reverse side, which raises it
                ready.put(e)

        worker = threading.Thread(target=produce, name="circuitsketch-forward", daemon=True)
        worker.start()

        def consume() -> Iterator[_Leaf]:
            while (item := ready.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item

        try:
            return self._reverse(consume(), seeds, pool.put, observe, resume)
        finally:
            stop.set()
            pool.put(None)  # wakes a producer waiting for a buffer
            worker.join()

    def leaf_state(self, leaf: _Leaf, s: int) -> np.ndarray:
        """x_s (a copy) from the buffer of leaf [a, b), a <= s < b."""
        if not leaf.a <= s < leaf.b:
            raise IndexError(f"step {s} is not in the leaf [{leaf.a}, {leaf.b})")
        if leaf.traj is None:  # reverse row b - 1 - s of the float table holds it
            o = self.direct_column
            return leaf.tables[4][leaf.b - 1 - s, o : o + self.forward.state_size].copy()
        return leaf.traj[s - leaf.a].copy()

    def _reverse(self, leaves: Iterator[_Leaf], seeds, release, observe=None,
                 resume: SweepPoint | None = None) -> tuple[np.ndarray, np.ndarray]:
        rows, w = self.rows, self.weights
        cts: list[np.ndarray] = []
        capture = None  # one (L, S) buffer for the cotangents, seed after seed
        g = np.zeros((0, self.program.num_docs))
        final = None
        if resume is not None:
            cts = [np.array(c, np.float64) for c in resume.cotangents]
            g, final = np.array(resume.g, np.float64), np.array(resume.final, np.float64)
        for leaf in leaves:
            if leaf.final is not None:
                final = leaf.final.copy()
                cts = [np.asarray(s, np.float64) for s in seeds(final)]
                g = np.zeros((len(cts), self.program.num_docs))
            n = leaf.b - leaf.a
            keys, docs, ndocs, II, FF = leaf.tables
            rows.load(keys, docs, ndocs, II, FF, np.arange(leaf.b - 1, leaf.a - 1, -1))
            t0 = time.perf_counter()
            keep = np.zeros(0, np.int64) if observe is None else observe.keep(leaf.a, leaf.b)
            if len(keep) and (capture is None or len(capture) < leaf.capacity):
                capture = np.empty((leaf.capacity, cts[0].size))
            kept = np.empty((len(keep), len(cts), cts[0].size))
            for q in range(len(cts)):
                into = capture[:n] if len(keep) else None
                cts[q], per_step = rows.train(w, state=cts[q], start=0, stop=n, trajectory=into)
                accumulate(g[q], docs[:n], ndocs[:n], per_step)
                if len(keep):
                    kept[:, q] = capture[leaf.b - keep]  # row i: the cotangent of x_{b - i}
            self._clock("reverse", t0)
            if observe is not None:
                observe.seen(leaf.a, leaf.b, lambda s, leaf=leaf: self.leaf_state(leaf, s),
                             dict(zip(keep.tolist(), kept, strict=True)))
            release(leaf)
            if observe is not None and observe.reached is not None:
                observe.reached(SweepPoint(leaf.a, np.array(cts), g, final))
        if final is None:
            raise AssertionError("the plan reversed no leaf")
        return g, final


class _Stopped(Exception):
    """The reverse side stopped the sweep."""
