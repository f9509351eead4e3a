"""A Program compiled to Numba at degree K: fast training, series training, outputs.

The whole training loop runs inside compiled code (``run``), stepping through
a packed schedule.  Real mode updates the state in place where every step
allows it (``compiler/in_place.py``), and series mode its higher orders (B x K
times the state's size, the bulk of the memory); otherwise, and for series
mode's order 0, the state lives in two flat buffers used in turn, so a step
reads one and writes the other.  Degree 0 is the real trainer (float64);
degree K >= 1 propagates series of the data weights in B directions at once,
with the order-0 run computed once per batch.

The schedule holds each step's documents (one, or a minibatch's): a step's
weight input receives their weights, ``w0`` (order 0) and ``wpsi`` (their
direction entries, documents x directions).
"""

from __future__ import annotations

import functools
from collections.abc import Hashable

import numpy as np

from circuitsketch.ir import Circuit
from circuitsketch.program import WEIGHT, Program
from compiler import kernels, pointers
from compiler.diagnose import NonFiniteError, locate_nonfinite
from compiler.emit import signature
from compiler.layout import hi_block
from compiler.pipeline import Build, Unit, run
from compiler.series_fusion import MAX_DEGREE
from compiler.slots import Interface, workspace


def _data_layout(c: Circuit, exclude: set[str]):
    ints, floats = {}, {}
    io, fo = 0, 0
    for name, nid in c.inputs.items():
        if name in exclude:
            continue
        node = c.nodes[nid]
        if node.dtype == "float":
            floats[name] = (fo, node.size)
            fo += node.size
        else:
            ints[name] = (io, node.size)
            io += node.size
    return ints, floats


def state_layout(program: Program) -> dict[str, tuple[int, int]]:
    """name -> (offset, size) of each state entry in the flat state vector."""
    layout, off = {}, 0
    for n, v in program.init_state.items():
        size = int(np.asarray(v).size)
        layout[n] = (off, size)
        off += size
    return layout


def _mode(degree: int) -> str:
    if degree == 0:
        return "real"
    if degree <= MAX_DEGREE:
        return f"series (degree {degree}, unrolled in the fused loops)"
    return "series (any degree: K is a run-time argument)"


def program_build(
    program: Program, degree: int, only: tuple[str, Hashable] | None = None, sink: bool = False,
    fma: bool = False,
) -> Build:
    """The pipeline's units for a program at a degree: its step circuits (state and data
    weight as series), then its output circuits (the state as series).  only: one
    circuit, ("step" | "output", key), built alone as function ``circuit`` (inspect),
    in place as the whole program would be where its own order allows.
    sink, fma: ``Build.sink``, ``Build.fma``."""
    layout = state_layout(program)
    names = set(layout)
    units = []
    for i, key in enumerate(sorted(program.step_circuits, key=repr)):
        if only is not None and only != ("step", key):
            continue
        c = program.step_circuits[key]
        ints, floats = _data_layout(c, names | {WEIGHT})
        units.append(Unit(
            "circuit" if only else f"step_{i}", c, Interface(layout, ints, floats, WEIGHT),
            tuple(n for n in c.inputs if n in names or n == WEIGHT), True,
            # real mode's compiled loop inlines the step; series mode runs the parts (a
            # circuit built alone gets an entry function of its own)
            "njit" if only else "none" if degree else "inline",
            f"step circuit for key {key!r}: fingerprint {c.fingerprint()}",
        ))
    for i, key in enumerate(sorted(program.output_circuits, key=repr)):
        if only is not None and only != ("output", key):
            continue
        c = program.output_circuits[key]
        ints, floats = _data_layout(c, names)
        units.append(Unit(
            "circuit" if only else f"output_{i}", c, Interface(layout, ints, floats, None),
            tuple(n for n in c.inputs if n in names), False,
            comment=f"output circuit for key {key!r}: fingerprint {c.fingerprint()}",
        ))
    if only is not None:
        return Build(units, degree, in_place=True)
    width = loss_width(program)
    if degree and width > 1:
        raise ValueError("a program whose steps output one loss per document runs in real "
                         "mode only")
    return Build(units, degree, sink=sink, fma=fma, in_place=True,
                 title=f"Generated for program {program.name!r}, "
                 f"{_mode(degree)} mode.",
                 footer=None if degree else functools.partial(_run_loop, width=width))


