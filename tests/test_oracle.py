"""Self-tests of the independent scalar oracle (tests/oracle/).

* Series rules (normalised coefficients c_r = f^(r)(0)/r!) against sympy: the
  composed expression f(a(z)) is differentiated symbolically and evaluated at 30
  digits, for random complex coefficients, K up to 6.
* A deliberately wrong rule must make that comparison fail.
* The oracle's reverse-mode gradient against central finite differences.
* Series training along a direction against finite differences of real training.
Everything is kept tiny: the oracle is pure Python.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import pytest
import sympy as sp

from tests.oracle import microgpt as M
from tests.oracle import series as S

Series = S.Series

CHARS = [chr(ord("a") + i) for i in range(26)]
Z = sp.Symbol("z")


# ---- series rules vs sympy -------------------------------------------------------------
def _random_coeffs(seed: int, K: int, c0: complex) -> tuple:
    rng = np.random.default_rng(seed)
    c = rng.normal(size=K + 1) + 1j * rng.normal(size=K + 1)
    c[0] = c0
    return tuple(complex(x) for x in c)


def _sym_poly(coeffs):
    return sum(
        (sp.Rational(c.real) + sp.I * sp.Rational(c.imag)) * Z**k for k, c in enumerate(coeffs)
    )


SYMPY_RULES = {
    "exp": (lambda a, b: sp.exp(a), lambda s, t: s.exp()),
    "log": (lambda a, b: sp.log(a), lambda s, t: s.log()),
    "erf": (lambda a, b: sp.erf(a), lambda s, t: s.erf()),
    "sqrt": (lambda a, b: sp.sqrt(a), lambda s, t: s.sqrt()),
    "pow-0.5": (lambda a, b: a ** sp.Rational(-1, 2), lambda s, t: s**-0.5),
    "pow0.5": (lambda a, b: a ** sp.Rational(1, 2), lambda s, t: s**0.5),
    "pow1.7": (lambda a, b: a ** sp.Rational(17, 10), lambda s, t: s**1.7),
    "div": (lambda a, b: b / a, lambda s, t: t / s),
    "mul": (lambda a, b: a * b, lambda s, t: s * t),
}


@cache
def _sympy_reference(rule: str, a_coeffs: tuple, b_coeffs: tuple) -> tuple:
    """Normalised Taylor coefficients of rule(a(z), b(z)) by symbolic differentiation."""
    expr = SYMPY_RULES[rule][0](_sym_poly(a_coeffs), _sym_poly(b_coeffs))
    out = []
    for r in range(len(a_coeffs)):
        out.append(complex(sp.N(expr.subs(Z, 0), 30)) / math.factorial(r))
        expr = sp.diff(expr, Z)
    return tuple(out)


def _case(rule: str, K: int, seed: int):
    # a_0 away from branch cuts / zeros; real a_0 for erf (as in our use)
    c0 = 0.7 if rule == "erf" else 1.3 + 0.4j
    return _random_coeffs(seed, K, c0), _random_coeffs(seed + 1000, K, -0.4 + 0.9j)


def check_rule_against_sympy(rule: str, K: int, seed: int) -> None:
    a, b = _case(rule, K, seed)
    got = SYMPY_RULES[rule][1](Series(a), Series(b)).coeffs
    want = _sympy_reference(rule, a, b)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * max(map(abs, want)))


@pytest.mark.parametrize("K", [2, 6])
@pytest.mark.parametrize("rule", list(SYMPY_RULES))
def test_series_rules_match_sympy(rule, K):
    check_rule_against_sympy(rule, K, seed=K)


def test_wrong_rule_is_detected(monkeypatch):
    def bad_exp(self):  # forgets the factor k in n b_n = sum_k k a_k b_{n-k}
        a = self.c
        b = [complex(math.exp(a[0].real)) if a[0].imag == 0 else complex(np.exp(a[0]))]
        for n in range(1, len(a)):
            b.append(sum(a[k] * b[n - k] for k in range(1, n + 1)) / n)
        return Series(b)

    check_rule_against_sympy("exp", 6, seed=6)
    monkeypatch.setattr(Series, "exp", bad_exp)
    with pytest.raises(AssertionError):
        check_rule_against_sympy("exp", 6, seed=6)


def test_series_scalar_mixing_and_dispatch():
    K = 3
    s = Series([1.5, 0.2 - 0.1j, 0.3j, -0.4])
    for x in (2.0, np.float64(2.0), 3, 0.5 - 0.25j, np.complex128(0.5 - 0.25j)):
        for got, want in [
            (x + s, [x + s.c[0], *s.c[1:]]),
            (s - x, [s.c[0] - x, *s.c[1:]]),
            (x - s, [x - c if r == 0 else -c for r, c in enumerate(s.c)]),
            (x * s, [x * c for c in s.c]),
            (s / x, [c / x for c in s.c]),
            (x / s, (Series.const(x, K) / s).c),
        ]:
            assert isinstance(got, Series)
            np.testing.assert_allclose(got.coeffs, want, rtol=1e-15)
    assert (s / s).coeffs == pytest.approx([1, 0, 0, 0], abs=1e-15)
    np.testing.assert_allclose((-s).coeffs, [-c for c in s.c])
    assert Series.var(2.0, K).coeffs == [0, 2, 0, 0]
    assert S.real_part0(s) == 1.5 and s.real0 == 1.5 and S.real_part0(2) == 2.0
    assert S.exp(1.0) == math.exp(1.0) and S.erf(0.3) == math.erf(0.3)
    assert S.exp(s).coeffs == s.exp().coeffs
    # a real order-0 value gives bit-for-bit the math function
    assert Series.const(0.37, K).erf().c[0] == math.erf(0.37)
    assert (Series.const(0.37, K) ** -0.5).c[0] == 0.37**-0.5
    with pytest.raises(ValueError):
        Series([0.3 + 1e-3j, 1.0]).erf()


# ---- model: tokens, gradients ----------------------------------------------------------
def random_params(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {name: rng.normal(0.0, 0.08, shape) for name, shape in M.PARAM_SHAPES.items()}


def test_vocab_and_tokens():
    chars = M.vocab_from_corpus(["emma\n", "", "  olivia ", "ava"])
    assert chars == ["a", "e", "i", "l", "m", "o", "v"]
    assert M.tokenize("ava", chars) == [7, 0, 6, 0, 7]
    assert sum(math.prod(s) for s in M.PARAM_SHAPES.values()) == 4192


def test_gradient_matches_finite_differences():
    params = random_params(0)
    tokens = M.tokenize("emma", CHARS)
    loss, grads = M.doc_loss_and_grad(params, tokens)
    assert loss == M.doc_loss(params, tokens)
    rng = np.random.default_rng(1)
    h = 1e-6
    for name in M.PARAM_SHAPES:
        g = np.array(grads[name])
        # the largest-gradient coordinate and one random coordinate with a sizeable gradient
        big = np.flatnonzero(np.abs(g) > 0.1 * np.abs(g).max())
        for flat in {int(np.argmax(np.abs(g))), int(rng.choice(big))}:
            idx = np.unravel_index(flat, g.shape)
            plus = {k: v.copy() for k, v in params.items()}
            minus = {k: v.copy() for k, v in params.items()}
            plus[name][idx] += h
            minus[name][idx] -= h
            fd = (M.doc_loss(plus, tokens) - M.doc_loss(minus, tokens)) / (2 * h)
            assert fd == pytest.approx(g[idx], rel=1e-6), (name, idx)


def test_series_forward_and_gradient_agree():
    """c_1 of the loss along params + z*d equals <grad, d>; c_0 equals the real loss."""
    params = random_params(2)
    tokens = M.tokenize("ava", CHARS)
    loss, grads = M.doc_loss_and_grad(params, tokens)
    rng = np.random.default_rng(3)
    K = 2
    series_params, directional = {}, 0.0
    for name, p in params.items():
        d = rng.normal(size=p.shape)
        arr = np.zeros((K + 1, *p.shape), dtype=np.complex128)
        arr[0], arr[1] = p, d
        series_params[name] = arr
        directional += float(np.sum(d * np.array(grads[name])))
    c = M.doc_loss(series_params, tokens).coeffs
    assert c[0] == loss
    assert c[1] == pytest.approx(directional, rel=1e-12)


# ---- series training vs finite differences of real training ---------------------------
DOCS = ["ava", "emma", "leo"]
HELD_OUT = "mia"


def _trained_test_loss(params, weights, K=None):
    docs = [M.tokenize(d, CHARS) for d in DOCS]
    final, _, _, _ = M.train(params, docs, 3, weights, K=K)
    return M.test_loss(final, M.tokenize(HELD_OUT, CHARS))


def test_series_training_matches_finite_differences():
    params = random_params(4)
    psi = np.array([0.6, -0.48, 0.64])  # a real unit direction
    K = 2
    c = _trained_test_loss(params, [Series.var(p, K) for p in psi], K=K).coeffs
    f0 = _trained_test_loss(params, [0.0, 0.0, 0.0])
    assert c[0].imag == 0 and c[0].real == pytest.approx(f0, rel=1e-13)
    assert max(abs(x.imag) for x in c) == 0.0  # real direction -> real series
    h = 1e-4
    fp = _trained_test_loss(params, list(h * psi))
    fm = _trained_test_loss(params, list(-h * psi))
    assert c[1].real == pytest.approx((fp - fm) / (2 * h), rel=1e-5)
    h2 = 1e-3
    fp2 = _trained_test_loss(params, list(h2 * psi))
    fm2 = _trained_test_loss(params, list(-h2 * psi))
    assert c[2].real == pytest.approx((fp2 - 2 * f0 + fm2) / (2 * h2 * h2), rel=1e-5)


def test_complex_direction_is_linear_in_c1():
    """c_1 along a complex psi is <grad F, psi>: real FD along Re psi plus i times Im psi."""
    params = random_params(5)
    psi = np.array([0.3 + 0.5j, -0.2 + 0.1j, 0.6 - 0.5j])
    psi /= np.linalg.norm(psi)
    c = _trained_test_loss(params, [Series.var(p, 1) for p in psi], K=1).coeffs
    h = 1e-4
    fd = 0j
    for part, unit in ((psi.real, 1.0), (psi.imag, 1j)):
        fp = _trained_test_loss(params, list(h * part))
        fm = _trained_test_loss(params, list(-h * part))
        fd += unit * (fp - fm) / (2 * h)
    assert c[1] == pytest.approx(fd, rel=1e-5)


def test_train_outputs_and_to_array():
    params = random_params(6)
    docs = [M.tokenize(d, CHARS) for d in DOCS[:2]]
    final, losses, m, v = M.train(params, docs, 2, [0.0, 0.5])
    assert len(losses) == 2 and losses[0] == M.doc_loss(params, docs[0])
    arr = M.to_array(final)
    assert arr["wte"].dtype == np.float64 and arr["wte"].shape == (27, 16)
    # wte rows of unused tokens only move through Adam's zero-gradient update (i.e. not at all)
    np.testing.assert_array_equal(arr["wte"][25], params["wte"][25])
    assert not np.array_equal(arr["lm_head"], params["lm_head"])
    assert not M.to_array(m)["wte"][25].any() and (M.to_array(v)["lm_head"] > 0).all()
    sfinal, slosses, _, _ = M.train(params, docs, 2, [Series.const(0.0, 2), Series.var(1.0, 2)], 2)
    sarr = M.to_array(sfinal)
    assert sarr["lm_head"].shape == (3, 27, 16) and sarr["lm_head"].dtype == np.complex128
    np.testing.assert_array_equal(
        sarr["lm_head"][0].real, M.to_array(M.train(params, docs, 2, [0.0, 0.0])[0])["lm_head"]
    )
    assert slosses[1].coeffs[1] == pytest.approx(
        -M.doc_loss(M.as_scalars(M.train(params, docs, 1, [0.0, 0.0])[0]), docs[1])
    )
