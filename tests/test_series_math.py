"""Tests for circuitsketch.series_math against sympy.

Reference coefficients are computed independently of the recurrences under test:
for a scalar function f and a series A(z) = a0 + h(z) (h(0) = 0),

    f(A(z)) = sum_{n=0..K} f^(n)(a0) / n! * h(z)**n   (mod z**(K+1)),

where the derivatives f^(n) are taken symbolically with ``sympy.diff`` and evaluated at
the exact (rational) a0 to 40 digits, and the composition is done in 40-digit mpmath
arithmetic.  This reference is itself cross-checked against ``sympy.series`` for small K
(``sympy.series`` takes minutes for exp at K=8, so it is not used directly at high K).
Polynomial products (mul, matmul) are checked against exact sympy expansion.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable

import mpmath
import numpy as np
import pytest
import sympy as sp
from numpy.polynomial import polynomial as npoly

from circuitsketch import series_math as sm

KS = (0, 1, 2, 3, 5, 8)
POWERS = (2, 0.5, -0.5, -1, 1.7, 3)
TOL = 1e-12
DPS = 40

x = sp.Symbol("x")
z = sp.Symbol("z")


# --------------------------------------------------------------------------- data
def _rng(*key: object) -> np.random.Generator:
    # built-in str hashing is salted per process; use a stable digest for reproducibility
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def random_series(
    k: int, *, key: object, shape: tuple[int, ...] = (), lead: str = "any"
) -> np.ndarray:
    """Random complex series; ``lead`` controls the order-0 coefficient.

    ``"any"``: complex normal;  ``"away"``: |a0| in [1, 2] with argument in (-2.5, 2.5)
    (away from zero and from the principal branch cut);  ``"real"``: real normal.
    """
    rng = _rng(k, key, shape, lead)
    a = rng.normal(size=(k + 1, *shape)) + 1j * rng.normal(size=(k + 1, *shape))
    if lead == "away":
        mod = rng.uniform(1.0, 2.0, size=shape)
        arg = rng.uniform(-2.5, 2.5, size=shape)
        a[0] = mod * np.exp(1j * arg)
    elif lead == "real":
        a[0] = rng.normal(size=shape) + 0j
    return a


# --------------------------------------------------------------------------- reference
def _exact(c: complex) -> sp.Expr:
    """The exact value of a complex double as a sympy number."""
    c = complex(c)
    return sp.Rational(c.real) + sp.I * sp.Rational(c.imag)


def _mpc(c: complex) -> mpmath.mpc:
    c = complex(c)
    return mpmath.mpc(c.real, c.imag)


def _mp_mul(p: list[mpmath.mpc], q: list[mpmath.mpc]) -> list[mpmath.mpc]:
    k = len(p) - 1
    return [mpmath.fsum(p[j] * q[r - j] for j in range(r + 1)) for r in range(k + 1)]


def taylor_reference(f: sp.Expr, coeffs: np.ndarray) -> list[complex]:
    """Taylor coefficients of ``f(A(z))`` (``f`` an expression in ``x``), see module doc."""
    k = len(coeffs) - 1
    a0 = _exact(coeffs[0])
    with mpmath.workdps(DPS):
        taylor = []  # f^(n)(a0) / n!
        expr = f
        for n in range(k + 1):
            value = sp.N(expr.subs(x, a0), DPS)
            re_part, im_part = value.as_real_imag()
            taylor.append(
                mpmath.mpc(mpmath.mpf(str(re_part)), mpmath.mpf(str(im_part))) / math.factorial(n)
            )
            expr = sp.diff(expr, x)
        h = [mpmath.mpc(0)] + [_mpc(c) for c in coeffs[1:]]
        # Horner in the composition: (((t_K h + t_{K-1}) h + ...) h + t_0)
        acc = [mpmath.mpc(0)] * (k + 1)
        for n in range(k, -1, -1):
            acc = _mp_mul(acc, h)
            acc[0] += taylor[n]
        return [complex(c) for c in acc]


def sympy_series_reference(f: sp.Expr, coeffs: np.ndarray) -> list[complex]:
    """Coefficients of ``sympy.series(f(A(z)), z, 0, K+1)`` (slow; small K only)."""
    k = len(coeffs) - 1
    a_z = sum(_exact(c) * z**r for r, c in enumerate(coeffs))
    expr = f.subs(x, a_z)
    s = sp.expand(sp.series(expr, z, 0, k + 1).removeO())
    return [complex(sp.N(s.coeff(z, r), DPS)) for r in range(k + 1)]


def assert_series_close(got: np.ndarray, want: list[complex] | np.ndarray, what: str) -> None:
    got = np.asarray(got)
    assert got.shape[0] == len(want), f"{what}: degree mismatch"
    for r, (g, w) in enumerate(zip(got, want, strict=True)):
        err = abs(complex(g) - complex(w)) / max(1.0, abs(complex(w)))
        assert err <= TOL, f"{what}: coefficient {r}: got {g}, want {w} (rel err {err:.3g})"


def check_against_sympy(
    impl: Callable[[np.ndarray], np.ndarray], f: sp.Expr, coeffs: np.ndarray, what: str
) -> None:
    """Compare ``impl`` on a scalar series with the sympy Taylor reference of ``f``."""
    assert_series_close(impl(coeffs), taylor_reference(f, coeffs), what)


UNARY = {
    "exp": (sm.exp, sp.exp(x), "any"),
    "log": (sm.log, sp.log(x), "away"),
    "erf": (sm.erf, sp.erf(x), "real"),
}


# --------------------------------------------------------------------------- the reference
@pytest.mark.parametrize("k", (0, 1, 2, 3))
@pytest.mark.parametrize(
    "name,f,lead",
    [
        ("exp", sp.exp(x), "any"),
        ("log", sp.log(x), "away"),
        ("erf", sp.erf(x), "real"),
        ("pow", x ** sp.Rational(17, 10), "away"),
        ("recip", 1 / x, "away"),
    ],
)
def test_reference_matches_sympy_series(k: int, name: str, f: sp.Expr, lead: str) -> None:
    a = random_series(k, key=("ref", name), lead=lead)
    assert_series_close(
        np.array(taylor_reference(f, a)), sympy_series_reference(f, a), f"reference {name}"
    )


# --------------------------------------------------------------------------- unary functions
@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_against_sympy(k: int, name: str) -> None:
    impl, f, lead = UNARY[name]
    a = random_series(k, key=name, lead=lead)
    check_against_sympy(impl, f, a, f"{name} K={k}")


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("p", POWERS)
def test_power_against_sympy(k: int, p: float) -> None:
    a = random_series(k, key=("pow", p), lead="away")
    f = x ** sp.Rational(str(p))
    check_against_sympy(lambda s: sm.power(s, p), f, a, f"power p={p} K={k}")


@pytest.mark.parametrize("k", KS)
def test_div_against_sympy(k: int) -> None:
    a = random_series(k, key="div-num")
    b = random_series(k, key="div-den", lead="away")
    with mpmath.workdps(DPS):
        recip = [_mpc(c) for c in taylor_reference(1 / x, b)]
        want = [complex(c) for c in _mp_mul([_mpc(c) for c in a], recip)]
    assert_series_close(sm.div(a, b), want, f"div K={k}")
    # and directly via sympy.series of A/B for a small K
    if k <= 3:
        a_z = sum(_exact(c) * z**r for r, c in enumerate(a))
        b_z = sum(_exact(c) * z**r for r, c in enumerate(b))
        s = sp.expand(sp.series(a_z / b_z, z, 0, k + 1).removeO())
        assert_series_close(
            sm.div(a, b), [complex(sp.N(s.coeff(z, r), DPS)) for r in range(k + 1)], "div"
        )


@pytest.mark.parametrize("k", KS)
def test_mul_against_sympy(k: int) -> None:
    a = random_series(k, key="mul-a")
    b = random_series(k, key="mul-b")
    a_z = sum(_exact(c) * z**r for r, c in enumerate(a))
    b_z = sum(_exact(c) * z**r for r, c in enumerate(b))
    prod = sp.Poly(sp.expand(a_z * b_z), z)
    want = [complex(prod.coeff_monomial(z**r)) for r in range(k + 1)]
    assert_series_close(sm.mul(a, b), want, f"mul K={k}")


@pytest.mark.parametrize("k", KS)
def test_matmul_against_sympy(k: int) -> None:
    m, inner, n = 2, 3, 2
    a = random_series(k, key="mm-a", shape=(m, inner))
    b = random_series(k, key="mm-b", shape=(inner, n))
    a_z = sp.Matrix(m, inner, lambda i, j: sum(_exact(a[r, i, j]) * z**r for r in range(k + 1)))
    b_z = sp.Matrix(inner, n, lambda i, j: sum(_exact(b[r, i, j]) * z**r for r in range(k + 1)))
    prod = (a_z * b_z).applyfunc(sp.expand)
    got = sm.matmul(a, b)
    assert got.shape == (k + 1, m, n)
    for i in range(m):
        for j in range(n):
            poly = sp.Poly(prod[i, j], z)
            want = [complex(poly.coeff_monomial(z**r)) for r in range(k + 1)]
            assert_series_close(got[:, i, j], want, f"matmul K={k} [{i},{j}]")


# --------------------------------------------------------------------------- the checker can fail
def _wrong_exp(a: np.ndarray) -> np.ndarray:
    """exp with the 1/k missing from the recurrence (deliberately wrong)."""
    out = np.empty_like(a, dtype=np.result_type(a, float))
    out[0] = np.exp(a[0])
    for k in range(1, a.shape[0]):
        out[k] = sum(j * a[j] * out[k - j] for j in range(1, k + 1))
    return out


def _wrong_power(a: np.ndarray, p: float) -> np.ndarray:
    """power with the common mistake ``(p j - k)`` instead of ``((p + 1) j - k)``."""
    out = np.empty_like(a, dtype=np.result_type(a, float))
    out[0] = a[0] ** p
    for k in range(1, a.shape[0]):
        out[k] = sum((p * j - k) * a[j] * out[k - j] for j in range(1, k + 1)) / (k * a[0])
    return out


def test_checker_rejects_wrong_exp() -> None:
    a = random_series(3, key="wrong-exp")
    with pytest.raises(AssertionError, match="coefficient 2"):
        check_against_sympy(_wrong_exp, sp.exp(x), a, "wrong exp")
    check_against_sympy(sm.exp, sp.exp(x), a, "right exp")  # same data passes


def test_checker_rejects_wrong_power() -> None:
    a = random_series(3, key="wrong-pow", lead="away")
    f = x ** sp.Rational(17, 10)
    with pytest.raises(AssertionError, match="coefficient 1"):
        check_against_sympy(lambda s: _wrong_power(s, 1.7), f, a, "wrong power")
    check_against_sympy(lambda s: sm.power(s, 1.7), f, a, "right power")


def test_checker_rejects_tiny_perturbation() -> None:
    a = random_series(5, key="perturb")
    with pytest.raises(AssertionError, match="coefficient 5"):
        check_against_sympy(
            lambda s: sm.exp(s) + np.r_[0, 0, 0, 0, 0, 1e-9], sp.exp(x), a, "perturbed exp"
        )


# --------------------------------------------------------------------------- numpy cross-checks
@pytest.mark.parametrize("k", KS)
def test_mul_matches_numpy_polymul(k: int) -> None:
    shape = (3, 4)
    a = random_series(k, key="pm-a", shape=shape)
    b = random_series(k, key="pm-b", shape=shape)
    got = sm.mul(a, b)
    for idx in np.ndindex(*shape):
        want = npoly.polymul(a[(slice(None), *idx)], b[(slice(None), *idx)])[: k + 1]
        np.testing.assert_allclose(got[(slice(None), *idx)], want, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("k", KS)
def test_matmul_matches_numpy_polymul(k: int) -> None:
    batch, m, inner, n = 2, 3, 4, 2
    a = random_series(k, key="pmm-a", shape=(batch, m, inner))
    b = random_series(k, key="pmm-b", shape=(batch, inner, n))
    got = sm.matmul(a, b)
    assert got.shape == (k + 1, batch, m, n)
    for t, i, j in np.ndindex(batch, m, n):
        want = np.zeros(k + 1, dtype=complex)
        for q in range(inner):
            want += npoly.polymul(a[:, t, i, q], b[:, t, q, j])[: k + 1]
        np.testing.assert_allclose(got[:, t, i, j], want, rtol=1e-13, atol=1e-13)


def test_matmul_broadcast_and_vectors() -> None:
    k = 3
    a = random_series(k, key="mmb-a", shape=(3, 4))  # unbatched
    b = random_series(k, key="mmb-b", shape=(5, 4, 2))  # batched
    got = sm.matmul(a, b)
    assert got.shape == (k + 1, 5, 3, 2)
    for t in range(5):
        np.testing.assert_allclose(got[:, t], sm.matmul(a, b[:, t]), rtol=1e-14, atol=1e-14)
    v = random_series(k, key="mmb-v", shape=(4,))
    w = random_series(k, key="mmb-w", shape=(4,))
    mv = sm.matmul(a, v)
    assert mv.shape == (k + 1, 3)
    np.testing.assert_allclose(mv, sm.matmul(a, v[:, :, None])[..., 0], rtol=1e-14)
    vm = sm.matmul(v, b)
    assert vm.shape == (k + 1, 5, 2)
    np.testing.assert_allclose(vm, sm.matmul(v[:, None, :], b)[..., 0, :], rtol=1e-14)
    vv = sm.matmul(v, w)
    assert vv.shape == (k + 1,)
    np.testing.assert_allclose(vv, sm.mul(v, w).sum(axis=1), rtol=1e-13)


def test_evaluate_matches_polyval() -> None:
    a = random_series(5, key="eval", shape=(2, 3))
    zs = np.array([0.3, -0.7 + 0.2j, 1.1])[:, None, None]
    got = sm.evaluate(a[:, None], zs)
    assert got.shape == (3, 2, 3)
    for idx in np.ndindex(2, 3):
        want = npoly.polyval(zs[:, 0, 0], a[(slice(None), *idx)])
        np.testing.assert_allclose(got[(slice(None), *idx)], want, rtol=1e-14)
    assert sm.evaluate(np.array([2.0, 3.0]), 0.5) == pytest.approx(3.5)


# --------------------------------------------------------------------------- vectorisation
BATCHED = {
    "exp": (sm.exp, "any"),
    "log": (sm.log, "away"),
    "erf": (sm.erf, "real"),
    "sqrt": (lambda s: sm.power(s, 0.5), "away"),
    "rsqrt": (lambda s: sm.power(s, -0.5), "away"),
    "pow1.7": (lambda s: sm.power(s, 1.7), "away"),
    "recip": (lambda s: sm.power(s, -1), "away"),
}


@pytest.mark.parametrize("name", sorted(BATCHED))
def test_unary_vectorised_matches_scalar(name: str) -> None:
    impl, lead = BATCHED[name]
    k, shape = 5, (2, 3)
    a = random_series(k, key=("vec", name), shape=shape, lead=lead)
    got = impl(a)
    assert got.shape == a.shape
    for idx in np.ndindex(*shape):
        col = (slice(None), *idx)
        np.testing.assert_allclose(got[col], impl(np.ascontiguousarray(a[col])), rtol=1e-15)


def test_binary_broadcasting() -> None:
    k = 4
    a = random_series(k, key="bc-a", shape=(3,))
    b = random_series(k, key="bc-b", shape=(2, 3), lead="away")
    for fn in (sm.mul, sm.div):
        got = fn(a, b)
        assert got.shape == (k + 1, 2, 3)
        for i, j in np.ndindex(2, 3):
            np.testing.assert_allclose(got[:, i, j], fn(a[:, j], b[:, i, j]), rtol=1e-15)


def test_real_inputs_stay_real() -> None:
    rng = np.random.default_rng(7)
    a = rng.normal(size=(4, 3))
    a[0] = rng.uniform(0.5, 2.0, size=3)
    for out in (
        sm.exp(a),
        sm.log(a),
        sm.erf(a),
        sm.power(a, 0.5),
        sm.power(a, 3),
        sm.mul(a, a),
        sm.div(a, a),
    ):
        assert out.dtype == np.float64
    np.testing.assert_allclose(sm.div(a, a), np.r_[1.0, 0, 0, 0][:, None] * np.ones(3), atol=1e-14)
    np.testing.assert_allclose(sm.exp(sm.log(a)), a, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(sm.power(sm.power(a, 0.5), 2), a, rtol=1e-13, atol=1e-13)
    assert sm.erf(a)[0] == pytest.approx([math.erf(v) for v in a[0]], rel=1e-15)


def test_int_input_promotes() -> None:
    out = sm.exp(np.array([0, 1, 0]))
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, [1.0, 1.0, 0.5])


# --------------------------------------------------------------------------- fast paths / errors
def test_power_fast_paths() -> None:
    a = random_series(4, key="fast", shape=(2,), lead="away")
    np.testing.assert_array_equal(sm.power(a, 1), a)
    np.testing.assert_array_equal(sm.power(a, 0), np.r_[1, 0, 0, 0, 0][:, None] * np.ones((1, 2)))
    np.testing.assert_allclose(sm.power(a, 2), sm.mul(a, a), rtol=1e-15)
    np.testing.assert_allclose(
        sm.power(a, -1), sm.div(np.ones_like(a) * np.r_[1, 0, 0, 0, 0][:, None], a), rtol=1e-14
    )


def test_integer_power_with_zero_leading_coefficient() -> None:
    a = random_series(5, key="zero-lead", shape=(2,))
    a[0, 0] = 0.0
    for p in (0, 1, 2, 3, 5):
        want = np.zeros_like(a)
        want[0] = 1.0
        for _ in range(p):
            want = sm.mul(want, a)
        np.testing.assert_allclose(sm.power(a, p), want, rtol=1e-13, atol=1e-13)


def test_zero_leading_coefficient_raises() -> None:
    a = random_series(3, key="zero", shape=(2,))
    a[0, 1] = 0.0
    with pytest.raises(ValueError, match="zero"):
        sm.log(a)
    with pytest.raises(ValueError, match="zero"):
        sm.div(np.ones_like(a), a)
    for p in (-1, -0.5, 0.5, 1.7):
        with pytest.raises(ValueError, match="zero"):
            sm.power(a, p)


def test_erf_complex_leading_coefficient_raises() -> None:
    a = random_series(3, key="erf-c")
    with pytest.raises(ValueError, match="imaginary"):
        sm.erf(a)


def test_degree_mismatch_raises() -> None:
    a = random_series(3, key="dm-a", shape=(2, 2))
    b = random_series(4, key="dm-b", shape=(2, 2), lead="away")
    for fn in (sm.mul, sm.div, sm.matmul):
        with pytest.raises(ValueError, match="degree"):
            fn(a, b)


def test_power_rejects_complex_exponent() -> None:
    with pytest.raises(TypeError):
        sm.power(np.ones(3), 0.5 + 1j)
