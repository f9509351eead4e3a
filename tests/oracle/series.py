"""Truncated power series in one variable z, for the independent scalar oracle.

Conventions
-----------
* A ``Series`` of degree K holds K+1 complex coefficients ``c[0..K]`` of
  ``c_0 + c_1 z + ... + c_K z^K``.  The coefficients are *normalised*: ``c_r``
  already includes the 1/r! (it is the Taylor coefficient, not the r-th
  derivative).  Everything is truncated at z^K.
* Arithmetic: ``+ - * /`` with another Series of the same K or with a Python /
  numpy real or complex scalar on either side; unary ``-``; ``** p`` for a
  constant real exponent p.  ``exp``, ``log``, ``erf`` and ``sqrt`` are methods.
* Nonlinear functions use the textbook recurrences obtained from an ODE
  satisfied by the function (e.g. b = exp(a) satisfies b' = a' b).  For
  ``log``, ``**`` and ``/`` the order-0 coefficient must be nonzero.
* Order-0 values: when ``c_0`` is real (imaginary part exactly 0) and inside
  the real domain, the ``math`` function is used, so a series run's ``c_0`` is
  bit-for-bit the plain float run.  ``erf`` *requires* a real ``c_0`` (raises
  otherwise) and uses ``math.erf`` of it; the derivative 2/sqrt(pi) exp(-x^2)
  gives the higher orders.

The module-level functions ``exp``, ``log``, ``erf`` and ``sqrt`` dispatch on
type: int/float -> ``math``, complex -> ``cmath`` (``erf``: real only), anything
else (``Series``, the autodiff ``Value``) -> its method.  ``real_part0(x)`` is
the real part of the order-0 value of x, as a plain float.

No scipy, nothing from the project packages: only math / cmath / numbers.
"""

from __future__ import annotations

import cmath
import math
import numbers

TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)


def _is_scalar(x) -> bool:
    return isinstance(x, numbers.Number)


def _real_value(c0: complex):
    """c0 as a float if its imaginary part is exactly zero, else None."""
    return c0.real if c0.imag == 0.0 else None


