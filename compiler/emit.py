"""Code generation: a circuit becomes Numba functions that call one kernel per equation.

Runs of elementwise equations are the exception: each becomes one generated
function (``compiler/fusion.py``; in series mode at degree K <= 8 with a
second loop over the higher orders, ``compiler/series_fusion.py``), defined in
the same module.

Every node has an order-0 slot (real, shared by all directions) and, if the
activity analysis says its higher orders are needed, a hi slot.  A slot is
(array name, offset).  Each equation becomes one line of kernel calls, chosen
from two tables keyed by the op (``R0`` for order 0, ``HI`` for orders >= 1),
with its printed form as a comment above it; offsets and sizes go to a row of
the instruction table ``code`` rather than into the source, so every kernel is
compiled once and the generated code is short.  Long circuits are split into
parts of at most ``PART_NODES`` equations, since Numba's compile time grows
with function length.  Numba links every library a function calls into that
function's own module and optimises the whole again, so each extra level or
part re-optimises the kernels: parts are made large (microgpt's step is one
part), steps are inlined into real mode's compiled training loop, and series
mode loops over steps in Python (measured, cold compile of microgpt's series
module with cached kernels: 30.6 s -> 17.4 s with large parts and inlining).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from circuitsketch.interpret import EVAL
from circuitsketch.ir import Circuit, IRError, Node, Op
from compiler.fusion import NO_FUSION, Fusion, define, describe, fuse, fused_call
from compiler.layout import BB, E0, E1, E2, E3, HA, HB, HC, HO, OUT, WIDTH, A, C, N
from compiler.passes import Activity

TAKE_OPS = (Op.TRANSPOSE, Op.SLICE, Op.PAD, Op.BROADCAST)
ALIAS_OPS = (Op.RESHAPE,)  # flat buffers make reshape free
PART_NODES = 480


class CodeBuilder:
    """Indented lines."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.depth = 0

    def line(self, text: str = "") -> None:
        self.lines.append("    " * self.depth + text if text else "")

    def indent(self) -> None:
        self.depth += 1

    def dedent(self) -> None:
        self.depth -= 1

    def source(self) -> str:
        return "\n".join(self.lines) + "\n"


@dataclass
class Tables:
    """Run-time data of a module: instruction rows, int maps/masks, float constants."""

    rows: list[list[int]] = field(default_factory=list)
    ints: list[np.ndarray] = field(default_factory=list)
    floats: list[np.ndarray] = field(default_factory=list)
    int_size: int = 0
    float_size: int = 0
    fused: dict[str, str] = field(default_factory=dict)  # fused loop body -> function name

    def add_int(self, arr: np.ndarray) -> int:
        a = np.ascontiguousarray(arr, dtype=np.int64).ravel()
        self.ints.append(a)
        self.int_size += a.size
        return self.int_size - a.size

    def add_float(self, arr) -> int:
        a = np.ascontiguousarray(arr, dtype=np.float64).ravel()
        self.floats.append(a)
        self.float_size += a.size
        return self.float_size - a.size

    def add_row(self, values: Mapping[int, int]) -> int:
        row = [-1] * WIDTH
        for col, v in values.items():
            row[col] = int(v)
        self.rows.append(row)
        return len(self.rows) - 1

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        instr = np.array(self.rows or [[-1] * WIDTH], dtype=np.int64)
        ints = np.concatenate(self.ints) if self.ints else np.zeros(1, np.int64)
        floats = np.concatenate(self.floats) if self.floats else np.zeros(1, np.float64)
        return instr, ints, floats


def take_map(node: Node, in_shape: tuple[int, ...]) -> np.ndarray:
    """out.flat[i] = in.flat[map[i]] (-1: zero), computed by running the op on indices."""
    idx = np.arange(1, int(np.prod(in_shape, dtype=np.int64)) + 1, dtype=np.int64).reshape(in_shape)
    return np.asarray(EVAL[node.op]([idx], node)).ravel() - 1


def reduce_map(node: Node, in_shape: tuple[int, ...]) -> np.ndarray:
    """map[i, j]: the j-th input element reduced into output element i."""
    idx = np.arange(int(np.prod(in_shape, dtype=np.int64)), dtype=np.int64).reshape(in_shape)
    return np.moveaxis(idx, node.attrs[0], -1).reshape(-1, in_shape[node.attrs[0]])


