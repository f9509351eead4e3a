"""Workspace slot reuse (``emit.assign_slots``): no value is overwritten while it is live.

Checked on microgpt's step circuit (real and series slots) and on a small
program; the checker itself is shown to catch a shared slot.
"""

from __future__ import annotations

import numpy as np
import pytest

from circuitsketch.models import microgpt as m
from circuitsketch.program import WEIGHT
from compiler.emit import Interface, Tables, assign_slots, last_uses
from compiler.passes import activity, simplify
from tests.conftest import DOCS


def overlaps(c, slots, out_slot=()) -> list[str]:
    """Pairs of workspace values that share memory while both are live.

    Value i lives from its equation to the last equation reading it (an equation's
    output may not share memory with its own operands either).
    """
    owner, last = last_uses(c, dict.fromkeys(out_slot, (0, 0)))
    found = []
    for arr_of, off_of in ((slots.r_arr, slots.r_off), (slots.h_arr, slots.h_off)):
        live = []  # (first, last, start, end, node) of workspace values
        for i, node in c:
            if owner[i] != i or arr_of[i] not in ("ws", "wh"):
                continue
            live.append((i, last[i], off_of[i], off_of[i] + node.size, i))
        for a, (f1, l1, s1, e1, n1) in enumerate(live):
            for f2, l2, s2, e2, n2 in live[a + 1 :]:
                if f2 <= l1 and f1 <= l2 and s1 < e2 and s2 < e1:
                    found.append(f"%{n1} and %{n2} share {arr_of[n1]}[{max(s1, s2)}]")
    return found


@pytest.fixture(scope="module")
def step():
    prog = m.build(DOCS[:8])
    c = simplify(prog.step_circuits[8])
    state = {n: (0, 0) for n in prog.init_state}
    off = 0
    for n, v in prog.init_state.items():
        state[n] = (off, int(np.asarray(v).size))
        off += state[n][1]
    ints, floats = {}, {}
    ioff = foff = 0
    for nm in c.inputs:
        if nm in state or nm == WEIGHT:
            continue
        node = c.nodes[c.inputs[nm]]
        if node.dtype == "float":
            floats[nm] = (foff, node.size)
            foff += node.size
        else:
            ints[nm] = (ioff, node.size)
            ioff += node.size
    act = activity(c, [n for n in c.inputs if n in state or n == WEIGHT])
    return c, act, Interface(state, ints, floats, WEIGHT)


@pytest.mark.parametrize("series", [False, True], ids=["real", "series"])
def test_step_slots_never_overwrite_a_live_value(step, series):
    c, act, iface = step
    slots = assign_slots(c, act, iface, Tables(), series, {})
    assert overlaps(c, slots) == []
    # reuse happened: the workspace is far smaller than one slot per value
    total = sum(node.size for i, node in c if slots.r_arr[i] == "ws")
    assert slots.ws_size < total / 3, (slots.ws_size, total)
    if series:
        assert 0 < slots.wh_size < sum(n.size for i, n in c if slots.h_arr[i] == "wh") / 3


def test_overlap_check_catches_a_shared_slot(step):
    c, act, iface = step
    slots = assign_slots(c, act, iface, Tables(), False, {})
    ws_nodes = [i for i, _ in c if slots.r_arr[i] == "ws"]
    # put a value computed early onto the slot of the next one while it is still read later
    owner, last = last_uses(c, {})
    i = next(i for i in ws_nodes if last[i] > i + 1 and owner[i] == i)
    j = next(j for j in ws_nodes if i < j < last[i] and owner[j] == j)
    slots.r_off[j] = slots.r_off[i]
    assert overlaps(c, slots), "the checker missed two live values on one slot"