class Series:
    """Truncated power series c_0 + c_1 z + ... + c_K z^K (normalised coefficients)."""

    __slots__ = ("c",)
    __array_ufunc__ = None  # make numpy scalars defer to our reflected operators

    def __init__(self, coeffs):
        self.c = [complex(x) for x in coeffs]
        if not self.c:
            raise ValueError("a Series needs at least one coefficient")

    @classmethod
    def _raw(cls, coeffs: list) -> Series:
        s = cls.__new__(cls)
        s.c = coeffs
        return s

    # ---- constructors / accessors -------------------------------------------------
    @classmethod
    def const(cls, x, K: int) -> Series:
        """The constant x (all higher coefficients 0)."""
        return cls._raw([complex(x)] + [0j] * K)

    @classmethod
    def var(cls, c1, K: int) -> Series:
        """The series c1 * z."""
        coeffs = [0j] * (K + 1)
        if K >= 1:
            coeffs[1] = complex(c1)
        return cls._raw(coeffs)

    @property
    def K(self) -> int:
        return len(self.c) - 1

    @property
    def coeffs(self) -> list:
        return list(self.c)

    @property
    def real0(self) -> float:
        return self.c[0].real

    def __repr__(self) -> str:
        return f"Series({self.c!r})"

    def _check(self, other: Series) -> None:
        if len(other.c) != len(self.c):
            raise ValueError(f"degree mismatch: {self.K} vs {other.K}")

    # ---- linear operations ----------------------------------------------------------
    def __neg__(self) -> Series:
        return Series._raw([-a for a in self.c])

    def __pos__(self) -> Series:
        return self

    def __add__(self, other):
        if isinstance(other, Series):
            self._check(other)
            return Series._raw([a + b for a, b in zip(self.c, other.c, strict=True)])
        if _is_scalar(other):
            return Series._raw([self.c[0] + other, *self.c[1:]])
        return NotImplemented

    __radd__ = __add__

    def __sub__(self, other):
        if isinstance(other, Series):
            self._check(other)
            return Series._raw([a - b for a, b in zip(self.c, other.c, strict=True)])
        if _is_scalar(other):
            return Series._raw([self.c[0] - other, *self.c[1:]])
        return NotImplemented

    def __rsub__(self, other):
        if _is_scalar(other):
            return Series._raw([other - self.c[0], *(-a for a in self.c[1:])])
        return NotImplemented

    # ---- products and quotients -----------------------------------------------------
    def __mul__(self, other):
        if isinstance(other, Series):
            self._check(other)
            a, b = self.c, other.c
            # Cauchy product, truncated at degree K
            return Series._raw([sum(a[k] * b[n - k] for k in range(n + 1)) for n in range(len(a))])
        if _is_scalar(other):
            return Series._raw([a * other for a in self.c])
        return NotImplemented

    __rmul__ = __mul__

    def __truediv__(self, other):
        if isinstance(other, Series):
            self._check(other)
            # q = a / b  <=>  q * b = a  =>  q_n = (a_n - sum_{k=1..n} b_k q_{n-k}) / b_0
            a, b = self.c, other.c
            if b[0] == 0:
                raise ZeroDivisionError("Series division needs a nonzero order-0 term")
            q = []
            for n in range(len(a)):
                q.append((a[n] - sum(b[k] * q[n - k] for k in range(1, n + 1))) / b[0])
            return Series._raw(q)
        if _is_scalar(other):
            return Series._raw([a / other for a in self.c])
        return NotImplemented

    def __rtruediv__(self, other):
        if _is_scalar(other):
            return Series.const(other, self.K) / self
        return NotImplemented

    def _power(self, p: float, b0: complex) -> Series:
        """b = a**p given b_0; from a b' = p a' b:
        n a_0 b_n = sum_{k=1..n} (p k - (n - k)) a_k b_{n-k}."""
        a = self.c
        b = [complex(b0)]
        for n in range(1, len(a)):
            acc = sum((p * k - (n - k)) * a[k] * b[n - k] for k in range(1, n + 1))
            b.append(acc / (n * a[0]))
        return Series._raw(b)

    def __pow__(self, p):
        if isinstance(p, bool) or not isinstance(p, numbers.Real):
            raise TypeError("Series ** p needs a constant real exponent p")
        p = float(p)
        a0 = self.c[0]
        if a0 == 0:
            raise ZeroDivisionError("Series ** p needs a nonzero order-0 term")
        r = _real_value(a0)
        b0 = math.pow(r, p) if (r is not None and r > 0) else a0**p
        return self._power(p, b0)

    def sqrt(self) -> Series:
        a0 = self.c[0]
        if a0 == 0:
            raise ZeroDivisionError("Series sqrt needs a nonzero order-0 term")
        r = _real_value(a0)
        b0 = math.sqrt(r) if (r is not None and r > 0) else cmath.sqrt(a0)
        return self._power(0.5, b0)

    # ---- transcendental functions ---------------------------------------------------
    def exp(self) -> Series:
        """b = exp(a): b' = a' b  =>  n b_n = sum_{k=1..n} k a_k b_{n-k}."""
        a = self.c
        r = _real_value(a[0])
        b = [complex(math.exp(r)) if r is not None else cmath.exp(a[0])]
        for n in range(1, len(a)):
            b.append(sum(k * a[k] * b[n - k] for k in range(1, n + 1)) / n)
        return Series._raw(b)

    def log(self) -> Series:
        """b = log(a): a b' = a'  =>  n a_0 b_n = n a_n - sum_{k=1..n-1} (n-k) a_k b_{n-k}."""
        a = self.c
        if a[0] == 0:
            raise ValueError("Series log needs a nonzero order-0 term")
        r = _real_value(a[0])
        b = [complex(math.log(r)) if (r is not None and r > 0) else cmath.log(a[0])]
        for n in range(1, len(a)):
            acc = n * a[n] - sum((n - k) * a[k] * b[n - k] for k in range(1, n))
            b.append(acc / (n * a[0]))
        return Series._raw(b)

    def erf(self) -> Series:
        """b = erf(a): b' = a' g with g = 2/sqrt(pi) exp(-a^2)
        =>  n b_n = sum_{k=1..n} k a_k g_{n-k};  b_0 = math.erf(a_0) (a_0 must be real)."""
        a = self.c
        r = _real_value(a[0])
        if r is None:
            raise ValueError(f"Series erf needs a real order-0 term, got {a[0]!r}")
        g = (-(self * self)).exp() * TWO_OVER_SQRT_PI
        gc = g.c
        b = [complex(math.erf(r))]
        for n in range(1, len(a)):
            b.append(sum(k * a[k] * gc[n - k] for k in range(1, n + 1)) / n)
        return Series._raw(b)


# ---- type-dispatching scalar functions (float -> math, Series/Value -> method) ----------
def exp(x):
    if isinstance(x, numbers.Real):
        return math.exp(x)
    if isinstance(x, numbers.Complex):
        return cmath.exp(x)
    return x.exp()


def log(x):
    if isinstance(x, numbers.Real):
        return math.log(x)
    if isinstance(x, numbers.Complex):
        return cmath.log(x)
    return x.log()


def sqrt(x):
    if isinstance(x, numbers.Real):
        return math.sqrt(x)
    if isinstance(x, numbers.Complex):
        return cmath.sqrt(x)
    return x.sqrt()


def erf(x):
    if isinstance(x, numbers.Real):
        return math.erf(x)
    if isinstance(x, numbers.Complex):
        if complex(x).imag != 0.0:
            raise ValueError("erf of a non-real complex number is not supported")
        return complex(math.erf(complex(x).real))
    return x.erf()


def real_part0(x) -> float:
    """Real part of the order-0 value of a float / complex / Series / Value, as a float."""
    if isinstance(x, numbers.Real):
        return float(x)
    if isinstance(x, numbers.Complex):
        return float(complex(x).real)
    return x.real0