# ------------------------------------------------------------------ rule tables
# R0[op](x, z) -> kernel call; x: operand arrays, z: output array.
R0: dict[Op, Callable[[list[str], str], str]] = {
    Op.ADD: lambda x, z: f"k.add({x[0]}, {x[1]}, {z}, code, r)",
    Op.SUB: lambda x, z: f"k.sub({x[0]}, {x[1]}, {z}, code, r)",
    Op.MUL: lambda x, z: f"k.mul({x[0]}, {x[1]}, {z}, code, r)",
    Op.DIV: lambda x, z: f"k.div({x[0]}, {x[1]}, {z}, code, r)",
    Op.NEG: lambda x, z: f"k.neg({x[0]}, {z}, code, r)",
    Op.EXP: lambda x, z: f"k.exp({x[0]}, {z}, code, r)",
    Op.LOG: lambda x, z: f"k.log({x[0]}, {z}, code, r)",
    Op.ERF: lambda x, z: f"k.erf({x[0]}, {z}, code, r)",
    Op.POW: lambda x, z: f"k.powc({x[0]}, {z}, code, r, cst)",
    Op.SUM: lambda x, z: f"k.reduce_sum({x[0]}, {z}, code, r, tab)",
    Op.SHIFT_MAX: lambda x, z: f"k.reduce_max({x[0]}, {z}, code, r, tab)",
    Op.MATMUL: lambda x, z: f"k.matmul({x[0]}, {x[1]}, {z}, code, r)",
    Op.GATHER: lambda x, z: f"k.gather({x[0]}, {x[1]}, {z}, code, r)",
    Op.SCATTER_ADD: lambda x, z: f"k.scatter_add({x[0]}, {x[1]}, {z}, code, r)",
    Op.WHERE: lambda x, z: f"k.where({x[0]}, {x[1]}, {x[2]}, {z}, code, r)",
    Op.ONE_HOT: lambda x, z: f"k.one_hot({x[0]}, {z}, code, r)",
    **{op: (lambda x, z: f"k.take({x[0]}, {z}, code, r, tab)") for op in TAKE_OPS},
}

HARGS = "code, r, B, K"


def _hi_add(x, h, z, hz):
    if h[0] and h[1]:
        return f"k.h_add({h[0]}, {h[1]}, {hz}, {HARGS})"
    return f"k.h_copy({h[0] or h[1]}, {hz}, {HARGS})"


def _hi_sub(x, h, z, hz):
    if h[0] and h[1]:
        return f"k.h_sub({h[0]}, {h[1]}, {hz}, {HARGS})"
    return f"k.h_copy({h[0]}, {hz}, {HARGS})" if h[0] else f"k.h_neg({h[1]}, {hz}, {HARGS})"


def _hi_mul(x, h, z, hz):
    if h[0] and h[1]:
        return f"k.h_mul({x[0]}, {h[0]}, {x[1]}, {h[1]}, {hz}, {HARGS})"
    return (
        f"k.h_scale({h[0]}, {x[1]}, {hz}, {HARGS})"
        if h[0]
        else f"k.h_scale({h[1]}, {x[0]}, {hz}, {HARGS})"
    )


def _hi_div(x, h, z, hz):
    if h[1]:
        return f"k.h_div({h[0] or h[1]}, {x[1]}, {h[1]}, {z}, {hz}, {HARGS})"
    return f"k.h_div_const({h[0]}, {x[1]}, {hz}, {HARGS})"


# HI[op](x, h, z, hz) -> kernel call; h[i] is '' where operand i is not a series.
HI: dict[Op, Callable[[list[str], list[str], str, str], str]] = {
    Op.ADD: _hi_add,
    Op.SUB: _hi_sub,
    Op.NEG: lambda x, h, z, hz: f"k.h_neg({h[0]}, {hz}, {HARGS})",
    Op.MUL: _hi_mul,
    Op.DIV: _hi_div,
    Op.EXP: lambda x, h, z, hz: f"k.h_exp({h[0]}, {z}, {hz}, {HARGS})",
    Op.LOG: lambda x, h, z, hz: f"k.h_log({x[0]}, {h[0]}, {hz}, {HARGS})",
    Op.POW: lambda x, h, z, hz: f"k.h_pow({x[0]}, {h[0]}, {z}, {hz}, {HARGS}, cst)",
    Op.ERF: lambda x, h, z, hz: f"k.h_erf({x[0]}, {h[0]}, {hz}, {HARGS})",
    Op.SUM: lambda x, h, z, hz: f"k.h_reduce_sum({h[0]}, {hz}, {HARGS}, tab)",
    Op.MATMUL: lambda x, h, z, hz: (
        f"k.h_matmul({x[0]}, {h[0] or h[1]}, {x[1]}, {h[1] or h[0]}, {hz}, {HARGS})"
    ),
    Op.GATHER: lambda x, h, z, hz: f"k.h_gather({h[0]}, {x[1]}, {hz}, {HARGS})",
    Op.SCATTER_ADD: lambda x, h, z, hz: f"k.h_scatter_add({h[0]}, {x[1]}, {hz}, {HARGS})",
    Op.WHERE: lambda x, h, z, hz: (
        f"k.h_where({x[0]}, {h[1] or h[2]}, {h[2] or h[1]}, {hz}, {HARGS})"
    ),
    **{op: (lambda x, h, z, hz: f"k.h_take({h[0]}, {hz}, {HARGS}, tab)") for op in TAKE_OPS},
}