def loss_width(program: Program) -> int:
    """Entries of the widest per-step ``loss`` output: 1, or a reverse run's per-document
    weight cotangents of its largest minibatch (``runtime.metagrad``)."""
    return max(
        (c.nodes[c.outputs["loss"]].size for c in program.step_circuits.values()), default=1
    )


def _run_loop(b: Build, width: int = 1) -> str:
    """The compiled training loop of real mode (a real step is too short for a Python
    loop; series mode loops in Python, see ``CompiledProgram._train_series_pass``).
    wb receives the weights of the step's documents; a loss of `width` > 1 entries
    per step (one per document) goes to row s of losses."""
    steps = [u.name for u in b.units if u.state_outputs]
    args = (
        "start, stop, keys, docs, ndocs, II, FF, W0, wb, sa, sb, ws, tab, cst, losses, res0, "
        "code, traj, PTS"
    )
    out = "sa" if b.in_place else "sb"  # the state written in place, or into the other
    call = f"sa, {out}, ws, tab, cst, II[s], FF[s], wb, res0, code, PTS[key]"
    lines = [
        "@njit(cache=True, nogil=True, error_model='numpy')",
        f"def run({args}):",
        "    for s in range(start, stop):",
        "        if traj.shape[0] > 0:",  # a loop: a row assignment compiles its error text
        "            for i in range(sa.shape[0]):",
        "                traj[s - start, i] = sa[i]",
        "        key = keys[s]",
        "        for j in range(ndocs[s]):",
        "            wb[j] = W0[docs[s, j]]",
        "        ok = False",
    ]
    for i, name in enumerate(steps):
        lines.append(f"        {'if' if i == 0 else 'elif'} key == {i}:")
        lines.append(f"            ok = {name}({call})")
    if width == 1:
        lines.append("        losses[s] = res0[0]")
    else:
        lines += ["        for j in range(ndocs[s]):", "            losses[s, j] = res0[j]"]
    lines += ["        if not ok:", "            return s"]
    lines += [] if b.in_place else ["        sa, sb = sb, sa"]
    lines += ["    return -1", ""]
    return "\n".join(lines)


def pack(values: dict, layout: dict, size: int, dtype) -> np.ndarray:
    out = np.zeros(max(size, 1), dtype=dtype)
    for name, (off, n) in layout.items():
        out[off : off + n] = np.asarray(values[name]).ravel()
    return out


PASS_ORDERS = 48
"""train_series() runs at most PASS_ORDERS // K directions per compiled pass (batches
beyond that are split into groups, each a full run; the order-0 run is repeated).
A pass shares its order-0 run and its per-step costs among its directions, and its
series workspace grows with directions x orders; with fused series code more
directions per pass is a little faster (bench/RESULTS.md, "Measurements behind
design choices").  Results are bit for bit those of one pass."""


