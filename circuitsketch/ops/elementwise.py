"""Elementwise primitives: arithmetic and analytic functions, one registry entry each.

An analytic function whose derivative is a polynomial in its value, f' = P(f)
with P of degree <= 2 (tanh: 1 - f^2, sigmoid: f - f^2), needs no series rule,
kernel or gradient of its own: ``series_math.ode_quadratic``, the ``ode``
series rule of the compiler and ``_ode_vjp`` derive them from P's coefficients.
"""

from __future__ import annotations

import math

import numpy as np

from circuitsketch import series_math as sm
from circuitsketch import tracing as T
from circuitsketch.ir import Code, Family, IRError, Node, Op, OpDef, register
from circuitsketch.ops.rules import (
    coefficientwise,
    elementwise_flops,
    elementwise_shape,
    real_order0,
    sympy_elementwise,
)
from circuitsketch.tracing import Traced

__all__ = ["erf", "exp", "log", "power", "rsqrt", "sigmoid", "sqrt", "tanh"]

_erf = np.frompyfunc(math.erf, 1, 1)


def _eval_erf(x: np.ndarray) -> np.ndarray:
    if np.iscomplexobj(x):
        raise IRError("erf of a complex array is not defined in real evaluation")
    return np.asarray(_erf(x), dtype=np.float64)


def _pow_scalar(a: list[str], node: Node) -> str:
    p = float(node.attrs[0])
    if p == 0.5:
        return f"math.sqrt({a[0]})"
    if p == -0.5:
        return f"(1.0 / math.sqrt({a[0]}))"
    if p == 2.0:
        return f"({a[0]} * {a[0]})"
    return f"({a[0]} ** {p!r})"


def _sympy_pow(sp, x, node: Node):
    from circuitsketch.sympy_lowering import sympy_number

    p = sympy_number(node.attrs[0])
    return sympy_elementwise(lambda sp, e: sp.Pow(e, p))(sp, x, node)


def _elementwise(op: Op, evaluate, series, vjp, sympy, code: Code, numpy_name=None, arity=1,
                 family=Family.ANALYTIC) -> None:
    register(OpDef(op, family, arity, elementwise_shape, evaluate, series, vjp,
                   sympy_elementwise(sympy), code, elementwise_flops, numpy_name))


_elementwise(
    Op.ADD, lambda x, n: x[0] + x[1], coefficientwise(lambda x, n: x[0] + x[1]),
    lambda g, n, ins, out: [g, g], lambda sp, a, b: a + b,
    Code("add", "({0} + {1})", "add"), "add", 2, Family.LINEAR)
_elementwise(
    Op.SUB, lambda x, n: x[0] - x[1], coefficientwise(lambda x, n: x[0] - x[1]),
    lambda g, n, ins, out: [g, -g], lambda sp, a, b: a - b,
    Code("sub", "({0} - {1})", "sub"), "subtract", 2, Family.LINEAR)
_elementwise(
    Op.NEG, lambda x, n: -x[0], coefficientwise(lambda x, n: -x[0]),
    lambda g, n, ins, out: [-g], lambda sp, a: -a,
    Code("neg", "(-{0})", "neg"), "negative", 1, Family.LINEAR)
_elementwise(
    Op.MUL, lambda x, n: x[0] * x[1], lambda x, n, k: sm.mul(x[0], x[1]),
    lambda g, n, ins, out: [g * ins[1], g * ins[0]], lambda sp, a, b: a * b,
    Code("mul", "({0} * {1})", "mul"), "multiply", 2, Family.BILINEAR)
_elementwise(
    Op.DIV, lambda x, n: x[0] / x[1], lambda x, n, k: sm.div(x[0], x[1]),
    lambda g, n, ins, out: [g / ins[1], -(g * out) / ins[1]], lambda sp, a, b: a / b,
    Code("div", "({0} / {1})", "div"), "true_divide", 2)