@dataclass
class Interface:
    """Where a circuit's inputs and outputs live in the run-time arrays.

    state: name -> (offset, size) in the flat state (s_in / s_out, and in
    units of B*K for the higher orders h_in / h_out).  ints / floats: name ->
    (offset, size) in the per-call ii / ff vectors.  weight: the data-weight
    input of a step circuit, or None.
    """

    state: Mapping[str, tuple[int, int]]
    ints: Mapping[str, tuple[int, int]]
    floats: Mapping[str, tuple[int, int]]
    weight: str | None


def signature(series: bool) -> str:
    if series:
        return (
            "s_in, s_out, h_in, h_out, ws, wh, tab, cst, ii, ff, w0, wpsi, res0, resh, code, B, K"
        )
    return "s_in, s_out, ws, tab, cst, ii, ff, w0, res0, code"


@dataclass
class Slots:
    """Order-0 and hi slots of every node: (array, offset); hi array '' = not a series."""

    r_arr: list[str]
    r_off: list[int]
    h_arr: list[str]
    h_off: list[int]
    ws_size: int
    wh_size: int


class SlotPool:
    """Offsets in one workspace; a dead value's slot is reused by a later value of its size.

    Reuse keeps the workspace small enough to stay in cache (without it the
    microgpt step's series workspace is 47 MB at B=8, K=3).
    """

    def __init__(self) -> None:
        self.size = 0
        self.free: dict[int, list[int]] = {}

    def take(self, n: int) -> int:
        spare = self.free.get(n)
        if spare:
            return spare.pop()
        self.size += n
        return self.size - n

    def give(self, n: int, off: int) -> None:
        self.free.setdefault(n, []).append(off)


def last_uses(
    c: Circuit, out_slot: Mapping[int, tuple[int, int]], fusion: Fusion = NO_FUSION
) -> tuple[list[int], list[int]]:
    """owner[i]: the node whose slot i lives in (reshape shares its operand's); last[o]:
    the last equation that reads slot o (len(c) for circuit outputs).  A fused
    member reads its operands where its group runs."""
    owner = list(range(len(c.nodes)))
    last = list(range(len(c.nodes)))
    for i, node in c:
        if i in fusion.absorbed:
            continue
        if node.op in ALIAS_OPS and i not in out_slot:
            owner[i] = owner[node.inputs[0]]
        for j in fusion.reads(c, i):
            last[owner[j]] = max(last[owner[j]], fusion.at(i))
    for nid in c.outputs.values():
        last[owner[nid]] = len(c.nodes)
    return owner, last


