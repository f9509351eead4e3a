"""Training updates its state in place when every write follows the reads it clobbers.

Two state buffers used in turn make a step read one and write the other: at
4 x 128 that is 2 x 19 MB of parameters and Adam moments, which with the
workspace no longer fits the 32 MB last-level cache, so every step reads its
state from memory.  Written in place, the state and workspace fit, and the step
is faster by more than Adam's own time (bench/RESULTS.md, "Run 7: the real step
in place").  Series training keeps B x K complex coefficients per state entry,
0.87 GB at 4 x 128 for 8 directions at K = 3: written in place, a run holds one
such buffer instead of two (order 0 keeps two: a fused group's hi loop reads its
operands' order 0 after its first loop has stored the new values).

In place is sound when each state entry X is written after the last equation
that reads the X the step was given (in series mode, its higher orders).  The
equation that writes X may itself read X only element by element at the place it
writes (a fused loop, whose element i reads its operands before it stores,
through the same view: see ``fusion.fused_call``; in series mode its hi loop,
which reads all orders of element i before it stores them; in real mode also an
add, sub or mul kernel, such as the metagradient's reverse step adding a product to
the cotangent it was given for each weight).  A step whose order
breaks this runs with two buffers (``state_in_place``), as before; either way the
arithmetic and its order are the same, so are the results, to the bit.
"""

from __future__ import annotations

from collections.abc import Collection

from circuitsketch.ir import Circuit, Op
from compiler.fusion import Fusion
from compiler.slots import Interface, last_uses, state_out_slots

__all__ = ["state_in_place"]

# real-mode kernels that read element i of each operand, then write element i
# (``compiler/kernels.py``: add, sub, mul), so they may write over an operand
_SAME_PLACE = (Op.ADD, Op.SUB, Op.MUL)


def state_in_place(c: Circuit, iface: Interface, fusion: Fusion, views: Collection[int] = (),
                   series: bool = False) -> bool:  # fmt: skip
    """Whether step circuit c can write its state outputs over its state inputs (`views`:
    the transposes its products read where their operands lie, ``lower.transposed_views``,
    so that a weight read through one is read where the product runs).  `series`: the
    higher orders are what is written in place, so a writer that reads its own entry
    must be a loop over the higher orders too (a series group)."""
    out_slot = state_out_slots(c, iface)
    owner, last = last_uses(c, out_slot, fusion, views)
    read_at: dict[str, int] = {}  # state name -> its input's last reader (len(c): the end)
    input_of: dict[int, str] = {}
    for i, node in c:
        if node.op is Op.INPUT and node.attrs[0] in iface.state:
            input_of[i] = node.attrs[0]
            read_at[node.attrs[0]] = max(read_at.get(node.attrs[0], -1), last[i])
    for oname, nid in c.outputs.items():
        if oname not in iface.state:
            continue
        if nid not in out_slot:  # copied at the end, after every equation
            source = input_of.get(owner[nid])
            if source is not None and source != oname:
                return False  # another entry's old value, which may be replaced before
            if source is None and read_at.get(oname, -1) >= len(c.nodes):
                return False  # this entry's old value is copied elsewhere at the end too
            continue  # its own old value (nothing to copy), or a value computed in ws
        wrote = fusion.at(nid)
        read = read_at.get(oname, -1)
        if read > wrote:
            return False
        if read == wrote and not _elementwise_reads(c, fusion, nid, oname, input_of, owner,
                                                    series):  # fmt: skip
            return False
    return True


def _elementwise_reads(
    c: Circuit, fusion: Fusion, nid: int, name: str, input_of: dict[int, str], owner: list[int],
    series: bool = False,
) -> bool:
    """The group writing state output `name` (node nid) reads that entry's input only as
    whole vectors of its own size (element i at element i) or as a scalar."""
    group = fusion.group_of.get(nid)
    if group is None:  # a kernel writing what it reads: element i after reading element i?
        node = c.nodes[nid]
        return (not series and node.op in _SAME_PLACE
                and all(c.nodes[j].size == node.size for j in node.inputs
                        if input_of.get(owner[j]) == name))  # fmt: skip
    if series and not group.series:
        return False
    for m in group.members:
        for j in fusion.reads(c, m):
            if input_of.get(owner[j]) == name and c.nodes[j].size not in (1, c.nodes[nid].size):
                return False
    return True
