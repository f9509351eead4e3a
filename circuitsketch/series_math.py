"""Arithmetic on truncated Taylor series (forward-mode Taylor propagation).

Convention
----------
A *series value* is a numpy array ``a`` of shape ``(K + 1, *shape)``.  ``a[r]`` is the
**normalised** ``r``-th Taylor coefficient (the ``1/r!`` is already included), held
elementwise over ``*shape``, so that each element represents the truncated power series

    A(z) = a[0] + a[1] z + a[2] z**2 + ... + a[K] z**K   (mod z**(K + 1)).

``K = a.shape[0] - 1`` is the truncation degree.  Coefficients are ``float64`` or
``complex128``; results follow numpy type promotion (integers are promoted to ``float64``).

Every function below is pure numpy, vectorised over ``*shape`` (only the degree index is
looped over), costs ``O(K**2)`` elementwise operations, never forms a factorial and never
goes through ``log``/``exp`` to compute powers: each nonlinear function is computed from
the first-order linear ODE it satisfies, which yields a recurrence on the coefficients.

Binary functions require both operands to have the same ``K`` and trailing shapes that
broadcast (for :func:`matmul`, in the sense of ``np.matmul``).

Functions whose recurrence divides by the order-0 coefficient (:func:`div`, :func:`log`,
:func:`power` with a negative or non-integer exponent) raise ``ValueError`` when any
element of that coefficient is exactly zero.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "constant_series",
    "div",
    "erf",
    "evaluate",
    "exp",
    "log",
    "matmul",
    "mul",
    "ode_quadratic",
    "power",
]

Series = NDArray[Any]

_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)
_real_erf = np.vectorize(math.erf, otypes=[np.float64])


# --------------------------------------------------------------------------- helpers
def _as_series(a: ArrayLike, name: str = "a") -> Series:
    arr = np.asarray(a)
    if arr.ndim < 1 or arr.shape[0] < 1:
        raise ValueError(
            f"{name}: a series needs a leading coefficient axis of length K+1 >= 1, "
            f"got shape {arr.shape}"
        )
    if arr.dtype.kind not in "biufc":
        raise TypeError(f"{name}: unsupported dtype {arr.dtype}")
    return arr


def _result_dtype(*arrays: Series) -> np.dtype[Any]:
    return np.result_type(*arrays, np.float64)


def _check_same_degree(a: Series, b: Series) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"series truncation degrees differ: K={a.shape[0] - 1} vs K={b.shape[0] - 1}"
        )


def _check_nonzero_leading(a: Series, what: str) -> None:
    if np.any(a[0] == 0):
        raise ValueError(f"{what}: the order-0 coefficient has a zero entry")


def _align(a: Series, b: Series) -> tuple[Series, Series]:
    """Insert unit axes after the coefficient axis so both operands have the same ndim.

    Trailing shapes then broadcast exactly as numpy broadcasts ``*shape`` (right-aligned),
    while the coefficient axes stay aligned with each other.
    """
    nd = max(a.ndim, b.ndim)
    a = a.reshape(a.shape[:1] + (1,) * (nd - a.ndim) + a.shape[1:])
    b = b.reshape(b.shape[:1] + (1,) * (nd - b.ndim) + b.shape[1:])
    return a, b


def _ramp(start: int, stop: int, ndim: int) -> NDArray[np.float64]:
    """``arange(start, stop)`` shaped to broadcast against a series slice of ``ndim`` dims."""
    return np.arange(start, stop, dtype=np.float64).reshape((-1,) + (1,) * (ndim - 1))


def _cauchy_term(a: Series, b: Series, r: int) -> Series:
    """Coefficient ``r`` of the product: ``sum_{j=0..r} a[j] * b[r-j]``."""
    return (a[: r + 1] * b[r::-1]).sum(axis=0)


def constant_series(value: ArrayLike, degree: int) -> Series:
    """The series of a constant: ``value`` at order 0, zeros above (complex128)."""
    out = np.zeros((degree + 1, *np.shape(value)), dtype=np.complex128)
    out[0] = value
    return out


# --------------------------------------------------------------------------- evaluation
def evaluate(a: ArrayLike, z: ArrayLike) -> Series:
    """Evaluate ``sum_r a[r] * z**r`` by Horner's rule (``z`` broadcasts against ``*shape``)."""
    a = _as_series(a)
    z = np.asarray(z)
    out = a[-1] * np.ones_like(z)
    for r in range(a.shape[0] - 2, -1, -1):
        out = out * z + a[r]
    return out


