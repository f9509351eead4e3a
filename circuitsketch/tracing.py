"""Traced arrays: numpy-like values whose operations are recorded in a Circuit.

Broadcasting is made explicit here (a ``broadcast`` node) so that every
elementwise node of the IR sees operands of one shape.  Anything the IR cannot
express (Python control flow on a traced value, numpy functions we do not
know, in-place mutation) raises ``TracingError`` naming the construct and the
line of the user's program.
"""

from __future__ import annotations

import math
import os
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from circuitsketch.ir import OPS, Circuit, IRError, Op, Shape

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


class TracingError(TypeError):
    """The traced program used something a circuit cannot record."""


def user_location() -> str:
    """file:line of the innermost stack frame outside circuitsketch itself."""
    for frame in reversed(traceback.extract_stack()):
        if not os.path.abspath(frame.filename).startswith(_PACKAGE_DIR):
            return f"{frame.filename}:{frame.lineno}"
    return "<unknown>"


def fail(what: str) -> TracingError:
    return TracingError(f"{what} (at {user_location()})")


class Traced:
    """A value in a circuit under construction."""

    __slots__ = ("circuit", "id")
    __array_priority__ = 1000

    def __init__(self, circuit: Circuit, nid: int):
        self.circuit = circuit
        self.id = nid

    # -- metadata
    @property
    def shape(self) -> Shape:
        return self.circuit.nodes[self.id].shape

    @property
    def dtype(self) -> str:
        return self.circuit.nodes[self.id].dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def __repr__(self) -> str:
        return f"Traced(%{self.id}, {self.dtype}{list(self.shape)})"

    def _new(self, op: Op, inputs: Sequence[Traced], attrs: tuple = ()) -> Traced:
        try:
            return Traced(self.circuit, self.circuit.add(op, [x.id for x in inputs], attrs))
        except IRError as e:
            raise IRError(f"{e} (at {user_location()})") from None

    # -- things the IR cannot record
    def __bool__(self) -> bool:
        raise fail(
            "Python control flow (if/while/and/or/bool, min/max) on a traced value is not "
            "supported: its value is not known while tracing; select with "
            "circuitsketch.where(x > y, a, b) or use circuitsketch.maximum/minimum"
        )

    def __float__(self) -> float:
        raise fail(
            "float() of a traced value is not supported: its value is not known while tracing"
        )

    __int__ = __index__ = __float__

    # comparisons of the real order-0 parts: traced booleans for circuitsketch.where
    def __gt__(self, o):
        return _binary(Op.GREATER, self, o)

    def __ge__(self, o):
        return _binary(Op.GREATER_EQUAL, self, o)

    def __lt__(self, o):
        return _binary(Op.GREATER, o, self)

    def __le__(self, o):
        return _binary(Op.GREATER_EQUAL, o, self)

    def __setitem__(self, key, value) -> None:
        raise fail(
            "in-place mutation of a traced array (x[...] = v) is not supported; "
            "build a new array with concat/pad/where"
        )

    def __iadd__(self, other):
        return self + other

    def __array__(self, *args, **kwargs):
        raise fail("converting a traced value to a numpy array is not supported")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        fn = _ufunc(ufunc.__name__) if method == "__call__" else None
        if fn is None or kwargs:
            raise fail(f"numpy function np.{ufunc.__name__} is not supported on traced arrays")
        return fn(*inputs)

    def __array_function__(self, func, types, args, kwargs):
        fn = _ARRAY_FUNCTIONS.get(func.__name__)
        if fn is None:
            raise fail(f"numpy function np.{func.__name__} is not supported on traced arrays")
        return fn(*args, **kwargs)

    # -- arithmetic
    def __add__(self, o):
        return _binary(Op.ADD, self, o)

    def __radd__(self, o):
        return _binary(Op.ADD, o, self)

    def __sub__(self, o):
        return _binary(Op.SUB, self, o)

    def __rsub__(self, o):
        return _binary(Op.SUB, o, self)

    def __mul__(self, o):
        return _binary(Op.MUL, self, o)

    def __rmul__(self, o):
        return _binary(Op.MUL, o, self)

    def __truediv__(self, o):
        return _binary(Op.DIV, self, o)

    def __rtruediv__(self, o):
        return _binary(Op.DIV, o, self)

    def __neg__(self):
        return self._new(Op.NEG, [self])

    def __pos__(self):
        return self

    def __pow__(self, p):
        if isinstance(p, Traced):
            raise fail(
                "x ** y with a traced exponent is not supported; the exponent must be a constant"
            )
        return power(self, float(p))

    def __matmul__(self, o):
        return matmul(self, o)

    def __rmatmul__(self, o):
        return matmul(o, self)

    # -- structure
    def __len__(self) -> int:
        if not self.shape:
            raise fail("len() of a 0-d traced value")
        return self.shape[0]

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __getitem__(self, key) -> Traced:
        return _getitem(self, key)

    def reshape(self, *shape) -> Traced:
        if len(shape) == 1 and isinstance(shape[0], tuple | list):
            shape = tuple(shape[0])
        shape = tuple(int(s) for s in shape)
        if -1 in shape:
            known = int(np.prod([s for s in shape if s != -1]))
            shape = tuple(self.size // known if s == -1 else s for s in shape)
        if shape == self.shape:
            return self
        return self._new(Op.RESHAPE, [self], (shape,))

    def transpose(self, *perm) -> Traced:
        if not perm:
            perm = tuple(reversed(range(self.ndim)))
        elif len(perm) == 1 and isinstance(perm[0], tuple | list):
            perm = tuple(perm[0])
        perm = tuple(int(p) for p in perm)
        if perm == tuple(range(self.ndim)):
            return self
        return self._new(Op.TRANSPOSE, [self], (perm,))

    @property
    def T(self) -> Traced:
        return self.transpose()

    def sum(self, axis: int | None = None, keepdims: bool = False) -> Traced:
        return reduce_sum(self, axis, keepdims)

    def mean(self, axis: int | None = None, keepdims: bool = False) -> Traced:
        total = reduce_sum(self, axis, keepdims)
        count = self.size // max(total.size, 1)
        return total * (1.0 / count)


# ---------------------------------------------------------------- helpers
def circuit_of(*xs) -> Circuit:
    for x in xs:
        if isinstance(x, Traced):
            return x.circuit
    raise TracingError("no traced operand")


def lift(c: Circuit, x: Any) -> Traced:
    """A traced value for x: itself, or a constant recorded in c."""
    if isinstance(x, Traced):
        if x.circuit is not c:
            raise fail("mixing values traced into two different circuits")
        return x
    if isinstance(x, complex) or np.iscomplexobj(x):
        raise fail("complex constants are not supported in circuits")
    return Traced(
        c, c.add_const(np.asarray(x, dtype=np.float64) if isinstance(x, float | int) else x)
    )


def broadcast_to(x: Traced, shape: Shape) -> Traced:
    shape = tuple(shape)
    if x.shape == shape:
        return x
    return x._new(Op.BROADCAST, [x], (shape,))


def _binary(op: Op, a, b) -> Traced:
    c = circuit_of(a, b)
    a, b = lift(c, a), lift(c, b)
    try:
        shape = np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise fail(f"{op.value}: shapes {a.shape} and {b.shape} do not broadcast") from None
    a, b = broadcast_to(a, shape), broadcast_to(b, shape)
    return a._new(op, [a, b])


def reduce_sum(
    x: Traced, axis: int | Sequence[int] | None = None, keepdims: bool = False
) -> Traced:
    axes = range(x.ndim) if axis is None else ([axis] if isinstance(axis, int) else axis)
    axes = sorted({a % x.ndim for a in axes}, reverse=True)
    out = x
    for ax in axes:
        out = out._new(Op.SUM, [out], (ax,))
    if keepdims:
        out = out.reshape(tuple(1 if i in axes else s for i, s in enumerate(x.shape)))
    return out


def _getitem(x: Traced, key) -> Traced:
    if not isinstance(key, tuple):
        key = (key,)
    if any(k is Ellipsis or k is None for k in key) or len(key) > x.ndim:
        raise fail(f"indexing {key!r}: only integers and step-1 slices are supported")
    starts, stops, drop = [], [], []
    for ax, n in enumerate(x.shape):
        k = key[ax] if ax < len(key) else slice(None)
        if isinstance(k, Traced):
            raise fail("indexing with a traced index; use circuitsketch.gather")
        if isinstance(k, slice):
            a, b, step = k.indices(n)
            if step != 1:
                raise fail("slices with a step other than 1 are not supported")
            starts.append(a)
            stops.append(max(a, b))
        elif isinstance(k, int | np.integer):
            i = int(k) + (n if k < 0 else 0)
            if not 0 <= i < n:
                raise fail(f"index {int(k)} out of range for axis {ax} of size {n}")
            starts.append(i)
            stops.append(i + 1)
            drop.append(ax)
        else:
            raise fail(f"indexing with {type(k).__name__} is not supported")
    out = x
    if tuple(starts) != (0,) * x.ndim or tuple(stops) != x.shape:
        out = x._new(Op.SLICE, [x], (tuple(starts), tuple(stops)))
    if drop:
        out = out.reshape(tuple(s for ax, s in enumerate(out.shape) if ax not in drop))
    return out


# ---------------------------------------------------------------- public ops
def power(x: Traced, p: float) -> Traced:
    """x ** p for a constant real p (sqrt and rsqrt are p = 0.5 and -0.5)."""
    if p == 1.0:
        return x
    return x._new(Op.POW, [x], (float(p),))


def matmul(a, b) -> Traced:
    """a @ b for 2-D or batched 3-D arrays (1-D operands as vectors)."""
    c = circuit_of(a, b)
    a, b = lift(c, a), lift(c, b)
    if a.ndim == 1 and b.ndim == 2:
        return matmul(a.reshape(1, -1), b).reshape(b.shape[1])
    if a.ndim == 2 and b.ndim == 1:
        return matmul(a, b.reshape(-1, 1)).reshape(a.shape[0])
    return a._new(Op.MATMUL, [a, b])


def where(cond, a, b) -> Traced:
    """Select a where cond holds, else b: cond is a constant boolean mask or a comparison
    of traced values (``x > 0``), decided by their real order-0 parts."""
    c = circuit_of(a, b, cond)
    if isinstance(cond, Traced):
        if cond.dtype != "bool":
            raise fail("where: the condition must be boolean: a comparison such as x > y, "
                       "or a constant mask")
        m = cond
    else:
        m = lift(c, np.asarray(cond, dtype=bool))
    a, b = lift(c, a), lift(c, b)
    shape = np.broadcast_shapes(m.shape, a.shape, b.shape)
    m, a, b = broadcast_to(m, shape), broadcast_to(a, shape), broadcast_to(b, shape)
    return a._new(Op.WHERE, [m, a, b])


_UFUNCS: dict[str, Callable] = {
    "sqrt": lambda x: power(x, 0.5),
    "square": lambda x: x * x,
    "matmul": matmul,
    "less": lambda a, b: _binary(Op.GREATER, b, a),
    "less_equal": lambda a, b: _binary(Op.GREATER_EQUAL, b, a),
}


def _ufunc(name: str) -> Callable | None:
    """A numpy ufunc on traced arrays: a composite above, or the op registered under it."""
    if name in _UFUNCS:
        return _UFUNCS[name]
    entry = next((d for d in OPS.values() if d.numpy_name == name), None)
    if entry is None:
        return None
    if entry.arity == 2:
        return lambda a, b: _binary(entry.op, a, b)
    return lambda x: x._new(entry.op, [x])


_ARRAY_FUNCTIONS: dict[str, Callable] = {
    "sum": lambda x, axis=None, keepdims=False: reduce_sum(x, axis, keepdims),
    "mean": lambda x, axis=None, keepdims=False: x.mean(axis, keepdims),
    "reshape": lambda x, shape: x.reshape(shape),
    "transpose": lambda x, axes=None: x.transpose(*(axes or ())),
    "matmul": matmul,
    "dot": matmul,
    "where": where,
    "broadcast_to": broadcast_to,
}


# ---------------------------------------------------------------- tracing
class Input:
    """Declares a named input of a traced function: its shape and dtype."""

    def __init__(self, shape: Shape = (), dtype: str = "float"):
        self.shape, self.dtype = tuple(shape), dtype


def input_value(c: Circuit, name: str, spec: Input) -> Traced:
    return Traced(c, c.add_input(name, spec.shape, spec.dtype))


def set_outputs(c: Circuit, result: Any) -> None:
    """Record the function's return value(s) as named outputs."""
    if isinstance(result, dict):
        items = result.items()
    elif isinstance(result, tuple | list):
        items = ((f"out{i}", r) for i, r in enumerate(result))
    else:
        items = (("out", result),)
    for name, value in items:
        c.set_output(name, lift(c, value).id)


def trace(fn: Callable[..., Any], **inputs: Input) -> Circuit:
    """Record fn(**traced inputs) as a circuit; outputs are its return value(s).

    A dict result names the outputs; a tuple gives out0, out1, ...; a single
    value is ``out``.
    """
    c = Circuit()
    args = {name: input_value(c, name, spec) for name, spec in inputs.items()}
    set_outputs(c, fn(**args))
    c.verify()
    return c


def is_traced(x: Any) -> bool:
    return isinstance(x, Traced)


def constant(c: Circuit, value: Any) -> Traced:
    return lift(c, value)


SQRT_2 = math.sqrt(2.0)
