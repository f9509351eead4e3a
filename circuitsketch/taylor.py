"""The series rule of every op, on arrays of normalised Taylor coefficients.

A series value has shape (K+1, *shape); entry r is the r-th coefficient
already divided by r!.  Integer and boolean operands (indices, masks) stay
plain arrays.  Linear ops act on each coefficient with the op's own EVAL;
bilinear and analytic ops use the recurrences of ``series_math``; the
softmax shift reads only the real order-0 part and yields a constant.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from circuitsketch import series_math as sm
from circuitsketch.interpret import EVAL
from circuitsketch.ir import FAMILY, Family, IRError, Node, Op

SeriesRule = Callable[[list[np.ndarray], Node, int], np.ndarray]


def constant_series(value: np.ndarray, degree: int) -> np.ndarray:
    out = np.zeros((degree + 1, *np.shape(value)), dtype=np.complex128)
    out[0] = value
    return out


def _coefficientwise(op: Op) -> SeriesRule:
    """A linear op applied to every coefficient (int/bool operands passed whole)."""

    def rule(ins: list[np.ndarray], node: Node, degree: int) -> np.ndarray:
        mask = _series_mask(node, ins)
        return np.stack(
            [
                EVAL[op]([x[r] if s else x for x, s in zip(ins, mask, strict=True)], node)
                for r in range(degree + 1)
            ]
        )

    return rule


def _series_mask(node: Node, ins: list[np.ndarray]) -> list[bool]:
    # Bool masks (where) and int indices (gather, scatter_add) are not series.
    if node.op is Op.WHERE:
        return [False, True, True]
    if node.op in (Op.GATHER, Op.SCATTER_ADD):
        return [True, False]
    return [True] * len(ins)


def _shift_max(ins: list[np.ndarray], node: Node, degree: int) -> np.ndarray:
    return constant_series(np.max(np.real(ins[0][0]), axis=node.attrs[0]), degree)


def _erf(ins: list[np.ndarray], node: Node, degree: int) -> np.ndarray:
    (x,) = ins
    if np.any(np.imag(x[0]) != 0):
        raise IRError("erf: the order-0 coefficient must be real")
    return sm.erf(np.concatenate([np.real(x[:1]).astype(np.complex128), x[1:]]))


TAYLOR: dict[Op, SeriesRule] = {
    **{op: _coefficientwise(op) for op, fam in FAMILY.items() if fam is Family.LINEAR},
    Op.MUL: lambda x, n, k: sm.mul(x[0], x[1]),
    Op.MATMUL: lambda x, n, k: sm.matmul(x[0], x[1]),
    Op.DIV: lambda x, n, k: sm.div(x[0], x[1]),
    Op.EXP: lambda x, n, k: sm.exp(x[0]),
    Op.LOG: lambda x, n, k: sm.log(x[0]),
    Op.POW: lambda x, n, k: sm.power(x[0], n.attrs[0]),
    Op.ERF: _erf,
    Op.SHIFT_MAX: _shift_max,
    Op.ONE_HOT: lambda x, n, k: constant_series(EVAL[Op.ONE_HOT](x, n), k),
}
