"""Workspace slot reuse (``slots.assign_slots``): no value is overwritten while it is live.

The check is independent of the allocator's own liveness analysis: it replays
every microgpt step and output circuit (real and series slots) on a tagged
memory, where each equation stamps its output cells with its node id and every
read (operands, a reshape's source, the outputs copied at the end) must find
the stamp of the value it wants.  The checker is shown to catch a slot given
back too early.  A fused group (``compiler/fusion.py``) is one equation where
its last member stands: it reads its members' outside operands and writes the
members read after it (and, in series mode, the order-0 values of members
that its loop over higher orders reads).
"""

from __future__ import annotations

import numpy as np
import pytest

from circuitsketch.ir import Op
from circuitsketch.models import microgpt as m
from circuitsketch.program import WEIGHT
from compiler import slots
from compiler.compiled import _data_layout
from compiler.fusion import NO_FUSION, fuse
from compiler.passes import activity, simplify
from compiler.slots import Interface, assign_slots, is_alias, state_out_slots
from compiler.tables import Tables
from tests.conftest import DOCS


def clobbered(
    c, iface, series: bool, state_outputs: bool, fused: bool = True, in_place: bool = False
) -> tuple[list[str], object]:
    """Reads that do not find their value, and writes over an equation's own operands.
    in_place: the state outputs are written over the state inputs (``compiler/in_place``;
    in series mode their higher orders, h_in), which are then tagged too; a fused loop
    or a real add, sub or mul kernel may write exactly where it reads (element by
    element), nothing else may."""
    out_slot = state_out_slots(c, iface) if state_outputs else {}
    act = activity_of(c, iface)
    # series groups unrolled at K = 3: their hi loops read and write hi slots too
    fusion = fuse(c, [series and h for h in act.hi], 3 if series else 0) if fused else NO_FUSION
    over = "h_in" if series else "s_in"  # the array written in place
    s = assign_slots(c, act, iface, Tables(), series, out_slot, fusion,
                     "s_in" if in_place and not series else "s_out", (),
                     "h_in" if in_place and series else "h_out")  # fmt: skip
    mem = {"ws": np.full(s.ws_size, -1), "wh": np.full(s.wh_size, -1)}
    if in_place:
        mem[over] = np.full(sum(n for _, n in iface.state.values()), -1)
        for i, node in c:
            if node.op is Op.INPUT and node.attrs[0] in iface.state:
                off, n = iface.state[node.attrs[0]]
                mem[over][off : off + n] = i
    source = list(range(len(c.nodes)))  # whose value a node's slot holds (reshape: its operand's)
    errors = []

    def places(i):
        yield s.r_arr[i], s.r_off[i]
        if s.h_arr[i]:
            yield s.h_arr[i], s.h_off[i]

    for i, node in c:
        group = fusion.group_of.get(i)
        if i in fusion.absorbed or (group is not None and i != group.end):
            continue
        if group is None:
            operands, written = node.inputs, [i]
        else:
            inside = set(group.members)
            operands = [j for m in group.members for j in fusion.reads(c, m) if j not in inside]
            written = group.outputs + group.needs0  # needs0: order 0 kept for the hi loop
        reads = [(a, o, c.nodes[j].size, source[j]) for j in operands for a, o in places(j)]
        for a, o, n, want in reads:
            if a in mem and (mem[a][o : o + n] != want).any():
                errors.append(f"%{i} reads %{want} from {a}[{o}], overwritten")
        if is_alias(node.op) and i not in out_slot:
            source[i] = source[node.inputs[0]]
            continue
        if node.op in (Op.INPUT, Op.CONST) and not (
            node.op is Op.INPUT and node.attrs[0] == iface.weight
        ):
            continue
        for w in written:
            for a, o in places(w):
                if a not in mem:
                    continue
                n = c.nodes[w].size
                for ra, ro, rn, want in reads:
                    same_place = group is not None or (
                        not series and node.op in (Op.ADD, Op.SUB, Op.MUL))
                    elementwise = a == over and same_place and (ro, rn) == (o, n)
                    if ra == a and ro < o + n and o < ro + rn and not elementwise:
                        errors.append(f"%{w} writes over its operand %{want} in {a}")
                mem[a][o : o + n] = w
    for name, nid in c.outputs.items():
        for a, o in places(nid):
            if a in mem and (mem[a][o : o + c.nodes[nid].size] != source[nid]).any():
                errors.append(f"output {name} (%{nid}) overwritten before the end")
    return errors, s