# --------------------------------------------------------------------------- arithmetic
def mul(a: ArrayLike, b: ArrayLike) -> Series:
    """Truncated Cauchy product: ``c[r] = sum_{j=0..r} a[j] * b[r-j]``."""
    a = _as_series(a, "a")
    b = _as_series(b, "b")
    _check_same_degree(a, b)
    a, b = _align(a, b)
    big_k = a.shape[0] - 1
    shape = np.broadcast_shapes(a.shape[1:], b.shape[1:])
    out = np.empty((big_k + 1, *shape), dtype=_result_dtype(a, b))
    for r in range(big_k + 1):
        out[r] = _cauchy_term(a, b, r)
    return out


def div(a: ArrayLike, b: ArrayLike) -> Series:
    """Series quotient ``c = a / b`` by long division.

    From ``a = b c``:  ``c[k] = (a[k] - sum_{j=1..k} b[j] c[k-j]) / b[0]``.
    Raises ``ValueError`` if ``b[0]`` has a zero entry.
    """
    a = _as_series(a, "a")
    b = _as_series(b, "b")
    _check_same_degree(a, b)
    _check_nonzero_leading(b, "div")
    a, b = _align(a, b)
    big_k = a.shape[0] - 1
    shape = np.broadcast_shapes(a.shape[1:], b.shape[1:])
    out = np.empty((big_k + 1, *shape), dtype=_result_dtype(a, b))
    b0 = b[0]
    out[0] = a[0] / b0
    for k in range(1, big_k + 1):
        acc = (b[1 : k + 1] * out[k - 1 :: -1]).sum(axis=0)
        out[k] = (a[k] - acc) / b0
    return out


def _reciprocal(a: Series) -> Series:
    """``1 / a`` via the long-division recurrence (numerator 1)."""
    _check_nonzero_leading(a, "reciprocal")
    big_k = a.shape[0] - 1
    out = np.empty(a.shape, dtype=_result_dtype(a))
    inv0 = 1.0 / a[0]
    out[0] = inv0
    for k in range(1, big_k + 1):
        out[k] = -(a[1 : k + 1] * out[k - 1 :: -1]).sum(axis=0) * inv0
    return out


def exp(a: ArrayLike) -> Series:
    """``y = exp(a)``.

    From ``y' = a' y``:  ``y[0] = exp(a[0])``,
    ``y[k] = (1/k) sum_{j=1..k} j a[j] y[k-j]``.
    """
    a = _as_series(a)
    big_k = a.shape[0] - 1
    out = np.empty(a.shape, dtype=_result_dtype(a))
    out[0] = np.exp(a[0])
    for k in range(1, big_k + 1):
        ja = _ramp(1, k + 1, a.ndim) * a[1 : k + 1]
        out[k] = (ja * out[k - 1 :: -1]).sum(axis=0) / k
    return out


