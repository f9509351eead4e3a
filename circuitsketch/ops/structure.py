"""Data movement, reductions and matrix products: one registry entry each.

These ops are linear (or bilinear) in their float operands, so their series
rule applies their evaluation to every Taylor coefficient (matmul: the Cauchy
product of matrices).  Compiled code moves data by index maps computed here by
running the op's own evaluation on element indices (``take_map``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from circuitsketch import series_math as sm
from circuitsketch import tracing as T
from circuitsketch.ir import Code, Family, IRError, Node, Op, OpDef, Shape, register
from circuitsketch.ops.rules import (
    check_axis,
    coefficientwise,
    need_dtypes,
    order0_only,
    reduce_flops,
    reduce_shape,
    sum_to,
)
from circuitsketch.tracing import Traced, lift

__all__ = ["concat", "gather", "one_hot", "pad", "scatter_add", "stack", "take_map"]


# ---------------------------------------------------------------- index maps
def take_map(node: Node, in_shape: Shape, evaluate) -> np.ndarray:
    """out.flat[i] = in.flat[map[i]] (-1: zero), by running the op on indices."""
    idx = np.arange(1, int(np.prod(in_shape, dtype=np.int64)) + 1, dtype=np.int64).reshape(in_shape)
    return np.asarray(evaluate([idx], node)).ravel() - 1


def reduce_map(node: Node, in_shape: Shape) -> np.ndarray:
    """map[i, j]: the j-th input element reduced into output element i."""
    idx = np.arange(int(np.prod(in_shape, dtype=np.int64)), dtype=np.int64).reshape(in_shape)
    return np.moveaxis(idx, node.attrs[0], -1).reshape(-1, in_shape[node.attrs[0]])


def reduce_params(node: Node, shapes: list[Shape]) -> tuple:
    """E0 = the reduction map, E1 = elements per output, E2 = operand size, E3 = 1 when
    each output reduces a row that lies in one piece (the map is 0, 1, 2, ...)."""
    m = reduce_map(node, shapes[0])
    rows = int(np.array_equal(m.ravel(), np.arange(m.size)))
    return m, m.shape[1], int(np.prod(shapes[0], dtype=np.int64)), rows


def _check_index(idx: np.ndarray, rows: int, op: str) -> np.ndarray:
    if idx.size and (idx.min() < 0 or idx.max() >= rows):
        bad = int(idx[(idx < 0) | (idx >= rows)][0])
        raise IRError(f"{op}: index {bad} out of range for {rows} rows")
    return idx


def _scatter_add(vals: np.ndarray, idx: np.ndarray, rows: int) -> np.ndarray:
    out = np.zeros((rows, *vals.shape[1:]), dtype=vals.dtype)
    np.add.at(out, idx, vals)
    return out


def _linear(op: Op, shape, evaluate, vjp, code: Code, arity=1, series_operands=None) -> None:
    register(OpDef(op, Family.LINEAR, arity, shape, evaluate,
                   coefficientwise(evaluate, series_operands), vjp, None, code))


def _take(op: Op, shape, evaluate, vjp) -> None:
    """An op that moves elements: compiled as the index map of ``take_map``."""

    def params(node: Node, shapes: list[Shape]) -> tuple:
        return take_map(node, shapes[0], evaluate), int(np.prod(shapes[0], dtype=np.int64))

    _linear(op, shape, evaluate, vjp, Code("take", None, "take", params))


# ---------------------------------------------------------------- shape rules
def _reshape_shape(op: Op, shapes, dtypes, attrs):
    (shape,) = shapes
    new = tuple(attrs[0])
    if int(np.prod(new, dtype=np.int64)) != int(np.prod(shape, dtype=np.int64)):
        raise IRError(f"reshape: cannot reshape {shape} to {new}")
    return new, dtypes[0]


def _transpose_shape(op: Op, shapes, dtypes, attrs):
    (shape,) = shapes
    perm = tuple(attrs[0])
    if sorted(perm) != list(range(len(shape))):
        raise IRError(f"transpose: bad permutation {perm} for rank {len(shape)}")
    return tuple(shape[p] for p in perm), dtypes[0]


def _slice_shape(op: Op, shapes, dtypes, attrs):
    (shape,) = shapes
    starts, stops = attrs
    if len(starts) != len(shape) or any(
        not 0 <= a <= b <= n for a, b, n in zip(starts, stops, shape, strict=True)
    ):
        raise IRError(f"slice: bounds {starts}:{stops} out of range for shape {shape}")
    return tuple(b - a for a, b in zip(starts, stops, strict=True)), dtypes[0]


def _pad_shape(op: Op, shapes, dtypes, attrs):
    need_dtypes(dtypes, ["float"], op)
    (shape,) = shapes
    before, after = attrs
    if len(before) != len(shape) or min(before + after, default=0) < 0:
        raise IRError(f"pad: bad widths {before}/{after} for shape {shape}")
    return tuple(n + a + b for n, a, b in zip(shape, before, after, strict=True)), "float"


def _concat_shape(op: Op, shapes, dtypes, attrs):
    need_dtypes(dtypes, ["float"] * len(dtypes), op)
    ax = check_axis(attrs[0], len(shapes[0]), op)
    for s in shapes:
        if len(s) != len(shapes[0]) or s[:ax] + s[ax + 1 :] != shapes[0][:ax] + shapes[0][ax + 1 :]:
            raise IRError(f"concat: shapes {list(shapes)} differ off axis {ax}")
    return (*shapes[0][:ax], sum(s[ax] for s in shapes), *shapes[0][ax + 1 :]), "float"


def _broadcast_shape(op: Op, shapes, dtypes, attrs):
    (shape,) = shapes
    new = tuple(attrs[0])
    try:
        ok = np.broadcast_shapes(shape, new) == new
    except ValueError:
        ok = False
    if not ok:
        raise IRError(f"broadcast: cannot broadcast {shape} to {new}")
    return new, dtypes[0]


def _matmul_shape(op: Op, shapes, dtypes, attrs):
    need_dtypes(dtypes, ["float", "float"], op)
    a, b = shapes
    if len(a) != len(b) or len(a) not in (2, 3) or a[-1] != b[-2] or a[:-2] != b[:-2]:
        raise IRError(f"matmul: incompatible shapes {a} @ {b}")
    return a[:-1] + b[-1:], "float"


def _gather_shape(op: Op, shapes, dtypes, attrs):
    need_dtypes(dtypes, ["float", "int"], op)
    table, idx = shapes
    if len(idx) != 1 or not table:
        raise IRError(f"gather: table {table} with indices {idx}")
    return idx + table[1:], "float"


def _scatter_add_shape(op: Op, shapes, dtypes, attrs):
    need_dtypes(dtypes, ["float", "int"], op)
    vals, idx = shapes
    if len(idx) != 1 or not vals or vals[0] != idx[0]:
        raise IRError(f"scatter_add: values {vals} with indices {idx}")
    return (attrs[0], *vals[1:]), "float"


def _one_hot_shape(op: Op, shapes, dtypes, attrs):
    need_dtypes(dtypes, ["int"], op)
    return shapes[0] + (attrs[0],), "float"


# ---------------------------------------------------------------- gradients
def _vjp_sum(g, node, ins, out):
    (x,) = ins
    ax = node.attrs[0]
    return [T.broadcast_to(g.reshape((*x.shape[:ax], 1, *x.shape[ax + 1 :])), x.shape)]


def _vjp_matmul(g, node, ins, out):
    a, b = ins
    if a.ndim == 2:
        return [T.matmul(g, b.T), T.matmul(a.T, g)]
    return [T.matmul(g, b.transpose(0, 2, 1)), T.matmul(a.transpose(0, 2, 1), g)]


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
    return [pad(g, starts, after)]


def _vjp_pad(g, node, ins, out):
    (x,) = ins
    before, _ = node.attrs
    stops = tuple(b + n for b, n in zip(before, x.shape, strict=True))
    return [g._new(Op.SLICE, [g], (tuple(before), stops))]


def _vjp_transpose(g, node, ins, out):
    perm = node.attrs[0]
    inverse = tuple(sorted(range(len(perm)), key=lambda i: perm[i]))
    return [g.transpose(inverse)]


# ---------------------------------------------------------------- sympy
def _sympy_sum(sp, ins, node: Node):
    moved = np.moveaxis(ins[0], node.attrs[0], -1)
    out = np.empty(moved.shape[:-1], dtype=object)
    for idx in np.ndindex(out.shape):
        out[idx] = sp.Add(*moved[idx])
    return out


def _sympy_matmul(sp, ins, node: Node):
    a, b = ins
    batched = a.ndim == 3
    a3, b3 = (a, b) if batched else (a[None], b[None])
    nb, m, k = a3.shape
    out = np.empty((nb, m, b3.shape[-1]), dtype=object)
    for q in range(nb):
        for i in range(m):
            for j in range(b3.shape[-1]):
                out[q, i, j] = sp.Add(*(a3[q, i, t] * b3[q, t, j] for t in range(k)))
    return out if batched else out[0]


def _matmul_flops(node: Node, shapes: list[Shape]) -> int:
    a, b = shapes
    return 2 * int(np.prod(a[:-2], dtype=np.int64)) * a[-2] * a[-1] * b[-1]


def _matmul_params(node: Node, shapes: list[Shape]) -> tuple:
    a, b = shapes
    return (a[0] if len(a) == 3 else 1), a[-2], a[-1], b[-1]


# ---------------------------------------------------------------- the entries
def _eval_sum(x, n):
    return np.sum(x[0], axis=n.attrs[0])


register(OpDef(Op.SUM, Family.LINEAR, 1, reduce_shape, _eval_sum, coefficientwise(_eval_sum),
               _vjp_sum, _sympy_sum, Code("reduce_sum", None, "reduce_sum", reduce_params),
               reduce_flops))
register(OpDef(Op.MATMUL, Family.BILINEAR, 2, _matmul_shape, lambda x, n: np.matmul(x[0], x[1]),
               lambda x, n, k: sm.matmul(x[0], x[1]), _vjp_matmul, _sympy_matmul,
               Code("matmul", None, "matmul", _matmul_params), _matmul_flops, "matmul"))


def _eval_gather(x, n):
    return x[0][_check_index(x[1], x[0].shape[0], "gather")]


def _eval_scatter_add(x, n):
    return _scatter_add(x[0], _check_index(x[1], n.attrs[0], "scatter_add"), n.attrs[0])


_linear(Op.GATHER, _gather_shape, _eval_gather,
        lambda g, n, ins, out: [scatter_add(g, ins[1], ins[0].shape[0]), None],
        Code("gather", None, "gather",
             lambda node, s: (int(np.prod(s[0][1:], dtype=np.int64)),
                              int(np.prod(s[0], dtype=np.int64)))),
        2, (True, False))
_linear(Op.SCATTER_ADD, _scatter_add_shape, _eval_scatter_add,
        lambda g, n, ins, out: [gather(g, ins[1]), None],
        Code("scatter_add", None, "scatter_add",
             lambda node, s: (int(np.prod(s[0][1:], dtype=np.int64)), s[0][0])),
        2, (True, False))
_linear(Op.RESHAPE, _reshape_shape, lambda x, n: np.reshape(x[0], n.attrs[0]),
        lambda g, n, ins, out: [g.reshape(ins[0].shape)], Code("copy", None, "copy", alias=True))
_linear(Op.CONCAT, _concat_shape, lambda x, n: np.concatenate(x, axis=n.attrs[0]),
        _vjp_concat, Code(), None)  # lowered to pad + add before code generation
_take(Op.TRANSPOSE, _transpose_shape, lambda x, n: np.transpose(x[0], n.attrs[0]),
      _vjp_transpose)
_take(Op.SLICE, _slice_shape,
      lambda x, n: x[0][tuple(slice(a, b) for a, b in zip(*n.attrs, strict=True))], _vjp_slice)
_take(Op.PAD, _pad_shape, lambda x, n: np.pad(x[0], list(zip(*n.attrs, strict=True))), _vjp_pad)
_take(Op.BROADCAST, _broadcast_shape, lambda x, n: np.broadcast_to(x[0], n.attrs[0]).copy(),
      lambda g, n, ins, out: [sum_to(g, ins[0].shape)])


def _eval_one_hot(x, n):
    return (x[0][..., None] == np.arange(n.attrs[0])).astype(np.float64)


register(OpDef(Op.ONE_HOT, Family.INDEX, 1, _one_hot_shape, _eval_one_hot,
               order0_only(_eval_one_hot), None, None,
               Code("one_hot", params=lambda node, shapes: (node.attrs[0],))))


# ---------------------------------------------------------------- public functions
def gather(table: Traced, indices: Traced) -> Traced:
    """Rows table[indices[i]]: embedding lookup by integer ids."""
    return table._new(Op.GATHER, [table, lift(table.circuit, indices)])


def scatter_add(values: Traced, indices: Traced, num_rows: int) -> Traced:
    """out[indices[i]] += values[i]: the transpose of gather."""
    return values._new(Op.SCATTER_ADD, [values, lift(values.circuit, indices)], (int(num_rows),))


def one_hot(indices: Traced, depth: int) -> Traced:
    """Float one-hot rows of integer ids; an id outside 0..depth-1 gives a zero row."""
    if not isinstance(indices, Traced):
        raise T.fail("one_hot of constant indices: build the one-hot array with numpy instead")
    return indices._new(Op.ONE_HOT, [indices], (int(depth),))


def concat(xs: Sequence[Traced], axis: int = 0) -> Traced:
    """Join arrays along an existing axis."""
    c = T.circuit_of(*xs)
    xs = [lift(c, x) for x in xs]
    if len(xs) == 1:
        return xs[0]
    return xs[0]._new(Op.CONCAT, xs, (axis % xs[0].ndim,))


def pad(x: Traced, before: Sequence[int], after: Sequence[int]) -> Traced:
    """Zero-pad each axis by before[i] and after[i] elements."""
    return x._new(Op.PAD, [x], (tuple(int(b) for b in before), tuple(int(a) for a in after)))


def stack(xs: Sequence[Traced], axis: int = 0) -> Traced:
    """Join arrays along a new axis."""
    xs = list(xs)
    ax = axis % (xs[0].ndim + 1)
    expanded = [x.reshape((*x.shape[:ax], 1, *x.shape[ax:])) for x in xs]
    return concat(expanded, ax)