def assign_slots(
    c: Circuit,
    act: Activity,
    iface: Interface,
    tables: Tables,
    series: bool,
    out_slot: Mapping[int, tuple[int, int]],
    fusion: Fusion = NO_FUSION,
) -> Slots:
    """Slots of every node.  Workspace slots are taken when a value is computed and
    given back after its last reader, never before the reader's own output slot is
    taken, so no kernel's output overlaps its operands.  A fused group is one
    equation: its outputs take slots where it runs, its inner values take none."""
    n_nodes = len(c.nodes)
    s = Slots([""] * n_nodes, [0] * n_nodes, [""] * n_nodes, [-1] * n_nodes, 0, 0)
    owner, last = last_uses(c, out_slot, fusion)
    ws, wh = SlotPool(), SlotPool()
    pooled: dict[int, tuple[int, bool]] = {}  # owner -> (size, has a wh slot)

    def take_workspace(i: int) -> None:
        has_hi = series and act.hi[i]
        s.r_arr[i], s.r_off[i] = "ws", ws.take(c.nodes[i].size)
        if has_hi:
            s.h_arr[i], s.h_off[i] = "wh", wh.take(c.nodes[i].size)
        pooled[i] = (c.nodes[i].size, has_hi)

    def release(candidates: set[int], i: int) -> None:
        for o in candidates:
            if last[o] == i and o in pooled:
                n, hi = pooled.pop(o)
                ws.give(n, s.r_off[o])
                if hi:
                    wh.give(n, s.h_off[o])

    for i, node in c:
        if i in fusion.absorbed:
            continue
        has_hi = series and act.hi[i]
        group = fusion.group_of.get(i)
        if group is not None:
            if i != group.end:
                continue
            for o in group.outputs:
                if o in out_slot:
                    s.r_arr[o], s.r_off[o] = "s_out", out_slot[o][0]
                    if series and act.hi[o]:
                        s.h_arr[o], s.h_off[o] = "h_out", out_slot[o][0]
                else:
                    take_workspace(o)
            for o in group.needs0:  # order 0 for the group's hi loop only
                s.r_arr[o], s.r_off[o] = "ws", ws.take(c.nodes[o].size)
                pooled[o] = (c.nodes[o].size, False)
            read = {owner[j] for m in group.members for j in fusion.reads(c, m)}
            release(read | set(group.outputs) | set(group.needs0), i)
            continue
        computed = node.op not in (Op.INPUT, Op.CONST, *ALIAS_OPS) and i not in out_slot
        if computed or (node.op is Op.INPUT and node.attrs[0] == iface.weight):
            take_workspace(i)
        elif node.op is Op.INPUT:
            nm = node.attrs[0]
            if nm in iface.state:
                s.r_arr[i], s.r_off[i] = "s_in", iface.state[nm][0]
                if has_hi:
                    s.h_arr[i], s.h_off[i] = "h_in", iface.state[nm][0]
            elif nm in iface.ints:
                s.r_arr[i], s.r_off[i] = "ii", iface.ints[nm][0]
            elif nm in iface.floats:
                s.r_arr[i], s.r_off[i] = "ff", iface.floats[nm][0]
            else:
                raise IRError(f"input {nm!r} has no place in the compiled interface")
        elif node.op is Op.CONST:
            value = c.consts[i]
            if node.dtype == "float":
                s.r_arr[i], s.r_off[i] = "cst", tables.add_float(value)
            else:
                s.r_arr[i], s.r_off[i] = "tab", tables.add_int(value)
        elif node.op in ALIAS_OPS and i not in out_slot:
            j = node.inputs[0]
            s.r_arr[i], s.r_off[i] = s.r_arr[j], s.r_off[j]
            if has_hi:
                s.h_arr[i], s.h_off[i] = s.h_arr[j], s.h_off[j]
        else:  # a node computed straight into its state-output slot
            s.r_arr[i], s.r_off[i] = "s_out", out_slot[i][0]
            if has_hi:
                s.h_arr[i], s.h_off[i] = "h_out", out_slot[i][0]
        release({owner[j] for j in node.inputs} | {i}, i)
    s.ws_size, s.wh_size = ws.size, wh.size
    return s


def _row(c: Circuit, i: int, s: Slots, tables: Tables) -> dict[int, int]:
    """The instruction-table row of equation i."""
    node = c.nodes[i]
    ins = node.inputs
    row = {OUT: s.r_off[i], HO: s.h_off[i], N: node.size}
    if node.op is Op.WHERE:
        row.update(
            {
                C: s.r_off[ins[0]],
                A: s.r_off[ins[1]],
                BB: s.r_off[ins[2]],
                HA: s.h_off[ins[1]],
                HB: s.h_off[ins[2]],
            }
        )
    else:
        for col, hcol, j in zip((A, BB, C), (HA, HB, HC), ins, strict=False):
            row[col], row[hcol] = s.r_off[j], s.h_off[j]
    shape0 = c.nodes[ins[0]].shape if ins else ()
    size0 = c.nodes[ins[0]].size if ins else 0
    if node.op in (Op.ADD, Op.SUB) and not s.h_arr[ins[0]]:
        row[HA] = s.h_off[ins[1]]  # h_copy / h_neg read their one series operand from HA
    if node.op is Op.POW:
        row[E0] = tables.add_float([node.attrs[0]])
    elif node.op in TAKE_OPS:
        row[E0], row[E1] = tables.add_int(take_map(node, shape0)), size0
    elif node.op in (Op.SUM, Op.SHIFT_MAX):
        m = reduce_map(node, shape0)
        row[E0], row[E1], row[E2] = tables.add_int(m), m.shape[1], size0
    elif node.op is Op.MATMUL:
        b = c.nodes[ins[1]].shape
        row.update(
            {E0: shape0[0] if len(shape0) == 3 else 1, E1: shape0[-2], E2: shape0[-1], E3: b[-1]}
        )
    elif node.op is Op.GATHER:
        row[E0] = int(np.prod(shape0[1:], dtype=np.int64))
        row[E1] = size0
    elif node.op is Op.SCATTER_ADD:
        row[E0] = int(np.prod(shape0[1:], dtype=np.int64))
        row[E1] = shape0[0]
    elif node.op is Op.ONE_HOT:
        row[E0] = node.attrs[0]
    return row


