"""A tiny scalar reverse-mode autodiff (micrograd style) for the oracle.

Conventions
-----------
* A ``Value`` node holds ``data`` (a float, or a ``Series`` with normalised
  coefficients -- see series.py), its ordered list of children, and the local
  derivative d(node)/d(child) for each child, computed in the forward pass with
  the same scalar type as ``data``.  So with Series data the backward pass is
  itself carried out in series arithmetic: exact reverse mode, exactly as if the
  whole training step were pushed through truncated power series.
* Operands that are not ``Value`` (floats, complex numbers, Series) are
  constants: they enter the result but are not children and get no gradient.
* ``backward()`` seeds the output gradient with 1.0 and accumulates
  ``child.grad += local_grad * node.grad`` over an iterative (non-recursive)
  topological order.  Gradients start at 0.0.
* ``vsum(xs)`` is an n-ary sum (one node instead of a chain) that also works on
  plain scalars; it adds left to right.
"""

from __future__ import annotations

from . import series as S


class Value:
    __slots__ = ("_children", "_local_grads", "data", "grad")
    __array_ufunc__ = None

    def __init__(self, data, children=(), local_grads=()):
        self.data = data
        self.grad = 0.0
        self._children = children
        self._local_grads = local_grads

    def __repr__(self) -> str:
        return f"Value(data={self.data!r}, grad={self.grad!r})"

    @property
    def real0(self) -> float:
        return S.real_part0(self.data)

    # ---- arithmetic -----------------------------------------------------------------
    def __add__(self, other):
        if isinstance(other, Value):
            return Value(self.data + other.data, (self, other), (1.0, 1.0))
        return Value(self.data + other, (self,), (1.0,))

    __radd__ = __add__

    def __neg__(self):
        return Value(-self.data, (self,), (-1.0,))

    def __sub__(self, other):
        if isinstance(other, Value):
            return Value(self.data - other.data, (self, other), (1.0, -1.0))
        return Value(self.data - other, (self,), (1.0,))

    def __rsub__(self, other):
        return Value(other - self.data, (self,), (-1.0,))

    def __mul__(self, other):
        if isinstance(other, Value):
            return Value(self.data * other.data, (self, other), (other.data, self.data))
        return Value(self.data * other, (self,), (other,))

    __rmul__ = __mul__

    def __truediv__(self, other):
        if isinstance(other, Value):
            return self * other**-1
        return Value(self.data / other, (self,), (1.0 / other,))

    def __rtruediv__(self, other):
        return other * self**-1

    def __pow__(self, p):
        if isinstance(p, Value):
            raise TypeError("only constant exponents are supported")
        return Value(self.data**p, (self,), (p * self.data ** (p - 1),))

    # ---- functions ------------------------------------------------------------------
    def exp(self):
        out = S.exp(self.data)
        return Value(out, (self,), (out,))

    def log(self):
        return Value(S.log(self.data), (self,), (1.0 / self.data,))

    def sqrt(self):
        out = S.sqrt(self.data)
        return Value(out, (self,), (0.5 / out,))

    def erf(self):
        x = self.data
        return Value(S.erf(x), (self,), (S.TWO_OVER_SQRT_PI * S.exp(-(x * x)),))

    # ---- reverse mode ---------------------------------------------------------------
    def backward(self) -> None:
        # iterative post-order DFS: a node is emitted after all of its children
        topo, visited = [], set()
        stack = [(self, False)]
        while stack:
            node, children_done = stack.pop()
            if children_done:
                topo.append(node)
                continue
            if id(node) in visited:
                continue
            visited.add(id(node))
            stack.append((node, True))
            for child in reversed(node._children):
                if id(child) not in visited:
                    stack.append((child, False))
        self.grad = 1.0
        for node in reversed(topo):
            for child, local in zip(node._children, node._local_grads, strict=True):
                child.grad = child.grad + local * node.grad


def vsum(xs):
    """Sum of a list, left to right; a single n-ary node if any element is a Value."""
    xs = list(xs)
    total = xs[0].data if isinstance(xs[0], Value) else xs[0]
    for x in xs[1:]:
        total = total + (x.data if isinstance(x, Value) else x)
    kids = tuple(x for x in xs if isinstance(x, Value))
    if not kids:
        return total
    return Value(total, kids, (1.0,) * len(kids))
