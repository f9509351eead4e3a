"""Reverse mode as an IR-to-IR transformation, driven by one table of VJP rules.

``VJP[op](g, node, ins, out)`` returns the cotangent of each input (or None)
as traced expressions, so the backward pass is recorded as ordinary nodes of
the same circuit: a training step circuit holds forward, backward and update.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from circuitsketch import tracing as T
from circuitsketch.ir import Circuit, IRError, Node, Op, rebuild, replay
from circuitsketch.tracing import Traced

VjpRule = Callable[[Traced, Node, list[Traced], Traced], list[Traced | None]]


def _sum_to(g: Traced, shape: tuple[int, ...]) -> Traced:
    """Transpose of broadcasting g's shape down to `shape`."""
    lead = g.ndim - len(shape)
    axes = list(range(lead)) + [
        lead + i for i, s in enumerate(shape) if s == 1 and g.shape[lead + i] != 1
    ]
    out = T.reduce_sum(g, axes) if axes else g
    return out.reshape(shape)


def _vjp_matmul(g, node, ins, out):
    a, b = ins
    if a.ndim == 2:
        return [T.matmul(g, b.T), T.matmul(a.T, g)]
    return [T.matmul(g, b.transpose(0, 2, 1)), T.matmul(a.transpose(0, 2, 1), g)]


def _vjp_sum(g, node, ins, out):
    (x,) = ins
    ax = node.attrs[0]
    return [T.broadcast_to(g.reshape((*x.shape[:ax], 1, *x.shape[ax + 1 :])), x.shape)]


def _vjp_concat(g, node, ins, out):
    ax, start, grads = node.attrs[0], 0, []
    for x in ins:
        starts = [0] * g.ndim
        stops = list(g.shape)
        starts[ax], stops[ax] = start, start + x.shape[ax]
        grads.append(g._new(Op.SLICE, [g], (tuple(starts), tuple(stops))))
        start += x.shape[ax]
    return grads


def _vjp_slice(g, node, ins, out):
    (x,) = ins
    starts, stops = node.attrs
    after = tuple(n - b for n, b in zip(x.shape, stops, strict=True))
    return [T.pad(g, starts, after)]


def _vjp_pad(g, node, ins, out):
    (x,) = ins
    before, _ = node.attrs
    stops = tuple(b + n for b, n in zip(before, x.shape, strict=True))
    return [g._new(Op.SLICE, [g], (tuple(before), stops))]


def _vjp_transpose(g, node, ins, out):
    perm = node.attrs[0]
    inverse = tuple(sorted(range(len(perm)), key=lambda i: perm[i]))
    return [g.transpose(inverse)]


def _zeros_like(g: Traced) -> Traced:
    return T.broadcast_to(T.lift(g.circuit, 0.0), g.shape)


VJP: dict[Op, VjpRule] = {
    Op.ADD: lambda g, n, ins, out: [g, g],
    Op.SUB: lambda g, n, ins, out: [g, -g],
    Op.NEG: lambda g, n, ins, out: [-g],
    Op.MUL: lambda g, n, ins, out: [g * ins[1], g * ins[0]],
    Op.DIV: lambda g, n, ins, out: [g / ins[1], -(g * out) / ins[1]],
    Op.EXP: lambda g, n, ins, out: [g * out],
    Op.LOG: lambda g, n, ins, out: [g / ins[0]],
    Op.POW: lambda g, n, ins, out: [g * (n.attrs[0] * T.power(ins[0], n.attrs[0] - 1.0))],
    Op.ERF: lambda g, n, ins, out: [g * ((2.0 / math.sqrt(math.pi)) * T.exp(-(ins[0] * ins[0])))],
    Op.SUM: _vjp_sum,
    Op.MATMUL: _vjp_matmul,
    Op.GATHER: lambda g, n, ins, out: [T.scatter_add(g, ins[1], ins[0].shape[0]), None],
    Op.SCATTER_ADD: lambda g, n, ins, out: [T.gather(g, ins[1]), None],
    Op.RESHAPE: lambda g, n, ins, out: [g.reshape(ins[0].shape)],
    Op.TRANSPOSE: _vjp_transpose,
    Op.SLICE: _vjp_slice,
    Op.PAD: _vjp_pad,
    Op.CONCAT: _vjp_concat,
    Op.BROADCAST: lambda g, n, ins, out: [_sum_to(g, ins[0].shape)],
    Op.WHERE: lambda g, n, ins, out: [
        None,
        T.where(ins[0], g, _zeros_like(g)),
        T.where(ins[0], _zeros_like(g), g),
    ],
}

