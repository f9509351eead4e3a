"""Ops that read only the real order-0 parts: comparisons, the softmax shift, and where.

A comparison of traced values is decided by their real order-0 parts, so its
boolean result carries no series; ``where`` then passes each coefficient of
the selected branch through.  The series of a piecewise function built this
way (relu, abs, max, clip) is exact wherever the order-0 point is off a kink:
there the selection is locally constant.  At a kink it is the series of the
branch the comparison picks (``x > 0`` false at 0: relu's right branch is 0).
"""

from __future__ import annotations

import numpy as np

from circuitsketch import tracing as T
from circuitsketch.ir import Code, Family, Node, Op, OpDef, register
from circuitsketch.ops.rules import (
    coefficientwise,
    comparison_shape,
    elementwise_flops,
    need_dtypes,
    order0_only,
    reduce_flops,
    reduce_shape,
    same_shapes,
    zeros_like,
)
from circuitsketch.ops.structure import reduce_params
from circuitsketch.tracing import Traced

__all__ = ["shift_max", "where"]


def _where_shape(op: Op, shapes, dtypes, attrs):
    need_dtypes(dtypes, ["bool", "float", "float"], op)
    return same_shapes(shapes, op), "float"


def _eval_where(x, n):
    return np.where(x[0], x[1], x[2])


register(OpDef(
    Op.WHERE, Family.LINEAR, 3, _where_shape, _eval_where,
    coefficientwise(_eval_where, (False, True, True)),
    lambda g, n, ins, out: [
        None,
        T.where(ins[0], g, zeros_like(g)),
        T.where(ins[0], zeros_like(g), g),
    ],
    None, Code("where", "({1} if {0} else {2})", "where"),
))


def _comparison(op: Op, evaluate, scalar: str) -> None:
    def real(x, n):
        return evaluate(np.real(x[0]), np.real(x[1]))

    register(OpDef(op, Family.ORDER0, 2, comparison_shape, real, order0_only(real), None, None,
                   Code(None, scalar), elementwise_flops, op.value))


_comparison(Op.GREATER, np.greater, "(1.0 if {0} > {1} else 0.0)")
_comparison(Op.GREATER_EQUAL, np.greater_equal, "(1.0 if {0} >= {1} else 0.0)")


def _eval_shift_max(x, n: Node):
    return np.max(np.real(x[0]), axis=n.attrs[0])


register(OpDef(Op.SHIFT_MAX, Family.ORDER0, 1, reduce_shape, _eval_shift_max,
               order0_only(_eval_shift_max), None, None,
               Code("reduce_max", params=reduce_params), reduce_flops))


# ---------------------------------------------------------------- public functions
where = T.where


def shift_max(x: Traced, axis: int = -1, keepdims: bool = True) -> Traced:
    """Max over an axis of the real order-0 part, as a constant (no gradient, no series).

    This is the stabilising shift of a softmax: any constant gives the same value.
    """
    ax = axis % x.ndim
    out = x._new(Op.SHIFT_MAX, [x], (ax,))
    if keepdims:
        out = out.reshape((*x.shape[:ax], 1, *x.shape[ax + 1 :]))
    return out