def state_out_slots(c: Circuit, iface: Interface) -> dict[int, tuple[int, int]]:
    """Nodes computed straight into their state-output slot (no copy at the end)."""
    counts: dict[int, int] = {}
    for nid in c.outputs.values():
        counts[nid] = counts.get(nid, 0) + 1
    return {
        nid: iface.state[oname]
        for oname, nid in c.outputs.items()
        if oname in iface.state
        and counts[nid] == 1
        and c.nodes[nid].op not in (Op.INPUT, Op.CONST, *ALIAS_OPS)
    }


def emit_function(
    name: str,
    c: Circuit,
    act: Activity,
    iface: Interface,
    tables: Tables,
    series: bool,
    state_outputs: bool,
    entry: str = "njit",
    fused: bool = True,
    degree: int = 0,
) -> str:
    """Source of the njit function `name` (and its parts) evaluating circuit c.

    State-named outputs are written to s_out/h_out (when state_outputs); the
    output "loss" goes to res0[0] and resh (B*K).  The entry function `name` runs
    the parts and returns whether the results are finite.  entry: "njit" (called
    from Python), "inline" (only called from other generated code, which inlines it
    at Numba IR level, so it is not one more library re-optimising all its parts and
    kernels) or "none" (no entry function: the caller runs the parts itself).
    Module attributes ``<name>_WS`` / ``<name>_WH`` give the workspace sizes (hi in
    units of B*K), ``<name>_PARTS`` and ``<name>_FIRST_ROW`` the parts and the
    instruction row they start at.  fused: elementwise chains run as one generated
    loop each (``compiler/fusion.py``); the results are the same bits.  degree: the
    K that series fused loops unroll (0: series values are not fused); the code is
    then only for that K.
    """
    if entry not in ("njit", "inline", "none"):
        raise ValueError(f"entry must be 'njit', 'inline' or 'none', got {entry!r}")
    out_slot = state_out_slots(c, iface) if state_outputs else {}
    hi_flags = [series and h for h in act.hi]
    fusion = fuse(c, hi_flags, degree if series else 0) if fused else NO_FUSION
    s = assign_slots(c, act, iface, tables, series, out_slot, fusion)

    deco = "@njit(cache=True, nogil=True, error_model='numpy')"
    checked_hi: set[int] = set()  # state outputs whose hi a fused loop checks (res0[1])
    loops: list[str] = []  # definitions of fused loops new to this module
    body: list[list[str]] = []
    for i, node in c:
        if i in fusion.absorbed:
            continue
        group = fusion.group_of.get(i)
        if group is not None:
            if i != group.end:
                continue
            call = fused_call(
                c,
                group,
                fusion,
                lambda j: (s.r_arr[j], s.r_off[j]),
                lambda j: (s.h_arr[j], s.h_off[j]),
                lambda j: s.h_arr[j] == "h_out" and j in out_slot,
            )
            fname = tables.fused.get(call.body)
            if fname is None:
                fname = tables.fused[call.body] = f"fused_{len(tables.fused)}"
                loops.append(define(fname, call, deco))
            o = group.outputs[0]
            row = {OUT: s.r_off[o], N: node.size, E0: tables.add_int(call.offsets)}
            args = f"{', '.join(call.arrays)}, code, r, tab"
            if call.hi_arrays:
                row[E1] = tables.add_int(call.hi_offsets)
                views = (
                    f"k.hblock({a}, code, r, tab, {q}, B, K)" for q, a in enumerate(call.hi_arrays)
                )
                args += ", B, " + ", ".join(views)
            tables.add_row(row)
            checked_hi.update(call.checks)
            result = "res0[1] += " if call.checks else ""
            body.append([*describe(c, group), f"{result}{fname}({args}); r += 1"])
            continue
        has_hi = series and bool(s.h_arr[i])
        x = [s.r_arr[j] for j in node.inputs]
        h = [s.h_arr[j] for j in node.inputs]
        if node.op is Op.INPUT and node.attrs[0] == iface.weight:
            code = ["k.set_scalar(ws, code, r, w0)"]
            if has_hi:
                code.append("k.h_set_weight(wh, code, r, B, K, wpsi)")
        elif node.op in (Op.INPUT, Op.CONST) or (node.op in ALIAS_OPS and i not in out_slot):
            continue
        elif node.op in ALIAS_OPS:
            code = [f"k.copy({x[0]}, s_out, code, r)"]
            if has_hi:
                code.append(f"k.h_copy({h[0]}, h_out, {HARGS})")
        else:
            if node.op not in R0:
                raise IRError(f"no code template for op {node.op.value!r}")
            code = [R0[node.op](x, s.r_arr[i])]
            if has_hi:
                if node.op not in HI:
                    raise IRError(f"no series code template for op {node.op.value!r}")
                code.append(HI[node.op](x, h, s.r_arr[i], s.h_arr[i]))
        tables.add_row(_row(c, i, s, tables))
        body.append([f"# {c.format_node(i)}", "; ".join(code) + "; r += 1"])

    for oname, nid in c.outputs.items():
        if oname == "loss":
            dst_r, dst_off, dst_h = "res0", 0, "resh"
        elif state_outputs and oname in iface.state:
            if nid in out_slot:
                continue
            dst_r, dst_off, dst_h = "s_out", iface.state[oname][0], "h_out"
        elif state_outputs:
            raise IRError(f"output {oname!r} is neither state nor 'loss'")
        else:
            continue
        code = [f"k.copy({s.r_arr[nid]}, {dst_r}, code, r)"]
        if series:
            code.append(
                f"k.h_copy({s.h_arr[nid]}, {dst_h}, {HARGS})"
                if s.h_arr[nid]
                else f"k.h_zero({dst_h}, {HARGS})"
            )
        tables.add_row(
            {
                A: s.r_off[nid],
                OUT: dst_off,
                HA: s.h_off[nid],
                HO: dst_off if s.h_arr[nid] or series else -1,
                N: c.nodes[nid].size,
            }
        )
        body.append([f"# output {oname} = %{nid}", "; ".join(code) + "; r += 1"])

    args = signature(series)
    cb = CodeBuilder()
    cb.lines.extend("".join(loops).splitlines())
    parts = [body[a : a + PART_NODES] for a in range(0, len(body), PART_NODES)]
    for p, part in enumerate(parts):
        cb.line(deco)
        cb.line(f"def {name}_part{p}({args}, r):")
        cb.indent()
        for lines in part:
            for line in lines:
                cb.line(line)
        cb.line("return r")
        cb.dedent()
        cb.line()
        cb.line()
    first_row = len(tables.rows) - len(body)
    if entry != "none":
        cb.line(deco[:-1] + ", inline='always')" if entry == "inline" else deco)
        cb.line(f"def {name}({args}):")
        cb.indent()
        cb.line(f"r = code.shape[0] * 0 + {first_row}")
        for p in range(len(parts)):
            cb.line(f"r = {name}_part{p}({args}, r)")
        out, hout = ("s_out", "h_out") if state_outputs else ("res0", "resh")
        cb.line(f"return k.all_finite({out})" + (f" and k.all_finite_c({hout})" if series else ""))
        cb.dedent()
        cb.line()
        cb.line()
    if series and state_outputs:
        unchecked = tuple(
            iface.state[oname]
            for oname, nid in c.outputs.items()
            if oname in iface.state and nid not in checked_hi
        )
        cb.line(f"{name}_UNCHECKED_HI = {unchecked!r}  # state hi the caller checks itself")
    cb.line(f"{name}_WS = {s.ws_size}")
    cb.line(f"{name}_WH = {s.wh_size}")
    cb.line(f"{name}_FIRST_ROW = {first_row}")
    cb.line(f"{name}_PARTS = ({''.join(f'{name}_part{p}, ' for p in range(len(parts)))})")
    cb.line()
    return cb.source()
