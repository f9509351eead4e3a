"""Where every value of a circuit lives at run time: its order-0 and higher-order slots.

A slot is (array name, offset): ``s_in``/``s_out`` (the state, and ``h_in``/
``h_out`` its higher orders), ``ii``/``ff`` (a step's int and float inputs),
``tab``/``cst`` (constants), or the workspaces ``ws``/``wh``, where a dead
value's slot is reused by a later value of its size.  Higher-order slots are
in units of B*K (directions times orders).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np

from circuitsketch.ir import Circuit, IRError, Op, opdef
from compiler.fusion import NO_FUSION, Fusion
from compiler.passes import Activity
from compiler.tables import Tables


def is_alias(op: Op) -> bool:
    """The result lives in its operand's memory (reshape of a flat buffer)."""
    return opdef(op).code.alias


def in_operand(
    c: Circuit, i: int, out_slot: Mapping[int, tuple[int, int]], views: Collection[int] = ()
) -> bool:
    """Node i is not computed: it lives where its operand does (a reshape, or a transpose
    in `views` that its products read there), unless it is a state output of its own."""
    return (is_alias(c.nodes[i].op) or i in views) and i not in out_slot


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


@dataclass
class Slots:
    """Order-0 and hi slots of every node: (array, offset); hi array '' = not a series."""

    r_arr: list[str]
    r_off: list[int]
    h_arr: list[str]
    h_off: list[int]
    ws_size: int
    wh_size: int


ALIGN = 8
"""Values of at least ALIGN entries start ALIGN entries apart (a 64-byte cache line of
doubles, from a workspace that starts on one: ``workspace``), so a product's vector
loads never straddle two lines, which slows gemm (bench/RESULTS.md, run 14)."""


def workspace(n: int, dtype: type = np.float64) -> np.ndarray:
    """An empty array of max(n, 1) entries starting on a 64-byte boundary."""
    item = np.dtype(dtype).itemsize
    room = np.empty(max(n, 1) + 64 // item, dtype)
    skip = (-room.ctypes.data % 64) // item
    return room[skip : skip + max(n, 1)]


class SlotPool:
    """Offsets in one workspace; a dead value's slot is reused by a later value of its size.

    Reuse keeps the workspace small enough to stay in cache (without it the
    microgpt step's series workspace is 47 MB at B=8, K=3).  A value of ALIGN entries
    or more takes a whole number of ALIGN from a multiple of ALIGN.
    """

    def __init__(self) -> None:
        self.size = 0
        self.free: dict[int, list[int]] = {}

    def take(self, n: int) -> int:
        n = _lines(n)
        spare = self.free.get(n)
        if spare:
            return spare.pop()
        if n >= ALIGN:
            self.size = _round_up(self.size)
        self.size += n
        return self.size - n

    def give(self, n: int, off: int) -> None:
        self.free.setdefault(_lines(n), []).append(off)


def _round_up(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def _lines(n: int) -> int:
    """A value's slot size: n below ALIGN, else whole lines of ALIGN."""
    return n if n < ALIGN else _round_up(n)


def last_uses(
    c: Circuit,
    out_slot: Mapping[int, tuple[int, int]],
    fusion: Fusion = NO_FUSION,
    views: Collection[int] = (),
) -> tuple[list[int], list[int]]:
    """owner[i]: the node whose slot i lives in (reshape shares its operand's, and so does
    a transpose in `views`, which its readers read where its operand lies); last[o]: the
    last equation that reads slot o (len(c) for circuit outputs).  A fused member reads
    its operands where its group runs."""
    owner = list(range(len(c.nodes)))
    last = list(range(len(c.nodes)))
    for i, node in c:
        if i in fusion.absorbed:
            continue
        if in_operand(c, i, out_slot, views):
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
    out_array: str = "s_out",
    views: Collection[int] = (),
    hi_out_array: str = "h_out",
) -> Slots:
    """Slots of every node.  Workspace slots are taken when a value is computed and
    given back after its last reader, never before the reader's own output slot is
    taken, so no kernel's output overlaps its operands.  A fused group is one
    equation: its outputs take slots where it runs, its inner values take none.
    State outputs live in `out_array`: s_out, or s_in for a step written in place
    (``compiler/in_place.py``), and their higher orders in `hi_out_array`: h_out, or
    h_in.  A transpose in `views` lives where its operand does
    (``lower.transposed_views``)."""
    n_nodes = len(c.nodes)
    s = Slots([""] * n_nodes, [0] * n_nodes, [""] * n_nodes, [-1] * n_nodes, 0, 0)
    owner, last = last_uses(c, out_slot, fusion, views)
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
                    s.r_arr[o], s.r_off[o] = out_array, out_slot[o][0]
                    if series and act.hi[o]:
                        s.h_arr[o], s.h_off[o] = hi_out_array, out_slot[o][0]
                else:
                    take_workspace(o)
            for o in group.needs0:  # order 0 for the group's hi loop only
                s.r_arr[o], s.r_off[o] = "ws", ws.take(c.nodes[o].size)
                pooled[o] = (c.nodes[o].size, False)
            read = {owner[j] for m in group.members for j in fusion.reads(c, m)}
            release(read | set(group.outputs) | set(group.needs0), i)
            continue
        source = node.op in (Op.INPUT, Op.CONST)
        alias = in_operand(c, i, out_slot, views)
        computed = not source and not alias and i not in out_slot
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
        elif alias:
            j = node.inputs[0]
            s.r_arr[i], s.r_off[i] = s.r_arr[j], s.r_off[j]
            if has_hi:
                s.h_arr[i], s.h_off[i] = s.h_arr[j], s.h_off[j]
        else:  # a node computed straight into its state-output slot
            s.r_arr[i], s.r_off[i] = out_array, out_slot[i][0]
            if has_hi:
                s.h_arr[i], s.h_off[i] = hi_out_array, out_slot[i][0]
        release({owner[j] for j in node.inputs} | {i}, i)
    s.ws_size, s.wh_size = ws.size, wh.size
    return s


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