def activity_of(c, iface):
    return activity(c, [n for n in c.inputs if n in iface.state or n == iface.weight])


def circuits():
    prog = m.build(DOCS)
    state, off = {}, 0
    for n, v in prog.init_state.items():
        state[n] = (off, int(np.asarray(v).size))
        off += state[n][1]
    for key, c in prog.step_circuits.items():
        c = simplify(c)
        ints, floats = _data_layout(c, set(state) | {WEIGHT})
        yield f"step{key}", c, Interface(state, ints, floats, WEIGHT), True
    for key, c in prog.output_circuits.items():
        c = simplify(c)
        ints, floats = _data_layout(c, set(state))
        yield f"output{key}", c, Interface(state, ints, floats, None), False


CIRCUITS = list(circuits())
CASES = [pytest.param(c, iface, outs, id=name) for name, c, iface, outs in CIRCUITS]


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "unfused"])
@pytest.mark.parametrize("series", [False, True], ids=["real", "series"])
@pytest.mark.parametrize(("c", "iface", "state_outputs"), CASES)
def test_slots_never_overwrite_a_live_value(c, iface, state_outputs, series, fused):
    errors, s = clobbered(c, iface, series, state_outputs, fused)
    assert errors == [], errors[:3]
    if state_outputs:  # reuse happened: far less workspace than one slot per value
        total = sum(
            node.size
            for _, node in c
            if node.op not in (Op.INPUT, Op.CONST) and not is_alias(node.op)
        )
        assert s.ws_size < total / 3, (s.ws_size, total)


def test_check_catches_a_slot_given_back_too_early(monkeypatch):
    """An allocator that frees every value one equation before its last reader is caught."""
    _name, c, iface, state_outputs = CIRCUITS[0]
    assert clobbered(c, iface, False, state_outputs)[0] == []
    true_last_uses = slots.last_uses

    def early(c_, out_slot, fusion=NO_FUSION, views=()):
        owner, last = true_last_uses(c_, out_slot, fusion, views)
        return owner, [max(i, v - 1) if v < len(c_.nodes) else v for i, v in enumerate(last)]

    monkeypatch.setattr(slots, "last_uses", early)
    assert clobbered(c, iface, False, state_outputs)[0], "freeing one equation early went unnoticed"


@pytest.mark.parametrize("series", [False, True], ids=["real", "series"])
def test_a_value_of_a_cache_line_or_more_starts_on_one(series):
    """A workspace value of ALIGN entries or more starts at a multiple of ALIGN (ws, and wh
    in units of B*K), and a workspace on a 64-byte boundary: a product's vector loads then
    never straddle two lines."""
    for _name, c, iface, state_outputs in CIRCUITS:
        errors, s = clobbered(c, iface, series, state_outputs)
        assert errors == []
        for i, node in c:
            for arr, off in ((s.r_arr[i], s.r_off[i]), (s.h_arr[i], s.h_off[i])):
                if arr in ("ws", "wh") and node.size >= slots.ALIGN:
                    assert off % slots.ALIGN == 0, (_name, i, arr, off, node.size)
    for n in range(1, 40):  # numpy's own arrays start 16 bytes apart: some of these would not
        for dtype in (np.float64, np.complex128):
            a = slots.workspace(n, dtype)
            assert a.ctypes.data % 64 == 0 and a.shape == (n,) and a.dtype == dtype
