"""Lower a small circuit to scalar sympy expressions.

This is a second, independent reading of a circuit: every float input element
becomes a symbol and every equation is expanded element by element, so a test
can compare what was traced with a formula written by hand, differentiate it
symbolically, or evaluate it at 50 digits.  It is only meant for small circuits
(the expressions grow with every equation), hence the element limit.

Representation: each float value is a numpy object array of sympy expressions
(0-d for scalars); integer and boolean values (token ids, masks) must be
concrete and stay ordinary numpy arrays.  Data-movement ops (reshape,
transpose, slice, pad, concat, broadcast, where, gather, scatter_add, one_hot)
reuse the op's registry ``eval``, which works on object arrays unchanged; the
arithmetic ops lower with their registry ``sympy`` rule (``sum`` and ``matmul``
as explicit ``sympy.Add`` of products, ``exp``/``log``/``erf`` as the
sympy functions, ``pow`` as ``sympy.Pow`` with an exact exponent where
possible).  Comparisons need concrete operands.

Float constants become exact numbers when that is unambiguous: integers become
``sympy.Integer``; a float equal (as float64) to a fraction p/q with
q <= 10**6 becomes ``sympy.Rational(p, q)`` (so 0.5 -> 1/2, 1/12 -> 1/12,
0.1 -> 1/10); anything else becomes a 53-bit ``sympy.Float`` holding the exact
float64 value (e.g. 1/sqrt(2) traced as a float).  ±inf and nan map to
``±sympy.oo`` and ``sympy.nan``.

``shift_max`` (the softmax stabilising shift) is not an algebraic op.  By
default it is refused; ``shift_max="max"`` lowers it to ``sympy.Max`` of the
real parts of its operands (its value; note that sympy will differentiate
through it while the IR treats it as a constant), and ``shift_max="zero"``
replaces it by 0, which is exact whenever the circuit's result does not depend
on the shift (softmax, log-sum-exp) and gives much simpler expressions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from fractions import Fraction
from typing import Any

import numpy as np
import sympy as sp

from circuitsketch.ir import Circuit, Family, Node, Op, opdef

__all__ = ["MAX_ELEMENTS", "LoweringError", "input_symbols", "sympy_number", "to_sympy"]

MAX_ELEMENTS = 5000
"""Default limit on the total number of scalar elements over all nodes."""

_MAX_DENOMINATOR = 10**6


class LoweringError(ValueError):
    """The circuit cannot (or should not) be lowered to scalar sympy expressions."""


# ---------------------------------------------------------------- helpers
def sympy_number(v: float) -> sp.Expr:
    """An exact sympy number for a float64 constant (see the module docstring)."""
    v = float(v)
    if math.isnan(v):
        return sp.nan
    if math.isinf(v):
        return sp.oo if v > 0 else -sp.oo
    if v.is_integer():
        return sp.Integer(int(v))
    fr = Fraction(v).limit_denominator(_MAX_DENOMINATOR)
    if float(fr) == v:
        return sp.Rational(fr.numerator, fr.denominator)
    return sp.Float(v, precision=53)


def _obj(x: Any) -> np.ndarray:
    """x as a numpy object array (0-d for a single expression)."""
    if isinstance(x, np.ndarray):
        return x if x.dtype == object else x.astype(object)
    out = np.empty((), dtype=object)
    out[()] = x
    return out


def _map(fn: Callable[[Any], Any], x: np.ndarray) -> np.ndarray:
    out = np.empty(x.shape, dtype=object)
    for idx in np.ndindex(x.shape):
        out[idx] = fn(x[idx])
    return out


def _sympify_all(x: np.ndarray) -> np.ndarray:
    """Turn stray Python numbers (e.g. the 0 that np.pad inserts) into sympy numbers."""
    return _map(lambda e: e if isinstance(e, sp.Basic) else sympy_number(e), _obj(x))


def _numbers(a: np.ndarray) -> np.ndarray:
    return _map(sympy_number, np.asarray(a, dtype=np.float64))


def input_symbols(c: Circuit, real: bool = False) -> dict[str, Any]:
    """The default symbols of c's float inputs: ``x`` for a scalar, ``x_0_1`` for x[0, 1].

    Arrays come as numpy object arrays of the input's shape.  ``real=True``
    declares the symbols real, which lets sympy simplify more (e.g. exp/log).
    """
    out: dict[str, Any] = {}
    for name, nid in c.inputs.items():
        node = c.nodes[nid]
        if node.dtype != "float":
            continue
        if not node.shape:
            out[name] = sp.Symbol(name, real=True) if real else sp.Symbol(name)
            continue
        arr = np.empty(node.shape, dtype=object)
        for idx in np.ndindex(node.shape):
            sym = f"{name}_" + "_".join(map(str, idx))
            arr[idx] = sp.Symbol(sym, real=True) if real else sp.Symbol(sym)
        out[name] = arr
    return out


def _given_symbols(name: str, node: Node, value: Any) -> np.ndarray:
    if isinstance(value, sp.MatrixBase):
        value = value.tolist()
        arr = np.array(value, dtype=object)
        if arr.shape != node.shape and len(node.shape) == 1 and arr.size == node.size:
            arr = arr.reshape(node.shape)  # a column or row Matrix for a vector input
    elif isinstance(value, np.ndarray | list | tuple):
        arr = np.array(value, dtype=object)
    else:
        arr = _obj(value)
    if arr.shape != node.shape:
        raise LoweringError(f"symbols[{name!r}]: shape {arr.shape}, expected {node.shape}")
    return _map(sp.sympify, arr)


# ---------------------------------------------------------------- op lowering
def _shift_max(x: np.ndarray, axis: int, mode: str) -> np.ndarray:
    if mode == "zero":
        return _map(lambda _: sp.Integer(0), np.empty(np.delete(x.shape, axis), dtype=object))
    if mode == "max":
        moved = np.moveaxis(x, axis, -1)
        out = np.empty(moved.shape[:-1], dtype=object)
        for idx in np.ndindex(out.shape):
            out[idx] = sp.Max(*(sp.re(e) for e in moved[idx]))
        return out
    raise LoweringError(
        "shift_max is not an algebraic op and has no sympy lowering by default; pass "
        "shift_max='zero' (exact when the result does not depend on the shift, as in "
        "softmax) or shift_max='max' (sympy.Max of the real parts)"
    )


def _concrete(x: np.ndarray, node: Node) -> np.ndarray:
    """The numbers of an operand of a comparison (LoweringError when it is symbolic)."""
    try:
        return np.asarray(_obj(x).astype(np.complex128))
    except (TypeError, ValueError):
        raise LoweringError(
            f"{node.op.value} of symbolic values has no sympy lowering (it selects a branch "
            "by value): give the inputs it depends on concrete values"
        ) from None


def _concrete_input(name: str, node: Node, value: Any) -> np.ndarray:
    arr = np.asarray(value)
    if arr.shape != node.shape:
        raise LoweringError(f"values[{name!r}]: shape {arr.shape}, expected {node.shape}")
    if node.dtype == "int":
        if arr.dtype.kind not in "iu":
            raise LoweringError(f"values[{name!r}]: dtype {arr.dtype}, expected integers")
        return arr.astype(np.int64)
    if node.dtype == "bool":
        if arr.dtype.kind != "b":
            raise LoweringError(f"values[{name!r}]: dtype {arr.dtype}, expected booleans")
        return arr
    return _numbers(arr)


# ---------------------------------------------------------------- the lowering
def to_sympy(
    c: Circuit,
    symbols: Mapping[str, Any] | None = None,
    values: Mapping[str, Any] | None = None,
    *,
    shift_max: str = "error",
    max_elements: int = MAX_ELEMENTS,
) -> dict[str, Any]:
    """Lower a small circuit to sympy: output name -> expression (scalar) or object array.

    Float inputs become the symbols of ``input_symbols(c)`` unless ``symbols``
    supplies expressions for them (a sympy expression for a scalar input, an
    array-like or Matrix of the input's shape otherwise) or ``values`` supplies
    numbers.  Integer and boolean inputs must be given concrete ``values``;
    integer/boolean outputs come back as plain numpy arrays.  ``shift_max`` is
    "error", "max" or "zero" (see the module docstring).
    """
    if shift_max not in ("error", "max", "zero"):
        raise LoweringError(f"shift_max must be 'error', 'max' or 'zero', got {shift_max!r}")
    total = sum(node.size for node in c.nodes)
    if total > max_elements:
        raise LoweringError(
            f"circuit has {total} scalar elements over {len(c)} nodes, more than the "
            f"{max_elements} a scalar sympy lowering is meant for; lower a smaller circuit "
            f"or raise max_elements"
        )
    symbols = dict(symbols or {})
    values = dict(values or {})
    for name in [*symbols, *values]:
        if name not in c.inputs:
            raise LoweringError(f"unknown input {name!r} (inputs: {', '.join(c.inputs)})")
    default = input_symbols(c)
    env: list[Any] = [None] * len(c.nodes)
    for i, node in c:
        if node.op is Op.INPUT:
            name = node.attrs[0]
            if name in values:
                env[i] = _concrete_input(name, node, values[name])
            elif node.dtype != "float":
                raise LoweringError(
                    f"{node.dtype} input {name!r} needs a concrete value in values= "
                    f"(only float inputs become symbols)"
                )
            elif name in symbols:
                env[i] = _given_symbols(name, node, symbols[name])
            else:
                env[i] = _obj(default[name])
            continue
        if node.op is Op.CONST:
            value = c.consts[i]
            env[i] = _numbers(value) if node.dtype == "float" else value
            continue
        ins = [env[j] for j in node.inputs]
        entry = opdef(node.op)
        if entry.family is Family.ORDER0 and node.op is not Op.SHIFT_MAX:
            env[i] = np.asarray(entry.eval([_concrete(x, node) for x in ins], node))
        elif node.dtype != "float":  # integer/boolean values are concrete: use the interpreter
            env[i] = np.asarray(entry.eval(ins, node))
        elif entry.sympy is not None:
            env[i] = _obj(entry.sympy(sp, ins, node))
        elif node.op is Op.SHIFT_MAX:
            env[i] = _shift_max(ins[0], node.attrs[0], shift_max)
        elif node.op is Op.ONE_HOT:
            env[i] = _numbers(entry.eval(ins, node))
        elif entry.family is Family.LINEAR:  # data movement: the interpreter's own definition
            env[i] = _sympify_all(entry.eval(ins, node))
        else:  # pragma: no cover - every op of the IR is handled above
            raise LoweringError(f"no sympy lowering for op {node.op.value!r}")
        if env[i].shape != node.shape:  # pragma: no cover - guards the lowering itself
            raise LoweringError(
                f"%{i} {node.op.value}: lowered to shape {env[i].shape}, expected {node.shape}"
            )
    out: dict[str, Any] = {}
    for name, nid in c.outputs.items():
        value = env[nid]
        if c.nodes[nid].dtype == "float":
            value = _sympify_all(value)
            out[name] = value[()] if value.ndim == 0 else value
        else:
            out[name] = value
    return out