_elementwise(
    Op.EXP, lambda x, n: np.exp(x[0]), lambda x, n, k: sm.exp(x[0]),
    lambda g, n, ins, out: [g * out], lambda sp, a: sp.exp(a),
    Code("exp", "k.vexp({0})", "exp"), "exp")
_elementwise(
    Op.LOG, lambda x, n: np.log(x[0]), lambda x, n, k: sm.log(x[0]),
    lambda g, n, ins, out: [g / ins[0]], lambda sp, a: sp.log(a),
    Code("log", "math.log({0})", "log"), "log")
_elementwise(
    Op.ERF, lambda x, n: _eval_erf(x[0]), lambda x, n, k: sm.erf(real_order0(x[0], Op.ERF)),
    lambda g, n, ins, out: [g * ((2.0 / math.sqrt(math.pi)) * exp(-(ins[0] * ins[0])))],
    lambda sp, a: sp.erf(a), Code("erf", None, "erf"))  # not fused: compiler/erf.py
register(OpDef(
    Op.POW, Family.ANALYTIC, 1, elementwise_shape,
    lambda x, n: np.power(x[0], n.attrs[0]),
    lambda x, n, k: sm.power(x[0], n.attrs[0]),
    lambda g, n, ins, out: [g * (n.attrs[0] * power(ins[0], n.attrs[0] - 1.0))],
    _sympy_pow,
    Code("powc", _pow_scalar, "pow", lambda node, shapes: (np.array([node.attrs[0]]),)),
    elementwise_flops,
))


# ---------------------------------------------------------------- f' = P(f)
def _ode_vjp(c: tuple[float, float, float]):
    """g * P(out): the derivative of f written with its own value."""

    def vjp(g, node, ins, out):
        terms = [] if c[0] == 0.0 else [T.lift(g.circuit, c[0])]
        if c[1] != 0.0:
            terms.append(out if c[1] == 1.0 else c[1] * out)
        if c[2] != 0.0:
            terms.append(c[2] * (out * out))
        slope = terms[0]
        for t in terms[1:]:
            slope = slope + t
        return [g * slope]

    return vjp


def _ode_op(op: Op, f, scalar: str, c: tuple[float, float, float], sympy) -> None:
    coeffs = np.array(c, dtype=np.float64)
    _elementwise(
        op, lambda x, n: f(x[0]),
        lambda x, n, k: sm.ode_quadratic(x[0], c, f(x[0][0])),
        _ode_vjp(c), sympy, Code(None, scalar, "ode", lambda node, shapes: (coeffs,)), op.value)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


_ode_op(Op.TANH, np.tanh, "math.tanh({0})", (1.0, 0.0, -1.0), lambda sp, a: sp.tanh(a))
_ode_op(Op.SIGMOID, _sigmoid, "(1.0 / (1.0 + math.exp(-{0})))", (0.0, 1.0, -1.0),
        lambda sp, a: 1 / (1 + sp.exp(-a)))


# ---------------------------------------------------------------- public functions
def exp(x: Traced) -> Traced:
    """Elementwise e**x (series rule: the exp recurrence)."""
    return x._new(Op.EXP, [x])


def log(x: Traced) -> Traced:
    """Elementwise natural log; needs a nonzero order-0 part."""
    return x._new(Op.LOG, [x])


def erf(x: Traced) -> Traced:
    """Elementwise error function (GELU is built from it)."""
    return x._new(Op.ERF, [x])


def tanh(x: Traced) -> Traced:
    """Elementwise hyperbolic tangent (f' = 1 - f^2)."""
    return x._new(Op.TANH, [x])


def sigmoid(x: Traced) -> Traced:
    """Elementwise logistic function 1 / (1 + e^-x) (f' = f - f^2)."""
    return x._new(Op.SIGMOID, [x])


power = T.power


def sqrt(x: Traced) -> Traced:
    """Elementwise square root, as power(x, 0.5)."""
    return power(x, 0.5)


def rsqrt(x: Traced) -> Traced:
    """Elementwise 1/sqrt(x), as power(x, -0.5) (rmsnorm uses it)."""
    return power(x, -0.5)
