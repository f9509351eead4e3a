"""Code generation: a circuit becomes Numba functions that call one kernel per equation.

Runs of elementwise equations are the exception: each becomes one generated
function (``compiler/fusion.py``; in series mode at degree K <= 8 with a
second loop over the higher orders, ``compiler/series_fusion.py``), defined in
the same module.

Every node has an order-0 slot (real, shared by all directions) and, if the
activity analysis says its higher orders are needed, a hi slot.  A slot is
(array name, offset).  Each equation becomes one line of kernel calls: the
order-0 kernel its registry entry names (``Code.kernel``; or a loop generated
from its ``Code.scalar``) and, for a series, the call of its series rule
(``compiler/series_rules.py``),
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

import functools
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from circuitsketch.ir import Circuit, IRError, Node, Op, opdef
from compiler import kernels
from compiler.fusion import NO_FUSION, Fusion, define, describe, fuse, fused_call
from compiler.layout import BB, E0, E1, E2, E3, HA, HB, HC, HO, OUT, WIDTH, A, C, N
from compiler.passes import Activity
from compiler.series_rules import HARGS, series_rule

PART_NODES = 480
OPERAND_COLUMNS = ((A, HA), (BB, HB), (C, HC))  # operand q's order-0 and hi offsets
EXTRA_COLUMNS = (E0, E1, E2, E3)


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


def is_alias(op: Op) -> bool:
    """The result lives in its operand's memory (reshape of a flat buffer)."""
    return opdef(op).code.alias


@functools.cache
def _trailing_args(kernel: str) -> tuple[str, ...]:
    """The arguments a kernel takes after ``code, r`` (``tab``, ``cst``), by name."""
    names = list(inspect.signature(getattr(kernels, kernel).py_func).parameters)
    return tuple(names[names.index("r") + 1 :])


def kernel_call(kernel: str, arrays: list[str], z: str) -> str:
    """``k.<kernel>(operand arrays, result array, code, r, <tab/cst>)``."""
    return f"k.{kernel}({', '.join([*arrays, z, 'code', 'r', *_trailing_args(kernel)])})"


def elementwise_loop(node: Node) -> tuple[str, str]:
    """(body, arguments) of the order-0 loop of an op computed from its scalar expression
    (no library kernel): the same expression a fused loop of it evaluates."""
    q = len(node.inputs)
    expr = opdef(node.op).code.scalar_expr([f"x{j}[i]" for j in range(q)], node)
    body = [f"n = code[r, {N}]"]
    body += [f"x{j} = X{j}[code[r, {OPERAND_COLUMNS[j][0]}] :][:n]" for j in range(q)]
    body += [f"z = Z[code[r, {OUT}] :][:n]", "for i in range(n):", f"    z[i] = {expr}"]
    return "\n".join(body), ", ".join([*(f"X{j}" for j in range(q)), "Z", "code", "r"])


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
        if is_alias(node.op) and i not in out_slot:
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
        source = node.op in (Op.INPUT, Op.CONST)
        computed = not source and not is_alias(node.op) and i not in out_slot
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
        elif is_alias(node.op) and i not in out_slot:
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
    """The instruction-table row of equation i: operand q's offsets in OPERAND_COLUMNS[q],
    then the op's own parameters (its registry ``Code.params``) in E0..E3."""
    node = c.nodes[i]
    ins = node.inputs
    row = {OUT: s.r_off[i], HO: s.h_off[i], N: node.size}
    for (col, hcol), j in zip(OPERAND_COLUMNS, ins, strict=False):
        row[col], row[hcol] = s.r_off[j], s.h_off[j]
    code = opdef(node.op).code
    if (
        len(ins) > 1
        and not s.h_arr[ins[0]]
        and code.series
        and series_rule(code.series, node.op.value).first_series_in_ha
    ):
        row[HA] = s.h_off[ins[1]]  # h_copy / h_neg read their one series operand from HA
    if code.params is not None:
        params = code.params(node, [c.nodes[j].shape for j in ins])
        for col, value in zip(EXTRA_COLUMNS, params, strict=False):
            if isinstance(value, np.ndarray):
                add = tables.add_float if value.dtype.kind == "f" else tables.add_int
                value = add(value)
            row[col] = int(value)
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
        and c.nodes[nid].op not in (Op.INPUT, Op.CONST)
        and not is_alias(c.nodes[nid].op)
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
        elif node.op in (Op.INPUT, Op.CONST) or (is_alias(node.op) and i not in out_slot):
            continue
        else:
            entry = opdef(node.op)
            if entry.code.kernel is not None:
                code = [kernel_call(entry.code.kernel, x, s.r_arr[i])]
            elif entry.code.scalar is not None:
                loop, loop_args = elementwise_loop(node)
                fname = tables.fused.get(loop)
                if fname is None:
                    fname = tables.fused[loop] = f"loop_{len(tables.fused)}"
                    indented = "\n".join("    " + line for line in loop.splitlines())
                    loops.append(f"{deco}\ndef {fname}({loop_args}):\n{indented}\n\n")
                code = [f"{fname}({', '.join([*x, s.r_arr[i], 'code', 'r'])})"]
            else:
                raise IRError(f"no code for op {node.op.value!r}")
            if has_hi:
                rule = series_rule(entry.code.series, node.op.value)
                code.append(rule.call(x, h, s.r_arr[i], s.h_arr[i]))
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
