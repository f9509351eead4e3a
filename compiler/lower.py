"""Lowering: a circuit with its slots and fusion plan becomes a list of instructions.

Each equation becomes one line of kernel calls: the order-0 kernel its
registry entry names (``Code.kernel``; or a loop generated from its
``Code.scalar``) and, for a series, the call of its series rule
(``compiler/series_rules.py``), with its printed form as a comment above it.
A fused group (``compiler/fusion.py``) is one line calling its generated loop.
Offsets and sizes go to the instruction row of the line (``compiler/tables.py``),
so the generated code is short and every library kernel is compiled once.
Emission (``compiler/emit.py``) only prints what this module decides.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
from collections.abc import Collection
from dataclasses import dataclass, field

import numpy as np

from circuitsketch.ir import Circuit, IRError, Node, Op, opdef
from compiler import kernels
from compiler.fusion import NO_FUSION, Fusion, describe, fused_call, loop_args, loop_views
from compiler.layout import BB, E0, E1, E2, E3, HA, HB, HC, HO, OUT, A, C, N
from compiler.passes import Activity
from compiler.products import FUSED, LEFT_TRANSPOSED, TRANSPOSED
from compiler.series_rules import HARGS, series_rule
from compiler.slots import Interface, Slots, assign_slots, in_operand, state_out_slots
from compiler.tables import Tables

DECO = "@njit(cache=True, nogil=True, error_model='numpy')"
OPERAND_COLUMNS = ((A, HA), (BB, HB), (C, HC))  # operand q's order-0 and hi offsets
EXTRA_COLUMNS = (E0, E1, E2, E3)


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


VIEW_MIN = 8192
"""Entries per matrix from which a transpose read as a right operand is left to its
products (below, the whole transpose stays in the first-level cache and writing it out
costs less than packing it for every product: bench/RESULTS.md, run 8)."""


def transposed_views(c: Circuit) -> set[int]:
    """Transposes of a matrix's last two axes that only products read (as either operand):
    not computed; each product reads the operand where it lies, transposed
    (``products.matmul``, column C), the same sums in the same order.  A right operand
    is packed PANEL columns at a time, which pays from VIEW_MIN entries on; a left one
    is read entry by entry, as the tiles read it anyway, at any size.  Taken in real mode
    only (``pipeline._lower``): series products read their operands' higher orders as
    they are."""
    users = c.users()
    outputs = set(c.outputs.values())
    views = set()
    for t, node in c:
        n = len(node.shape)
        if (
            node.op is not Op.TRANSPOSE
            or n < 2
            or tuple(node.attrs[0]) != (*range(n - 2), n - 1, n - 2)
            or t in outputs
            or not users[t]
        ):
            continue
        big = node.shape[-1] * node.shape[-2] >= VIEW_MIN
        if all(c.nodes[u].op is Op.MATMUL and (big or c.nodes[u].inputs[1] != t)
               for u in users[t]):  # fmt: skip
            views.add(t)
    return views


NAME = "__name__"  # stands for a generated function's name in the text it is named by


def code_of(text: str) -> str:
    """Generated source without its comment lines (which name nodes of one circuit)."""
    return "".join(line for line in text.splitlines(keepends=True)
                   if not line.lstrip().startswith("#"))  # fmt: skip


def content_name(prefix: str, text: str) -> str:
    """``<prefix>_<hash>``: a generated function named by its code (`text` with ``NAME``
    for its name; comments do not count), so that equal code in any program is one
    module in the cache, compiled once (``compiler/cache.py``)."""
    return f"{prefix}_{hashlib.sha256(code_of(text).encode()).hexdigest()[:12]}"


def _define(name: str, args: str, body: str) -> str:
    text = "\n".join("    " + line for line in body.splitlines())
    return f"{DECO}\ndef {name}({args}):\n{text}\n\n"


@dataclass
class Lowered:
    """A circuit lowered to one line of calls per equation, for ``emit`` to print.

    lines: per equation (or fused group, or output copy), its comment lines and the
    line of calls (without the row increment), whose instruction rows are
    ``first_row, first_row + 1, ...`` of the module's tables.  loops: definitions
    of generated loops new to the module.  ws_size / wh_size: the workspaces (hi in
    units of B*K).  unchecked: the state outputs' (offset, size) that no fused loop
    checks for infinities and NaNs: their higher orders in series mode (the caller
    checks them), their values in real mode (the entry function does).  state /
    hi_state: the arrays the state outputs and their higher orders are written to
    (s_in / h_in when written in place).
    """

    name: str
    series: bool
    state_outputs: bool
    lines: list[list[str]]
    loops: list[str]
    first_row: int
    ws_size: int
    wh_size: int
    unchecked: tuple[tuple[int, int], ...] = ()
    slots: Slots | None = field(default=None, repr=False)
    state: str = "s_out"
    hi_state: str = "h_out"


def lower(
    name: str,
    c: Circuit,
    act: Activity,
    iface: Interface,
    tables: Tables,
    series: bool,
    state_outputs: bool,
    fusion: Fusion = NO_FUSION,
    in_place: bool = False,
    views: Collection[int] = (),
    fma: bool = False,
) -> Lowered:
    """Lower circuit c (its rows and constants go to `tables`).

    State-named outputs are written to s_out/h_out (when state_outputs; when `in_place`,
    to s_in in real mode and h_in in series mode, see ``compiler/in_place.py``); the
    transposes in `views` are read by their products where their operands lie
    (``transposed_views``); the output "loss" goes to res0[0] and resh (B*K).  A fused
    loop that writes the state checks it for infinities and NaNs (its higher orders in
    series mode), adding to res0[-1].  `fma`: real products add each term by a fused
    multiply-add (``products.FUSED``; other bits).
    """
    out_slot = state_out_slots(c, iface) if state_outputs else {}
    state = "s_in" if in_place and not series else "s_out"
    hi_state = "h_in" if in_place and series else "h_out"
    s = assign_slots(c, act, iface, tables, series, out_slot, fusion, state, views, hi_state)
    first_row = len(tables.rows)
    checked: set[int] = set()  # state outputs a fused loop checks (res0[-1])
    loops: list[str] = []  # definitions of generated loops new to this module
    lines: list[list[str]] = []

    def loop_name(prefix: str, body: str, define_loop) -> str:
        fname = tables.loops.get(body)
        if fname is None:  # named by its text, so that equal loops are one cached function
            fname = tables.loops[body] = content_name(prefix, define_loop(NAME))
            loops.append(define_loop(fname))
        return fname

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
                lambda j: j in out_slot and (s.h_arr[j] == hi_state or not series),
            )
            fname = loop_name("fused", call.body, lambda f, call=call: _define(
                f, loop_args(call), loop_views(call) + call.body))  # fmt: skip
            o = group.outputs[0]
            row = {OUT: s.r_off[o], N: node.size, E0: tables.add_int(call.offsets)}
            args = f"{', '.join(call.arrays)}, code, r, tab"
            if call.hi_arrays:
                row[E1] = tables.add_int(call.hi_offsets)
                args += ", B, K, " + ", ".join(call.hi_arrays)
            tables.add_row(row)
            checked.update(call.checks)
            result = "res0[-1] += " if call.checks else ""
            lines.append([*describe(c, group), f"{result}{fname}({args})"])
            continue
        has_hi = series and bool(s.h_arr[i])
        x = [s.r_arr[j] for j in node.inputs]
        h = [s.h_arr[j] for j in node.inputs]
        if node.op is Op.INPUT and node.attrs[0] == iface.weight:
            code = ["k.set_weight(ws, code, r, w0)"]
            if has_hi:
                code.append("k.h_set_weight(wh, code, r, B, K, wpsi)")
        elif node.op in (Op.INPUT, Op.CONST) or in_operand(c, i, out_slot, views):
            continue
        else:
            if node.dtype == "int":
                raise IRError(
                    f"compiled code keeps integer arrays where they are given (they may be "
                    f"reshaped, not computed): {c.format_node(i)}"
                )
            entry = opdef(node.op)
            if entry.code.kernel is not None:
                code = [kernel_call(entry.code.kernel, x, s.r_arr[i])]
            elif entry.code.scalar is not None:
                body, params = elementwise_loop(node)
                fname = loop_name("loop", body, lambda f, a=params, b=body: _define(f, a, b))
                code = [f"{fname}({', '.join([*x, s.r_arr[i], 'code', 'r'])})"]
            else:
                raise IRError(f"no code for op {node.op.value!r}")
            if has_hi:
                rule = series_rule(entry.code.series, node.op.value)
                code.append(rule.call(x, h, s.r_arr[i], s.h_arr[i]))
        row = _row(c, i, s, tables)
        if node.op is Op.MATMUL:
            left, right = (j in views for j in node.inputs)
            fused = fma and not series
            if left or right or fused:
                row[C] = LEFT_TRANSPOSED * left | TRANSPOSED * right | FUSED * fused
        tables.add_row(row)
        lines.append([f"# {c.format_node(i)}", "; ".join(code)])

    for oname, nid in c.outputs.items():
        if oname == "loss":
            dst_r, dst_off, dst_h = "res0", 0, "resh"
        elif state_outputs and oname in iface.state:
            if nid in out_slot or (s.r_arr[nid], s.r_off[nid]) == (state, iface.state[oname][0]):
                continue  # computed in place, or kept where it is
            dst_r, dst_off, dst_h = state, iface.state[oname][0], hi_state
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
        lines.append([f"# output {oname} = %{nid}", "; ".join(code)])
    unchecked = ()
    if state_outputs:
        unchecked = tuple(
            iface.state[oname]
            for oname, nid in c.outputs.items()
            if oname in iface.state and nid not in checked
        )
    return Lowered(name, series, state_outputs, lines, loops, first_row, s.ws_size, s.wh_size,
                   unchecked, s, state, hi_state)