class CompiledProgram:
    """Program -> generated Numba module at a fixed degree (0: real training)."""

    def __init__(self, program: Program, degree: int = 0, sink: bool = False,
                 fma: bool = False):  # fmt: skip
        """`sink`: real mode's elementwise equations moved down to their readers before
        fusion (``Build.sink``): the reverse runs of ``runtime.sweep``, whose traced order
        interleaves the chains of every parameter.  `fma`: their products add each term
        by a fused multiply-add (``Build.fma``)."""
        if degree < 0:
            raise ValueError(f"degree must be >= 0, got {degree}")
        self.program = program
        self.degree = degree
        self.series = degree >= 1
        self.state_layout = state_layout(program)
        self.state_size = sum(n for _, n in self.state_layout.values())
        self.step_keys: list[Hashable] = sorted(program.step_circuits, key=repr)
        self.out_keys: list[Hashable] = sorted(program.output_circuits, key=repr)
        self.build = run(program_build(program, degree, sink=sink, fma=fma))
        units = self.build.units
        self.steps_c = dict(zip(self.step_keys, units[: len(self.step_keys)], strict=True))
        self.outs_c = dict(zip(self.out_keys, units[len(self.step_keys) :], strict=True))
        self.source, self.module = self.build.source, self.build.module
        self.instr, self.tab, self.cst = self.build.tables.arrays()
        self._pack_schedule()
        self.loss_width = loss_width(program)
        self.ws_size = max(u.lowered.ws_size for u in units)
        self.wh_size = max(u.lowered.wh_size for u in units)
        self.tables = pointers.AddressTables(self.module)
        self._real_pts: np.ndarray | None = None

    def _pack_schedule(self) -> None:
        prog = self.program
        T = prog.num_steps
        key_index = {k: i for i, k in enumerate(self.step_keys)}
        isz = max(
            (sum(n for _, n in cp.iface.ints.values()) for cp in self.steps_c.values()), default=1
        )
        fsz = max(
            (sum(n for _, n in cp.iface.floats.values()) for cp in self.steps_c.values()), default=1
        )
        width = max((len(st.docs) for st in prog.steps), default=1)
        self.keys = np.empty(T, np.int64)
        self.docs = np.zeros((T, width), np.int64)  # row s: step s's documents, then 0s
        self.ndocs = np.empty(T, np.int64)
        self.II = np.zeros((T, max(isz, 1)), np.int64)
        self.FF = np.zeros((T, max(fsz, 1)), np.float64)
        for s in range(T):
            _circuit, inputs = prog.step_inputs(s)
            key = prog.steps[s].key
            cp = self.steps_c[key]
            self.keys[s] = key_index[key]
            docs = prog.steps[s].docs
            self.docs[s, : len(docs)] = docs
            self.ndocs[s] = len(docs)
            self.II[s, :] = pack(inputs, cp.iface.ints, self.II.shape[1], np.int64)
            self.FF[s, :] = pack(inputs, cp.iface.floats, self.FF.shape[1], np.float64)

    # ---------------------------------------------------------------- state
    def initial_state(self) -> np.ndarray:
        vec = np.empty(self.state_size)
        for n, (off, size) in self.state_layout.items():
            vec[off : off + size] = np.asarray(self.program.init_state[n]).ravel()
        return vec

    def unpack_state(self, vec: np.ndarray) -> dict[str, np.ndarray]:
        """Flat state (..., S) -> name -> array (..., *shape)."""
        lead = vec.shape[:-1]
        return {
            n: vec[..., off : off + size].reshape(lead + np.shape(self.program.init_state[n]))
            for n, (off, size) in self.state_layout.items()
        }

    def unpack_hi(self, hi: np.ndarray, B: int) -> dict[str, np.ndarray]:
        """Flat higher orders -> name -> (B, K, *shape) coefficients of orders 1..K."""
        K = self.degree
        return {
            n: hi_block(hi, B, K, off, size).reshape((B, K, *np.shape(self.program.init_state[n])))
            for n, (off, size) in self.state_layout.items()
        }

    # ---------------------------------------------------------------- running
    def _weights(self, weights) -> np.ndarray:
        w = np.zeros(self.program.num_docs) if weights is None else np.asarray(weights, np.float64)
        if w.shape != (self.program.num_docs,):
            raise ValueError(f"weights: shape {w.shape}, expected ({self.program.num_docs},)")
        return w

    def _buffers(self, weights, state, start, stop):
        """Checked weights, the two state buffers (one, in place in real mode), workspace,
        loss and result arrays."""
        stop = self.program.num_steps if stop is None else stop
        if not 0 <= start <= stop <= self.program.num_steps:
            raise ValueError(f"steps {start} to {stop}: out of range 0 to "
                             f"{self.program.num_steps}")
        sa = self.initial_state() if state is None else np.array(state, np.float64)
        if sa.shape != (self.state_size,):
            raise ValueError(f"state: shape {sa.shape}, expected ({self.state_size},)")
        ws = workspace(self.ws_size)
        T, width = self.program.num_steps, self.loss_width
        losses = np.zeros(T) if width == 1 else np.zeros((T, width))
        # res0: the loss (one entry per document if width > 1), and last what the fused
        # loops that write the state return (0.0, or NaN if a value is not finite)
        res0 = np.zeros(width + 1)
        # series mode's order 0 keeps two buffers (see pipeline.Build)
        sb = sa if self.build.in_place and not self.series else np.empty_like(sa)
        return stop, self._weights(weights), sa, sb, ws, losses, res0

    def train(
        self,
        weights=None,
        state: np.ndarray | None = None,
        start: int = 0,
        stop: int | None = None,
        trajectory: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Real training (degree 0 module) from `state` at step `start` to `stop`.

        Returns the flat final state and the per-step losses of the steps run
        ((steps,), or (steps, W) for a loss of one entry per document of a step).
        If `trajectory` (stop - start, S) is given, row s - start receives the
        state that step s reads.
        """
        if self.series:
            raise ValueError("train() needs a degree-0 CompiledProgram; use train_series")
        stop, w, sa, sb, ws, losses, res0 = self._buffers(weights, state, start, stop)
        wb = np.zeros(self.docs.shape[1])  # the weights of a step's documents
        bad = self.module.run(
            start,
            stop,
            self.keys,
            self.docs,
            self.ndocs,
            self.II,
            self.FF,
            w,
            wb,
            sa,
            sb,
            ws,
            self.tab,
            self.cst,
            losses,
            res0,
            self.instr,
            np.zeros((0, self.state_size)) if trajectory is None else trajectory,
            self._real_tables(sa, ws, wb, res0),
        )
        if bad >= 0:
            if self.build.in_place:  # the state step `bad` read is gone: train up to it again
                before, _ = self.train(weights, state, start, bad)
            else:
                before = sa if (bad - start) % 2 == 0 else sb
            self._raise_nonfinite(bad, before, None, w, None)
        final = sa if self.build.in_place or (stop - start) % 2 == 0 else sb
        return final, losses[start:stop]

    def train_series(
        self, directions, weights=None, state=None, hi=None, start: int = 0, stop: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Series training along B directions (rows of a (B, N) complex array).

        The data weight of document i is weights[i] + z * directions[b, i].
        Returns (order-0 state (S,), higher orders as a flat block vector (see
        ``unpack_hi``), per-step losses).  Directions run in groups of at most
        PASS_ORDERS // K; the result is the same bit for bit whatever the grouping.
        """
        if not self.series:
            raise ValueError("train_series() needs a CompiledProgram of degree >= 1")
        psi = np.asarray(directions)
        if psi.ndim != 2 or psi.shape[1] != self.program.num_docs:
            raise ValueError(
                f"directions: shape {psi.shape}, expected (B, {self.program.num_docs})"
            )
        B, K = psi.shape[0], self.degree

        def initial_hi() -> np.ndarray:  # a fresh copy each time: a pass may write over it
            if hi is None:
                return np.zeros(B * K * self.state_size, np.complex128)
            return np.array(hi, np.complex128).reshape(-1)

        if hi is not None and np.size(hi) != B * K * self.state_size:
            raise ValueError(f"hi: {np.size(hi)} coefficients, expected {B * K * self.state_size}")
        group = max(1, PASS_ORDERS // K)
        if group >= B:
            return self._train_series_pass(psi, weights, state, initial_hi, start, stop)
        ha = initial_hi()
        his, sizes = [], []
        for b0 in range(0, B, group):
            rows = slice(b0, min(B, b0 + group))
            s0, h, losses = self._train_series_pass(
                psi[rows], weights, state, lambda rows=rows: self._hi_rows(ha, B, rows), start,
                stop,
            )  # fmt: skip
            his.append(h)
            sizes.append(rows.stop - rows.start)
        return s0, self._join_hi(his, sizes), losses

    def _hi_rows(self, hi: np.ndarray, B: int, rows: slice) -> np.ndarray:
        """The higher orders of directions `rows` of a B-direction block vector."""
        blocks = [
            hi_block(hi, B, self.degree, off, n)[rows].ravel()
            for off, n in self.state_layout.values()
        ]
        return np.concatenate(blocks)

    def _join_hi(self, his: list[np.ndarray], sizes: list[int]) -> np.ndarray:
        """Block vectors of consecutive direction groups -> one block vector of all."""
        blocks = []
        for off, n in self.state_layout.values():
            parts = [hi_block(h, g, self.degree, off, n) for h, g in zip(his, sizes, strict=True)]
            blocks.append(np.concatenate(parts).ravel())
        return np.concatenate(blocks)

    def _train_series_pass(self, psi, weights, state, initial_hi, start, stop):
        """One run over a group of directions small enough for the cache, from the higher
        orders initial_hi() gives (called again to name a blow-up: see below).

        The loop over steps is Python calling the compiled parts, each with its table
        of the addresses it calls (``compiler/pointers.py``): a series step takes
        milliseconds, so the microseconds of Python per step do not show, while a
        compiled loop would be one more Numba library to compile.
        """
        B, K = psi.shape[0], self.degree
        psi_t = np.ascontiguousarray(psi.T, dtype=np.complex128)
        stop, w, sa, sb, ws, losses, res0 = self._buffers(weights, state, start, stop)
        ha = initial_hi()
        hb = ha if self.build.in_place else np.empty_like(ha)
        wh = workspace(B * K * self.wh_size, np.complex128)
        resh = np.zeros(B * K, np.complex128)
        tab, cst, code, II, FF = self.tab, self.cst, self.instr, self.II, self.FF
        d = self.docs[start, : self.ndocs[start]] if start < stop else []
        # the tables are made for the types of the arguments the parts are given below
        params = self._series_params(sa, sb, ha, hb, ws, wh, II[:1].ravel(), FF[:1].ravel(),
                                     w[d], psi_t[d], res0, resh, B, K)  # fmt: skip
        steps = [
            (
                [(part, self.tables.part(part, params)) for part in
                 getattr(self.module, f"step_{i}_PARTS")],
                getattr(self.module, f"step_{i}_FIRST_ROW"),
                # the state's hi slices no fused loop checks: the caller checks them
                [
                    slice(B * K * off, B * K * (off + n))
                    for off, n in getattr(self.module, f"step_{i}_UNCHECKED_HI")
                ],
            )
            for i in range(len(self.step_keys))
        ]
        for s in range(start, stop):
            docs = self.docs[s, : self.ndocs[s]]
            w0, wpsi = w[docs], psi_t[docs]
            parts, r, unchecked = steps[self.keys[s]]
            res0[-1] = 0.0
            for part, P in parts:
                r = part(sa, sb, ha, hb, ws, wh, tab, cst, II[s], FF[s], w0, wpsi,
                         res0, resh, code, B, K, r, P)  # fmt: skip
            losses[s] = res0[0]
            finite = res0[-1] == 0.0 and kernels.all_finite(sb)
            if not (finite and all(kernels.all_finite_c(hb[u]) for u in unchecked)):
                if self.build.in_place:  # the orders step s read are gone: train up to it
                    sa, ha, _ = self._train_series_pass(psi, weights, state, initial_hi, start, s)
                self._raise_nonfinite(s, sa, ha, w, psi)
            sa, sb, ha, hb = sb, sa, hb, ha
        return sa, ha, losses[start:stop]

    def _series_params(self, s_in, s_out, h_in, h_out, ws, wh, ii, ff, w0, wpsi, res0, resh,
                       B, K) -> dict:  # fmt: skip
        """The numba types of a series part's parameters for these arguments."""
        return pointers.param_types([*signature(True).split(", "), "r"], (
            s_in, s_out, h_in, h_out, ws, wh, self.tab, self.cst, ii, ff, w0, wpsi, res0, resh,
            self.instr, B, K, 0))  # fmt: skip

    def first_steps(self) -> list[int]:
        """The first step of each step circuit, in order."""
        first = {key: s for s, key in reversed(list(enumerate(self.keys.tolist())))}
        return sorted(first.values())

    def load_series_callees(self, reverse: bool = False) -> None:
        """Compile (or load) every kernel and loop the series steps call, in the order
        ``runtime.precompute.load_series_code`` meets them (`reverse`: the other way)."""
        steps = [getattr(self.module, f"step_{self.keys[s]}_PARTS") for s in self.first_steps()]
        parts = dict.fromkeys(fn for step in steps for fn in step)
        f, c = np.zeros(1), np.zeros(1, np.complex128)  # the types _train_series_pass gives
        params = self._series_params(f, f, c, c, f, c, self.II[:1].ravel(), self.FF[:1].ravel(),
                                     f, np.zeros((1, 1), np.complex128), f, c, 1, 1)  # fmt: skip
        for fn in reversed(list(parts)) if reverse else parts:
            pointers.load_callees(fn, params, reverse)

    def _real_tables(self, sa, ws, wb, res0) -> np.ndarray:
        """Row i: the table of step circuit i's entry function (``emit.emit_function``)
        for ``run``'s arguments, made on the first call: ``train`` makes every array it
        passes itself (C-contiguous, of fixed dtypes), so their types never change, and a
        retraining of a few steps is not slowed by typing them again."""
        if self._real_pts is None:
            params = pointers.param_types([*signature(False).split(", "), "r"], (
                sa, sa, ws, self.tab, self.cst, self.II[:1].ravel(), self.FF[:1].ravel(), wb,
                res0, self.instr, 0))  # fmt: skip
            rows = [self.tables.entry(f"step_{i}", params) for i in range(len(self.step_keys))]
            self._real_pts = np.zeros((len(rows), max(map(len, rows))), np.int64)
            for i, r in enumerate(rows):
                self._real_pts[i, : len(r)] = r
        return self._real_pts

    def output(self, state: np.ndarray, test, hi: np.ndarray | None = None) -> np.ndarray:
        """The output on one test input: a float (degree 0) or coefficients (B, K+1)."""
        key, inputs = self.program.encode_test(test)
        i = self.out_keys.index(key)
        cp = self.outs_c[key]
        ii = pack(inputs, cp.iface.ints, sum(n for _, n in cp.iface.ints.values()), np.int64)
        ff = pack(inputs, cp.iface.floats, sum(n for _, n in cp.iface.floats.values()), np.float64)
        ws = workspace(self.ws_size)
        res0 = np.zeros(2)
        state = np.ascontiguousarray(state, np.float64)
        if not self.series:
            self.tables.call(f"output_{i}", state, state, ws, self.tab, self.cst, ii, ff, 0.0,
                             res0, self.instr)
            return res0[0]
        if hi is None:
            raise ValueError("output() of a series program needs the higher orders `hi`")
        K = self.degree
        hi = np.ascontiguousarray(hi, np.complex128).reshape(-1)
        B = hi.size // (K * self.state_size)
        if B * K * self.state_size != hi.size or B < 1:
            raise ValueError(f"hi: {hi.size} coefficients do not fit B x {K} x {self.state_size}")
        wh = workspace(B * K * self.wh_size, np.complex128)
        resh = np.zeros(B * K, np.complex128)
        self.tables.call(f"output_{i}", state, state, hi, hi, ws, wh, self.tab, self.cst, ii,
                         ff, 0.0, np.zeros(B, np.complex128), res0, resh, self.instr, B, K)
        out = np.empty((B, K + 1), np.complex128)
        out[:, 0] = res0[0]
        out[:, 1:] = resh.reshape(B, K)
        return out

    # ---------------------------------------------------------------- errors
    def _raise_nonfinite(self, step: int, s0, hi, w, psi) -> None:
        prog = self.program
        circuit, inputs = prog.step_inputs(step)
        st = prog.steps[step]
        state = self.unpack_state(s0)
        if hi is None:
            where = locate_nonfinite(circuit, {**state, **inputs, WEIGHT: st.weight(w)}, None)
        else:
            K = self.degree
            his = self.unpack_hi(hi, psi.shape[0])
            bad_b = next(
                (
                    b
                    for b in range(psi.shape[0])
                    if not all(np.all(np.isfinite(v[b])) for v in his.values())
                ),
                0,
            )
            series_state = {n: np.concatenate([v[None], his[n][bad_b]]) for n, v in state.items()}
            w0 = st.weight(w)
            wser = np.zeros((K + 1, *np.shape(w0)), np.complex128)
            wser[0], wser[1] = w0, st.weight(psi[bad_b])
            where = locate_nonfinite(circuit, {**series_state, **inputs, WEIGHT: wser}, K)
        docs = f"document {st.doc}" if isinstance(st.doc, int) else f"documents {list(st.doc)}"
        raise NonFiniteError(f"non-finite value at training step {step} ({docs}): {where}")


def compile_program(program: Program, degree: int = 0) -> CompiledProgram:
    return CompiledProgram(program, degree)


__all__ = ["CompiledProgram", "NonFiniteError", "compile_program"]


def _param_slices(cp: CompiledProgram) -> list[tuple[int, int]]:
    return [cp.state_layout[p] for p in cp.program.params]


def params_of(
    cp: CompiledProgram, state: np.ndarray, hi: np.ndarray | None = None, directions: int = 1
):
    """The parameters only: order 0 (P,) and, for series, orders 1..K as (B, K, P).

    P is the total parameter size in ``program.params`` order: what a sketch
    stores per direction (the optimizer's buffers are not needed afterwards).
    """
    p0 = np.concatenate([state[off : off + n] for off, n in _param_slices(cp)])
    if hi is None:
        return p0, None
    blocks = [hi_block(hi, directions, cp.degree, off, n) for off, n in _param_slices(cp)]
    return p0, np.concatenate(blocks, axis=2)


def output_from_params(cp: CompiledProgram, p0: np.ndarray, phi: np.ndarray | None, test):
    """The output on one test input from parameters as returned by ``params_of``."""
    state = np.zeros(cp.state_size)
    pos = 0
    slices = _param_slices(cp)
    for off, n in slices:
        state[off : off + n] = p0[pos : pos + n]
        pos += n
    if phi is None:
        return cp.output(state, test)
    B, K = phi.shape[0], cp.degree
    if phi.shape[1:] != (K, p0.size):
        raise ValueError(f"parameter series of shape {phi.shape}, expected (B, {K}, {p0.size})")
    hi = np.zeros(B * K * cp.state_size, np.complex128)
    pos = 0
    for off, n in slices:
        hi_block(hi, B, K, off, n)[:] = phi[:, :, pos : pos + n]
        pos += n
    return cp.output(state, test, hi)
