"""Reverse mode as an IR-to-IR transformation, driven by the registry's VJP rules.

``OPS[op].vjp(g, node, ins, out)`` returns the cotangent of each input (or None)
as traced expressions, so the backward pass is recorded as ordinary nodes of
the same circuit: a training step circuit holds forward, backward and update.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from circuitsketch import tracing as T
from circuitsketch.ir import Circuit, Family, IRError, Node, Op, opdef, rebuild, replay
from circuitsketch.ops.rules import zeros_like
from circuitsketch.tracing import Traced

VjpRule = Callable[[Traced, Node, list[Traced], Traced], list[Traced | None]]


def _rule(op: Op) -> VjpRule:
    rule = opdef(op).vjp
    if rule is None:
        raise IRError(f"no gradient rule for op {op.value!r}")
    return rule


NO_GRADIENT_FAMILIES = (Family.SOURCE, Family.ORDER0, Family.INDEX)


def has_gradient(op: Op) -> bool:
    """Whether an op's result carries a gradient: sources, order-0 ops (comparisons, the
    softmax shift) and index ops carry none; every other op must have a VJP rule."""
    return opdef(op).family not in NO_GRADIENT_FAMILIES


def vjp(c: Circuit, out_id: int, wrt: Sequence[int], seed: Traced | None = None) -> list[Traced]:
    """Cotangents of `wrt` nodes for d(out)/d(wrt) (seed: the output cotangent, default 1).

    Records the backward pass into the same circuit, one reverse loop over the
    equations that lie on a path from `wrt` to `out_id`.
    """
    one = seed if seed is not None else T.broadcast_to(T.lift(c, 1.0), c.nodes[out_id].shape)
    return transpose(c, [(out_id, one)], wrt)


def transpose(c: Circuit, seeds: Sequence[tuple[int, Traced]], wrt: Sequence[int]) -> list[Traced]:
    """Cotangents of `wrt` nodes given the cotangent of several nodes (`seeds`: node, cotangent;
    a node seeded twice gets the sum, the later seed first)."""
    nodes = c.nodes
    last = max(n for n, _ in seeds)
    wanted = set(wrt)
    on_path = [False] * (last + 1)
    for i in range(last + 1):
        on_path[i] = i in wanted or (
            has_gradient(nodes[i].op) and any(on_path[j] for j in nodes[i].inputs)
        )
    cot: dict[int, Traced] = {}
    for n, ct in reversed(seeds):
        cot[n] = ct if n not in cot else cot[n] + ct
    for i in range(last, -1, -1):
        g = cot.get(i)
        node = nodes[i]
        if g is None or not on_path[i] or not has_gradient(node.op):
            continue
        ins = [Traced(c, j) for j in node.inputs]
        with c.scope("grad"):
            grads = _rule(node.op)(g, node, ins, Traced(c, i))
            for j, gj in zip(node.inputs, grads, strict=True):
                if gj is None or not on_path[j] or nodes[j].dtype != "float":
                    continue
                cot[j] = gj if j not in cot else cot[j] + gj
    return [cot.get(w) if w in cot else zeros_like(Traced(c, w)) for w in wrt]


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
    seeds = [(remap[c.outputs[n]], Traced(out, out.add_input(n, c.nodes[c.outputs[n]].shape)))
             for n in state]  # fmt: skip
    grads = transpose(out, seeds, [remap[c.inputs[n]] for n in (*state, weight)])
    out._scope_stack.clear()
    for name, g in zip(state, grads, strict=False):
        out.set_output(name, g.id)
    out.set_output("loss", grads[-1].id)
    out.verify()
    return out
