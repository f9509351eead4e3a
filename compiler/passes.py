"""Passes over the circuit IR: each a small function Circuit -> Circuit (or -> facts).

- ``dce``: drop equations no output depends on (inputs stay: they are the interface).
- ``cse``: merge equal equations (re-interning every node does it).
- ``fold_constants``: evaluate equations whose operands are all constants.
- ``lower_concat``: concat -> pad + add, so the code generator needs no concat.
- ``merge_transposes``: a transpose of a transpose is one transpose (or none):
  the backward pass transposes the forward pass's transposed weights back; and
  (a^T b)^T = b^T a, so a weight gradient comes out in the weight's layout
  without transposing twice (and (p + q)^T of two such products, p^T + q^T); in
  rounds, until one moves nothing.
- ``transpose_narrow_operands``: x W^T with x a few rows and W a large matrix
  (a linear layer's weight) is computed as (W x^T)^T: each step transposes the
  few rows and the product instead of the whole weight matrix.
- ``scalar_reciprocals``: x / s for a run-time scalar s broadcast (Adam's bias
  corrections) becomes x * (1 / s): one division per step instead of one per
  element.
- ``shared_reciprocals``: a value that divides several others is inverted once and
  multiplied by (only where asked: the metagradient's reverse steps).
- ``activity``: which nodes are series (depend on a series input) and which of
  those need their higher-order coefficients at all.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from circuitsketch.ir import Circuit, Family, Node, Op, family, opdef, rebuild


def dce(c: Circuit) -> Circuit:
    live = [False] * len(c.nodes)
    for nid in c.outputs.values():
        live[nid] = True
    for i in range(len(c.nodes) - 1, -1, -1):
        if live[i]:
            for j in c.nodes[i].inputs:
                live[j] = True
    return rebuild(c, keep=lambda i, node: live[i] or node.op is Op.INPUT)


def cse(c: Circuit) -> Circuit:
    return rebuild(c)


def fold_constants(c: Circuit) -> Circuit:
    """Replace every equation whose operands are all constants by its value."""

    def fold(out: Circuit, i: int, node: Node, ins: list[int]) -> int | None:
        if node.op in (Op.INPUT, Op.CONST) or not all(out.nodes[j].op is Op.CONST for j in ins):
            return None
        return out.add_const(np.asarray(opdef(node.op).eval([out.consts[j] for j in ins], node)))

    return rebuild(c, rewrite=fold)


def lower_concat(c: Circuit) -> Circuit:
    """concat -> a sum of zero-padded operands."""

    def lower(out: Circuit, i: int, node: Node, ins: list[int]) -> int | None:
        if node.op is not Op.CONCAT:
            return None
        ax, start, total = node.attrs[0], 0, None
        for j in ins:
            shape = out.nodes[j].shape
            before = tuple(start if a == ax else 0 for a in range(len(shape)))
            after = tuple(
                node.shape[ax] - start - shape[ax] if a == ax else 0 for a in range(len(shape))
            )
            padded = out.add(Op.PAD, [j], (before, after))
            total = padded if total is None else out.add(Op.ADD, [total, padded])
            start += shape[ax]
        return total

    return rebuild(c, rewrite=lower)


def _swaps_last_two(perm: tuple[int, ...]) -> bool:
    n = len(perm)
    return n >= 2 and perm == (*range(n - 2), n - 1, n - 2)


def _transposed(out: Circuit, j: int, perm: tuple[int, ...]) -> int:
    """Node j of `out` transposed by perm, a transpose of a transpose merged into one."""
    inner = out.nodes[j]
    if inner.op is Op.TRANSPOSE:
        p = inner.attrs[0]
        both = tuple(p[a] for a in perm)
        if both == tuple(range(len(both))):
            return inner.inputs[0]
        return out.add(Op.TRANSPOSE, [inner.inputs[0]], (both,))
    return out.add(Op.TRANSPOSE, [j], (perm,))


ROUNDS = 8  # of merge_transposes; every circuit seen is done after two


def merge_transposes(c: Circuit) -> Circuit:
    """Rounds of ``_merge_round`` (each then dce) until one finds nothing to rewrite, at most
    ROUNDS (each keeps the values, so stopping early is only less tidy): a product flipped
    in a round leaves new transposes on its operands, which that round does not visit (a
    metagradient's reverse step: transposes of sums of products)."""
    for _ in range(ROUNDS):
        merged = _merge_round(c)
        if merged is c:
            break
        c = dce(merged)
    return c


def _merge_round(c: Circuit) -> Circuit:
    """c itself if it has nothing to rewrite, else: transpose(transpose(x, p), q) ->
    transpose(x, p o q), or x when that is the identity; transpose(matmul(a, b)) ->
    matmul(transpose(b), transpose(a)) when no other value reads the product and either
    a is a transpose read only by such products (it is dropped) or the operands' new
    transposes move fewer elements than the product's (an operand that is itself a
    transpose costs none): the reverse steps of a metagradient transpose a weight's
    product-shaped cotangent X^T dY where X and dY are a few rows.  And transpose(p + q)
    of two such products read only by their sum -> p' + q', each flipped.  The same
    products: at order 0 the compiled kernels sum them in the same order (the same bits);
    higher orders add the same terms in another order (found by review: 1.6e-16 apart)."""
    users = c.users()

    def flippable(m: int) -> bool:  # matmul m is read once, by a transpose of its last two axes
        return (
            c.nodes[m].op is Op.MATMUL
            and len(users[m]) == 1
            and c.nodes[users[m][0]].op is Op.TRANSPOSE
            and _swaps_last_two(c.nodes[users[m][0]].attrs[0])
        )

    def drops_left(m: int) -> bool:  # a^T of (a^T b)^T is read only by such products
        t = c.nodes[m].inputs[0]
        return c.nodes[t].op is Op.TRANSPOSE and all(
            flippable(u) and c.nodes[u].inputs[0] == t != c.nodes[u].inputs[1] for u in users[t]
        )

    def cheaper(m: int) -> bool:  # the operands' new transposes move less than the product's
        node = c.nodes[m]
        if any(len(c.nodes[x].shape) != len(node.shape) for x in node.inputs):
            return False
        moved = sum(
            0 if c.nodes[x].op is Op.TRANSPOSE and _swaps_last_two(c.nodes[x].attrs[0])
            else c.nodes[x].size
            for x in node.inputs
        )  # fmt: skip
        return moved < node.size

    flip = {m for m in range(len(c.nodes)) if flippable(m) and (drops_left(m) or cheaper(m))}

    def summed(s: int) -> bool:  # s = p + q of products read only by it, read by a transpose
        node = c.nodes[s]
        return (
            node.op is Op.ADD
            and len(users[s]) == 1
            and c.nodes[users[s][0]].op is Op.TRANSPOSE
            and _swaps_last_two(c.nodes[users[s][0]].attrs[0])
            and len(set(node.inputs)) == 2
            and all(c.nodes[m].op is Op.MATMUL and c.nodes[m].shape == node.shape
                    and users[m] == [s] and cheaper(m) for m in node.inputs)
        )  # fmt: skip

    sums = {s for s in range(len(c.nodes)) if summed(s)}
    if not flip and not sums and not any(
            n.op is Op.TRANSPOSE and c.nodes[n.inputs[0]].op is Op.TRANSPOSE for n in c.nodes):
        return c  # nothing to rewrite  # fmt: skip

    def flipped(out: Circuit, m: int, perm: tuple[int, ...]) -> int:
        a, b = out.nodes[m].inputs
        return out.add(Op.MATMUL, [_transposed(out, b, perm), _transposed(out, a, perm)])

    def merge(out: Circuit, i: int, node: Node, ins: list[int]) -> int | None:
        if node.op is not Op.TRANSPOSE:
            return None
        perm = node.attrs[0]
        if node.inputs[0] in flip:
            return flipped(out, ins[0], perm)
        if node.inputs[0] in sums:
            p, q = out.nodes[ins[0]].inputs
            return out.add(Op.ADD, [flipped(out, p, perm), flipped(out, q, perm)])
        return _transposed(out, ins[0], perm) if out.nodes[ins[0]].op is Op.TRANSPOSE else None

    return rebuild(c, rewrite=merge)  # leaves the replaced transposes for dce


def transpose_narrow_operands(c: Circuit) -> Circuit:
    """a @ transpose(b) -> transpose(b @ transpose(a)) for matrices where a and the product
    together are less than half of b: a linear layer's few rows of activations against its
    weight matrix, whose transpose would otherwise be copied every step (at 4 layers x 128
    wide, 46% of a real step; bench/RESULTS.md).  Only where every reader of transpose(b)
    is such a product, so that it is dropped.  The same products: at order 0 the kernels
    sum them in the same order (the same bits); higher orders add the same terms in
    another order."""
    users = c.users()

    def narrow(m: int) -> bool:  # product m reads a transpose as its right operand, worth it
        node = c.nodes[m]
        if node.op is not Op.MATMUL or len(node.shape) != 2:
            return False
        a, t = node.inputs
        return (
            a != t
            and c.nodes[t].op is Op.TRANSPOSE
            and 2 * (c.nodes[a].size + node.size) < c.nodes[t].size
        )

    flip = {
        t
        for t, node in c
        if node.op is Op.TRANSPOSE
        and users[t]
        and all(narrow(u) and c.nodes[u].inputs[1] == t for u in users[t])
    }

    def rewrite(out: Circuit, i: int, node: Node, ins: list[int]) -> int | None:
        if node.op is not Op.MATMUL or node.inputs[1] not in flip:
            return None
        weight = out.nodes[ins[1]].inputs[0]
        product = out.add(Op.MATMUL, [weight, _transposed(out, ins[0], (1, 0))])
        return out.add(Op.TRANSPOSE, [product], ((1, 0),))

    return rebuild(c, rewrite=rewrite)  # leaves the weights' transposes for dce


def scalar_reciprocals(c: Circuit) -> Circuit:
    """x / broadcast(s) -> x * broadcast(1 / s) for a scalar input s.  A division costs
    several multiplications and, unlike them, does not pipeline: Adam's two bias
    corrections were two of its three divisions per parameter.  The result may differ
    from the division in the last bit (x * (1/s) is rounded twice)."""

    def scalar_input(j: int) -> bool:
        node = c.nodes[j]
        return (
            node.op is Op.BROADCAST
            and c.nodes[node.inputs[0]].size == 1
            and c.nodes[node.inputs[0]].op is Op.INPUT
        )

    def rewrite(out: Circuit, i: int, node: Node, ins: list[int]) -> int | None:
        if node.op is not Op.DIV or not scalar_input(node.inputs[1]):
            return None
        b = out.nodes[ins[1]]
        s = b.inputs[0]
        one = out.add_const(np.ones(out.nodes[s].shape))
        inv = out.add(Op.BROADCAST, [out.add(Op.DIV, [one, s])], b.attrs)
        return out.add(Op.MUL, [ins[0], inv])

    return rebuild(c, rewrite=rewrite)


def _is_one(c: Circuit, j: int) -> bool:
    """Is node j the constant 1 (or its broadcast)?"""
    node = c.nodes[j]
    if node.op is Op.BROADCAST:
        return _is_one(c, node.inputs[0])
    return node.op is Op.CONST and bool(np.all(c.consts[j] == 1.0))


def shared_reciprocals(c: Circuit) -> Circuit:
    """a / b, c / b -> r = 1 / b, a * r, c * r wherever b divides two or more values (or is
    a broadcast: its source is inverted, then broadcast); power(x, -0.5) counts as 1 / b
    where b = sqrt(x) is computed too, and becomes r.  The transpose of Adam's update
    divides by sqrt(v_hat + eps) three times per parameter and takes 1 / sqrt of the same
    value once: at the divider's throughput that was the largest part of a metagradient's
    reverse step.  Like ``scalar_reciprocals`` it rounds twice (a * (1/b) may differ from
    a / b in the last bit), and unlike it it is not part of ``simplify``: training keeps
    its bits; ``runtime.sweep`` applies it to the reverse steps, whose metagradient no
    test pins to the bit (the sweep and the full-trajectory method share the circuits)."""
    sqrt_of = {n.inputs[0]: i for i, n in c if n.op is Op.POW and n.attrs[0] == 0.5}

    def divisor(node: Node) -> int | None:
        if node.op is Op.DIV:
            return node.inputs[1]
        if node.op is Op.POW and node.attrs[0] == -0.5:
            return sqrt_of.get(node.inputs[0])
        return None

    counts: dict[int, int] = {}
    for _, node in c:
        b = divisor(node)
        if b is not None:
            counts[b] = counts.get(b, 0) + 1
    shared = {b for b, k in counts.items() if k >= 2 or c.nodes[b].op is Op.BROADCAST}
    inverse: dict[int, int] = {}  # new id of b -> new id of 1 / b

    def ones(out: Circuit, shape: tuple[int, ...]) -> int:
        one = out.add_const(np.asarray(1.0))
        return one if shape == () else out.add(Op.BROADCAST, [one], (shape,))

    def reciprocal(out: Circuit, b: int) -> int:
        if b not in inverse:
            node = out.nodes[b]
            if node.op is Op.BROADCAST:
                inverse[b] = out.add(Op.BROADCAST, [reciprocal(out, node.inputs[0])], node.attrs)
            else:
                inverse[b] = out.add(Op.DIV, [ones(out, node.shape), b])
        return inverse[b]

    def rewrite(out: Circuit, i: int, node: Node, ins: list[int]) -> int | None:
        if divisor(node) not in shared:
            return None
        if node.op is Op.POW:  # 1 / sqrt(x): the reciprocal of sqrt(x), interned as it is
            return reciprocal(out, out.add(Op.POW, [ins[0]], (0.5,)))
        r = reciprocal(out, ins[1])
        return r if _is_one(out, ins[0]) else out.add(Op.MUL, [ins[0], r])

    return rebuild(c, rewrite=rewrite)


@dataclass(frozen=True)
class Activity:
    """active[i]: node i is a series; hi[i]: its orders >= 1 are needed."""

    active: tuple[bool, ...]
    hi: tuple[bool, ...]

    def summary(self, c: Circuit) -> dict[str, int]:
        return {
            "nodes": len(c.nodes),
            "series": sum(self.hi),
            "order0_only_series": sum(
                a and not h for a, h in zip(self.active, self.hi, strict=True)
            ),
            "real": sum(not a for a in self.active),
        }


def _reads_hi(node: Node, operand: int) -> bool:
    """Does the op's series rule read the higher orders of this operand?"""
    return family(node.op) not in (Family.ORDER0, Family.INDEX) and not (
        node.op is Op.WHERE and operand == 0
    )


def activity(c: Circuit, series_inputs: Iterable[str]) -> Activity:
    series = set(series_inputs)
    unknown = series - set(c.inputs)
    if unknown:
        raise ValueError(f"activity: no input named {sorted(unknown)[0]!r}")
    active = [False] * len(c.nodes)
    for i, node in c:
        if node.op is Op.INPUT:
            active[i] = node.attrs[0] in series and node.dtype == "float"
        elif family(node.op) not in (Family.SOURCE, Family.ORDER0, Family.INDEX):
            active[i] = any(active[j] for j in node.inputs)
    hi = [False] * len(c.nodes)
    for nid in c.outputs.values():
        hi[nid] = active[nid]
    for i in range(len(c.nodes) - 1, -1, -1):
        if hi[i]:
            node = c.nodes[i]
            for pos, j in enumerate(node.inputs):
                if active[j] and _reads_hi(node, pos):
                    hi[j] = True
    return Activity(tuple(active), tuple(hi))


def sink_elementwise(c: Circuit) -> Circuit:
    """Each elementwise equation moved down to just before the first equation that reads it,
    so that chains the tracer interleaved become consecutive runs for loop fusion
    (``compiler/fusion.py`` fuses only consecutive equations).  The transpose of Adam's
    update, per parameter, is traced as one sweep of a scalar times every cotangent, then
    each parameter's chain: sunk, each product joins its chain's loop.  Only the order
    changes: the same operations on the same values, the same bits."""
    users = c.users()
    outputs = set(c.outputs.values())

    def movable(i: int, node: Node) -> bool:
        return opdef(node.op).code.scalar is not None and bool(users[i]) and i not in outputs

    placed = [False] * len(c.nodes)
    order: list[int] = []

    def place(i: int) -> None:  # i after every input not placed yet (depth first)
        stack = [(i, 0)]
        while stack:
            j, q = stack.pop()
            ins = c.nodes[j].inputs
            while q < len(ins) and placed[ins[q]]:
                q += 1
            if q < len(ins):
                stack += [(j, q + 1), (ins[q], 0)]
            elif not placed[j]:
                placed[j] = True
                order.append(j)

    for i, node in c:
        if not movable(i, node):
            place(i)
    for i in range(len(c.nodes)):
        place(i)
    return rebuild(c, order=order)


def simplify(c: Circuit) -> Circuit:
    """The standard pipeline before code generation."""
    return dce(scalar_reciprocals(transpose_narrow_operands(merge_transposes(
        fold_constants(lower_concat(cse(c)))))))
