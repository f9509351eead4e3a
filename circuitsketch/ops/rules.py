"""Rule builders that registry entries share: shape rules, family series rules, helpers.

An entry names one of these instead of writing its own when its op belongs to
a family: every elementwise op has the same shape rule, every linear op acts
on each Taylor coefficient with its own evaluation, every order-0 op reads
only the real order-0 parts and yields a value without a series.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from circuitsketch import series_math as sm
from circuitsketch import tracing as T
from circuitsketch.ir import IRError, Node, Op, Shape
from circuitsketch.tracing import Traced


# ---------------------------------------------------------------- shape rules
def same_shapes(shapes: Sequence[Shape], op: Op) -> Shape:
    if any(s != shapes[0] for s in shapes):
        raise IRError(f"{op.value}: operand shapes differ {list(shapes)}; broadcast explicitly")
    return shapes[0]


def need_dtypes(dtypes: Sequence[str], want: Sequence[str], op: Op) -> None:
    for got, w in zip(dtypes, want, strict=True):
        if w != "any" and got != w:
            raise IRError(f"{op.value}: operand dtype {got}, expected {w}")


def check_axis(axis: int, ndim: int, op: Op) -> int:
    if not 0 <= axis < ndim:
        raise IRError(f"{op.value}: axis {axis} out of range for rank {ndim}")
    return axis


def elementwise_shape(op: Op, shapes, dtypes, attrs):
    need_dtypes(dtypes, ["float"] * len(dtypes), op)
    return same_shapes(shapes, op), "float"


def comparison_shape(op: Op, shapes, dtypes, attrs):
    need_dtypes(dtypes, ["float"] * len(dtypes), op)
    return same_shapes(shapes, op), "bool"


def reduce_shape(op: Op, shapes, dtypes, attrs):
    need_dtypes(dtypes, ["float"], op)
    (shape,) = shapes
    ax = check_axis(attrs[0], len(shape), op)
    return shape[:ax] + shape[ax + 1 :], "float"


# ---------------------------------------------------------------- series rules
def coefficientwise(evaluate: Callable, series_operands: Sequence[bool] | None = None):
    """The series rule of a linear op: its evaluation applied to every coefficient.

    series_operands[i] False: operand i is an int or bool array (indices, a mask),
    passed whole to every coefficient's evaluation.
    """

    def rule(ins: list[np.ndarray], node: Node, degree: int) -> np.ndarray:
        mask = series_operands or [True] * len(ins)
        return np.stack(
            [
                evaluate([x[r] if s else x for x, s in zip(ins, mask, strict=True)], node)
                for r in range(degree + 1)
            ]
        )

    return rule


def order0_only(evaluate: Callable):
    """The series rule of an order-0 op: its evaluation on the real order-0 parts; the
    result carries no series (a float result is a constant series, a bool one a mask)."""

    def rule(ins: list[np.ndarray], node: Node, degree: int) -> np.ndarray:
        out = np.asarray(evaluate([np.real(x[0]) if x.dtype.kind in "fc" else x for x in ins],
                                  node))
        return sm.constant_series(out, degree) if node.dtype == "float" else out

    return rule


def real_order0(x: np.ndarray, op: Op) -> np.ndarray:
    """A series whose order-0 coefficient is made real (IRError if it is not)."""
    if np.any(np.imag(x[0]) != 0):
        raise IRError(f"{op.value}: the order-0 coefficient must be real")
    return np.concatenate([np.real(x[:1]).astype(np.complex128), x[1:]])


# ---------------------------------------------------------------- cost model
def elementwise_flops(node: Node, shapes: list[Shape]) -> int:
    return node.size


def reduce_flops(node: Node, shapes: list[Shape]) -> int:
    return int(np.prod(shapes[0], dtype=np.int64))


# ---------------------------------------------------------------- sympy
def sympy_elementwise(fn: Callable) -> Callable:
    """A sympy lowering applying fn(sympy, *operand expressions) to every element."""

    def lower(sp, ins: list[np.ndarray], node: Node) -> np.ndarray:
        out = np.empty(node.shape, dtype=object)
        for idx in np.ndindex(node.shape):
            out[idx] = fn(sp, *(x[idx] for x in ins))
        return out

    return lower


# ---------------------------------------------------------------- gradients
def sum_to(g: Traced, shape: Shape) -> Traced:
    """Transpose of broadcasting g's shape down to `shape`."""
    lead = g.ndim - len(shape)
    axes = list(range(lead)) + [
        lead + i for i, s in enumerate(shape) if s == 1 and g.shape[lead + i] != 1
    ]
    out = T.reduce_sum(g, axes) if axes else g
    return out.reshape(shape)


def zeros_like(g: Traced) -> Traced:
    return T.broadcast_to(T.lift(g.circuit, 0.0), g.shape)
