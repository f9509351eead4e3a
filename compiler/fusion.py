"""Loop fusion of order-0 elementwise chains: one generated loop per chain.

Run as one kernel per equation, a chain of same-size elementwise equations
makes one pass over memory per equation; Adam's update is fourteen of them per
parameter, half of them a broadcast scalar times a vector.  Fused, the chain
reads its operands once, keeps intermediate values in registers and writes only
the values read after it.  Measured on microgpt's real step (length 8): Adam's
equations take 18.7 us per step as separate kernels and 9.7 us as fused loops
(most of what remains is three divisions and a square root per element), and
the step makes 148 kernel calls instead of 323.

Only values without higher orders are fused (every value in real mode, the
inactive ones in series mode), and the scalar expressions below are those of
the order-0 kernels, operation for operation, so fused code gives the same
bits as unfused code (``test_fused_loops_give_the_same_bits`` keeps the two in
step: a one-ulp change to either fails it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from circuitsketch.ir import Circuit, Node, Op
from compiler.layout import E0, N


def _pow(a: list[str], node: Node) -> str:
    p = float(node.attrs[0])
    if p == 0.5:
        return f"math.sqrt({a[0]})"
    if p == -0.5:
        return f"(1.0 / math.sqrt({a[0]}))"
    if p == 2.0:
        return f"({a[0]} * {a[0]})"
    return f"({a[0]} ** {p!r})"


# SCALAR[op](operand expressions, node) -> expression of one element, as in kernels.py.
SCALAR: dict[Op, Callable[[list[str], Node], str]] = {
    Op.ADD: lambda a, node: f"({a[0]} + {a[1]})",
    Op.SUB: lambda a, node: f"({a[0]} - {a[1]})",
    Op.MUL: lambda a, node: f"({a[0]} * {a[1]})",
    Op.DIV: lambda a, node: f"({a[0]} / {a[1]})",
    Op.NEG: lambda a, node: f"(-{a[0]})",
    Op.EXP: lambda a, node: f"k.vexp({a[0]})",
    Op.LOG: lambda a, node: f"math.log({a[0]})",
    Op.ERF: lambda a, node: f"math.erf({a[0]})",
    Op.POW: _pow,
}


@dataclass
class Group:
    """A run of fused equations, computed in one call where its last member stands."""

    members: list[int]
    outputs: list[int]  # members read after the group (or circuit outputs)

    @property
    def end(self) -> int:
        return self.members[-1]


@dataclass
class Fusion:
    groups: list[Group]
    group_of: dict[int, Group]
    absorbed: set[int]  # broadcasts of a scalar read only by fused members: never emitted

    def reads(self, c: Circuit, i: int) -> list[int]:
        """The nodes equation i reads.  A fused member reads a scalar broadcast's source
        (as ``fused_call`` does, absorbed or not); nothing else reads an absorbed one."""
        member = i in self.group_of
        return [
            c.nodes[j].inputs[0] if member and _scalar_broadcast(c, j) else j
            for j in c.nodes[i].inputs
        ]

    def at(self, i: int) -> int:
        """The equation index at which node i's code runs."""
        g = self.group_of.get(i)
        return g.end if g is not None else i


NO_FUSION = Fusion([], {}, set())


def _scalar_broadcast(c: Circuit, j: int) -> bool:
    node = c.nodes[j]
    return node.op is Op.BROADCAST and c.nodes[node.inputs[0]].size == 1


def uniform_const(c: Circuit, j: int) -> float | None:
    """The value of a constant whose elements are all one finite float, else None."""
    node = c.nodes[j]
    if node.op is not Op.CONST or node.dtype != "float":
        return None
    v = np.asarray(c.consts[j], dtype=np.float64).ravel()
    if v.size == 0 or not np.isfinite(v[0]) or not np.all(v == v[0]):
        return None
    return float(v[0])