def log(a: ArrayLike) -> Series:
    """``y = log(a)`` (principal branch for complex ``a[0]``).

    From ``a y' = a'``:  ``y[0] = log(a[0])``,
    ``y[k] = (a[k] - (1/k) sum_{j=1..k-1} j y[j] a[k-j]) / a[0]``.
    Raises ``ValueError`` if ``a[0]`` has a zero entry.
    """
    a = _as_series(a)
    _check_nonzero_leading(a, "log")
    big_k = a.shape[0] - 1
    out = np.empty(a.shape, dtype=_result_dtype(a))
    a0 = a[0]
    out[0] = np.log(a0)
    for k in range(1, big_k + 1):
        if k > 1:
            jy = _ramp(1, k, a.ndim) * out[1:k]
            acc = (jy * a[k - 1 : 0 : -1]).sum(axis=0) / k
            out[k] = (a[k] - acc) / a0
        else:
            out[k] = a[1] / a0
    return out


def _integer_power(a: Series, n: int) -> Series:
    """``a**n`` for an integer ``n >= 0`` by binary powering with Cauchy products.

    Valid for any ``a[0]`` (including zero).
    """
    result = np.zeros(a.shape, dtype=_result_dtype(a))
    result[0] = 1.0
    base = a.astype(result.dtype, copy=False)
    while n:
        if n & 1:
            result = mul(result, base)
        n >>= 1
        if n:
            base = mul(base, base)
    return result


def power(a: ArrayLike, p: float) -> Series:
    """``y = a**p`` for a real constant ``p`` (principal branch for complex ``a[0]``).

    General case, from ``a y' = p a' y`` (compare coefficients of ``z**(k-1)``):

        y[0] = a[0]**p,
        y[k] = (1 / (k a[0])) sum_{j=1..k} ((p + 1) j - k) a[j] y[k-j].

    Fast paths:

    * ``p == 0``: the constant series 1 (``0**0 == 1``);
    * ``p == 1``: a copy of ``a``;
    * ``p == 2``: the Cauchy square ``mul(a, a)``;
    * ``p == -1``: the reciprocal via the long-division recurrence;
    * other non-negative integers ``p`` when ``a[0]`` has a zero entry: binary powering with
      Cauchy products (the recurrence would divide by zero).

    ``p == 0.5`` and ``p == -0.5`` use the general recurrence (``y[0]`` from ``np.sqrt``).
    For negative or non-integer ``p`` a zero entry in ``a[0]`` raises ``ValueError``.
    A negative *real* ``a[0]`` with non-integer ``p`` follows numpy's real ``power`` (NaN);
    pass complex coefficients to get the principal branch.
    """
    a = _as_series(a)
    if isinstance(p, complex | np.complexfloating):
        raise TypeError(f"power: the exponent must be real, got {p!r}")
    p = float(p)
    dtype = _result_dtype(a)
    if p == 0.0:
        out = np.zeros(a.shape, dtype=dtype)
        out[0] = 1.0
        return out
    if p == 1.0:
        return a.astype(dtype, copy=True)
    if p == 2.0:
        return mul(a, a)
    if p == -1.0:
        return _reciprocal(a)
    is_nonneg_int = p > 0 and p.is_integer()
    if np.any(a[0] == 0):
        if is_nonneg_int:
            return _integer_power(a, int(p))
        raise ValueError(
            f"power: the order-0 coefficient has a zero entry (exponent {p} is negative or "
            "non-integer)"
        )
    big_k = a.shape[0] - 1
    out = np.empty(a.shape, dtype=dtype)
    a0 = a[0]
    if p == 0.5:
        out[0] = np.sqrt(a0)
    elif p == -0.5:
        out[0] = 1.0 / np.sqrt(a0)
    else:
        out[0] = np.power(a0, p)
    inv_a0 = 1.0 / a0
    for k in range(1, big_k + 1):
        weights = (p + 1.0) * _ramp(1, k + 1, a.ndim) - k
        acc = (weights * a[1 : k + 1] * out[k - 1 :: -1]).sum(axis=0)
        out[k] = acc * inv_a0 / k
    return out