# Ops whose outputs carry no gradient at all.
NO_GRADIENT = frozenset({Op.INPUT, Op.CONST, Op.SHIFT_MAX, Op.ONE_HOT})


def _rule(op: Op) -> VjpRule:
    rule = VJP.get(op)
    if rule is None:
        raise IRError(f"no gradient rule for op {op.value!r}")
    return rule


def vjp(c: Circuit, out_id: int, wrt: Sequence[int], seed: Traced | None = None) -> list[Traced]:
    """Cotangents of `wrt` nodes for d(out)/d(wrt) (seed: the output cotangent, default 1).

    Records the backward pass into the same circuit, one reverse loop over the
    equations that lie on a path from `wrt` to `out_id`.
    """
    nodes = c.nodes
    wanted = set(wrt)
    on_path = [False] * (out_id + 1)
    for i in range(out_id + 1):
        on_path[i] = i in wanted or (
            nodes[i].op not in NO_GRADIENT and any(on_path[j] for j in nodes[i].inputs)
        )
    out = Traced(c, out_id)
    cot: dict[int, Traced] = {
        out_id: seed if seed is not None else T.broadcast_to(T.lift(c, 1.0), out.shape)
    }
    for i in range(out_id, -1, -1):
        g = cot.get(i)
        node = nodes[i]
        if g is None or not on_path[i] or node.op in NO_GRADIENT:
            continue
        ins = [Traced(c, j) for j in node.inputs]
        with c.scope("grad"):
            grads = _rule(node.op)(g, node, ins, Traced(c, i))
            for j, gj in zip(node.inputs, grads, strict=True):
                if gj is None or not on_path[j] or nodes[j].dtype != "float":
                    continue
                cot[j] = gj if j not in cot else cot[j] + gj
    return [cot.get(w) if w in cot else _zeros_like(Traced(c, w)) for w in wrt]


def grad(c: Circuit, output: str, wrt: Sequence[str], prefix: str = "grad_") -> Circuit:
    """A new circuit with the outputs of c plus d(output)/d(input) for each input in wrt."""
    if output not in c.outputs:
        raise IRError(f"grad: no output named {output!r}")
    if c.nodes[c.outputs[output]].shape != ():
        raise IRError(f"grad: output {output!r} must be a scalar")
    out = rebuild(c)
    missing = [w for w in wrt if w not in out.inputs]
    if missing:
        raise IRError(f"grad: no input named {missing[0]!r}")
    grads = vjp(out, out.outputs[output], [out.inputs[w] for w in wrt])
    for name, g in zip(wrt, grads, strict=True):
        out.set_output(prefix + name, g.id)
    out.verify()
    return out


def gradients(out: Traced, wrt: Sequence[Traced]) -> list[Traced]:
    """d(out)/d(x) for each traced x, recorded into the circuit being traced."""
    if out.shape != ():
        raise IRError(f"gradients: the output must be a scalar, got shape {out.shape}")
    return vjp(out.circuit, out.id, [x.id for x in wrt])


def reverse_step(c: Circuit, state: Sequence[str], weight: str, prefix: str = "fwd.") -> Circuit:
    """The transpose of a training step, for reverse mode through a whole run.

    Inputs: the forward state of the step as ``<prefix><name>``, the step's
    other inputs unchanged, and the cotangent of each new state entry under
    the entry's own name.  Outputs: the cotangent of each old state entry
    (under its own name, so the reverse run is again a loop over a state) and
    ``loss`` = the cotangent of the data weight, i.e. this step's share of
    dF/dw[doc].
    """
    missing = [n for n in (*state, weight) if n not in c.inputs]
    if missing:
        raise IRError(f"reverse_step: the step circuit has no input {missing[0]!r}")
    def rename(out: Circuit, i: int, node: Node, ins: list[int]) -> int | None:
        if node.op is Op.INPUT and node.attrs[0] in state:
            return out.add_input(prefix + node.attrs[0], node.shape, node.dtype)
        return None

    out = Circuit()
    remap = replay(c, out, rewrite=rename)
    out._scope_stack[:] = ["reverse"]
    total = None
    for name in state:
        ct = Traced(out, out.add_input(name, c.nodes[c.outputs[name]].shape))
        term = T.reduce_sum(ct * Traced(out, remap[c.outputs[name]]))
        total = term if total is None else total + term
    wrt = [remap[c.inputs[n]] for n in (*state, weight)]
    grads = vjp(out, total.id, wrt)
    out._scope_stack.clear()
    for name, g in zip(state, grads, strict=False):
        out.set_output(name, g.id)
    out.set_output("loss", grads[-1].id)
    out.verify()
    return out