def fuse(c: Circuit, has_hi: Sequence[bool]) -> Fusion:
    """Groups of same-size elementwise equations without higher orders: maximal runs,
    split into connected chains of two or more.  Sources and scalar broadcasts between
    members do not break a run; any other equation does, so nothing outside a run
    reads a member before the run ends."""
    users = c.users()
    outputs = set(c.outputs.values())

    def fusible(i: int, node: Node) -> bool:
        return (
            node.op in SCALAR
            and node.size > 1
            and not has_hi[i]
            and all(c.nodes[j].size == node.size or _scalar_broadcast(c, j) for j in node.inputs)
        )

    runs: list[list[int]] = []
    run: list[int] = []
    for i, node in c:
        if fusible(i, node):
            if run and c.nodes[run[-1]].size != node.size:
                runs.append(run)
                run = []
            run.append(i)
        elif node.op in (Op.INPUT, Op.CONST) or (_scalar_broadcast(c, i) and not has_hi[i]):
            continue
        elif run:
            runs.append(run)
            run = []
    if run:
        runs.append(run)

    groups: list[Group] = []
    group_of: dict[int, Group] = {}
    for run in runs:
        for members in _components(c, run):
            if len(members) < 2:
                continue
            inside = set(members)
            outs = [m for m in members if m in outputs or any(u not in inside for u in users[m])]
            g = Group(members, outs)
            groups.append(g)
            group_of.update({m: g for m in members})
    absorbed = {
        j
        for j, node in c
        if _scalar_broadcast(c, j)
        and not has_hi[j]
        and j not in outputs
        and users[j]
        and all(u in group_of for u in users[j])
    }
    return Fusion(groups, group_of, absorbed)


def _components(c: Circuit, run: list[int]) -> list[list[int]]:
    """The run split into chains that share no value: one loop each, so a loop's
    streams stay few enough for LLVM to vectorise it (Adam's updates of equal-size
    parameters form one run; as one loop of 28 streams it ran 1.3x slower)."""
    root = {m: m for m in run}

    def find(m: int) -> int:
        while root[m] != m:
            m = root[m]
        return m

    for m in run:
        for j in c.nodes[m].inputs:
            if j in root:
                root[find(j)] = find(m)
    parts: dict[int, list[int]] = {}
    for m in run:
        parts.setdefault(find(m), []).append(m)
    return list(parts.values())


@dataclass
class FusedCall:
    """What emit needs to call a group's generated loop: its source, the arrays it
    takes and the offsets (vectors, scalars, outputs, in that order) for the int table."""

    body: str  # the function without its name line, the key for sharing one function
    arrays: list[str]
    offsets: list[int]


def fused_call(
    c: Circuit,
    g: Group,
    fusion: Fusion,
    slot: Callable[[int], tuple[str, int]],
) -> FusedCall:
    """Source of one group's loop.  slot(j) gives the (array, offset) of node j."""
    local = {m: f"e{k}" for k, m in enumerate(g.members)}
    vec: dict[int, str] = {}
    sca: dict[int, str] = {}
    lines: list[str] = []
    for m in g.members:
        args = []
        for j, src in zip(c.nodes[m].inputs, fusion.reads(c, m), strict=True):
            if j in local:
                args.append(local[j])
            elif (v := uniform_const(c, j)) is not None:
                args.append(repr(v))
            elif src != j:  # a scalar broadcast: its source, once (what liveness assumes)
                sca.setdefault(src, f"s{len(sca)}")
                args.append(sca[src])
            else:
                vec.setdefault(j, f"v{len(vec)}")
                args.append(f"{vec[j]}[i]")
        lines.append(f"{local[m]} = {SCALAR[c.nodes[m].op](args, c.nodes[m])}")
    for k, o in enumerate(g.outputs):
        lines.append(f"o{k}[i] = {local[o]}")

    arrays: list[str] = []
    offsets: list[int] = []
    head: list[str] = []

    def operand(name: str, j: int, fmt: str) -> None:
        arr, off = slot(j)
        if arr not in arrays:
            arrays.append(arr)
        offsets.append(off)
        head.append(fmt.format(name=name, arr=arr, k=len(offsets) - 1))

    for j, name in vec.items():
        operand(name, j, "{name} = {arr}[t[{k}] :][:n]")
    for j, name in sca.items():
        operand(name, j, "{name} = {arr}[t[{k}]]")
    for k, o in enumerate(g.outputs):
        operand(f"o{k}", o, "{name} = {arr}[t[{k}] :][:n]")
    body = [
        f"n = code[r, {N}]",
        f"t = tab[code[r, {E0}] :]",
        *head,
        "for i in range(n):",
        *("    " + line for line in lines),
    ]
    return FusedCall("\n".join(body), arrays, offsets)


def define(name: str, call: FusedCall, deco: str) -> str:
    """The module-level definition of a fused loop."""
    text = "\n".join("    " + line for line in call.body.splitlines())
    return f"{deco}\ndef {name}({', '.join(call.arrays)}, code, r, tab):\n{text}\n\n"


def describe(c: Circuit, g: Group) -> list[str]:
    """Comment lines naming the fused equations, for the generated source."""
    return [f"# {c.format_node(m)}" for m in g.members]