def erf(a: ArrayLike) -> Series:
    """``y = erf(a)``; the order-0 coefficient must be real.

    From ``y' = (2/sqrt(pi)) exp(-a**2) a'``: with ``e = exp(-a*a)``,
    ``y[0] = erf(a[0])``, ``y[k] = (2/sqrt(pi)) (1/k) sum_{j=1..k} j a[j] e[k-j]``.

    Higher coefficients may be complex.  A complex ``a[0]`` with a nonzero imaginary part
    raises ``ValueError`` (no complex ``erf`` is available without scipy).
    """
    a = _as_series(a)
    a0 = a[0]
    if np.iscomplexobj(a0):
        if np.any(a0.imag != 0):
            raise ValueError(
                "erf: the order-0 coefficient has a nonzero imaginary part; complex erf is "
                "not supported (the order-0 part must be real)"
            )
        a0 = a0.real
    big_k = a.shape[0] - 1
    out = np.empty(a.shape, dtype=_result_dtype(a))
    out[0] = _real_erf(a0)
    if big_k == 0:
        return out
    e = exp(-mul(a, a))
    for k in range(1, big_k + 1):
        ja = _ramp(1, k + 1, a.ndim) * a[1 : k + 1]
        out[k] = (ja * e[k - 1 :: -1]).sum(axis=0) * (_TWO_OVER_SQRT_PI / k)
    return out


def ode_quadratic(a: ArrayLike, c: tuple[float, float, float], y0: ArrayLike) -> Series:
    """``y = f(a)`` for an f with ``f' = P(f)``, ``P(y) = c[0] + c[1] y + c[2] y**2``.

    ``y0 = f(a[0])`` is given.  From ``y' = P(y) a'`` with ``p = P(y)``:
    ``y[k] = (1/k) sum_{j=1..k} j a[j] p[k-j]``, and ``p[k]`` follows from
    ``y[0..k]`` (``c[1] y[k] + c[2] (y*y)[k]`` for ``k >= 1``); e.g. exp is
    ``c = (0, 1, 0)`` and ``1 - y**2`` is ``(1, 0, -1)``.
    """
    a = _as_series(a)
    big_k = a.shape[0] - 1
    out = np.empty(a.shape, dtype=_result_dtype(a, np.asarray(y0)))
    out[0] = y0
    p = np.empty_like(out)
    p[0] = c[0] + c[1] * out[0] + c[2] * out[0] * out[0]
    for k in range(1, big_k + 1):
        ja = _ramp(1, k + 1, a.ndim) * a[1 : k + 1]
        out[k] = (ja * p[k - 1 :: -1]).sum(axis=0) / k
        p[k] = c[1] * out[k] + c[2] * _cauchy_term(out, out, k)
    return out


def matmul(a: ArrayLike, b: ArrayLike) -> Series:
    """Series of matrices: ``out[r] = sum_{j=0..r} a[j] @ b[r-j]``.

    ``a`` has shape ``(K+1, ..., m, k)`` and ``b`` shape ``(K+1, ..., k, n)``; batch
    dimensions broadcast as in ``np.matmul``.  As in ``np.matmul``, a 1-d operand (shape
    ``(K+1, k)``) is treated as a vector and its axis is removed from the result.
    """
    a = _as_series(a, "a")
    b = _as_series(b, "b")
    _check_same_degree(a, b)
    a_vec = a.ndim == 2
    b_vec = b.ndim == 2
    if a_vec:
        a = a[:, None, :]
    if b_vec:
        b = b[:, :, None]
    if a.ndim < 3 or b.ndim < 3:
        raise ValueError("matmul: scalar series operands are not allowed, use mul")
    a, b = _align(a, b)
    big_k = a.shape[0] - 1
    first = np.matmul(a[0], b[0])
    out = np.empty((big_k + 1, *first.shape), dtype=_result_dtype(a, b))
    out[0] = first
    for r in range(1, big_k + 1):
        out[r] = np.matmul(a[: r + 1], b[r::-1]).sum(axis=0)
    if b_vec:
        out = out[..., 0]
    if a_vec:
        out = out[..., 0, :] if not b_vec else out[..., 0]
    return out
