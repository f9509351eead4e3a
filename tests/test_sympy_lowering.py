"""Tests of circuitsketch.sympy_lowering: traced circuits against hand-written sympy formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy as sp

import circuitsketch as cs
from circuitsketch.interpret import evaluate
from circuitsketch.ir import Op
from circuitsketch.sympy_lowering import LoweringError, input_symbols, sympy_number, to_sympy

X, Y = sp.symbols("x y")


def _is_zero(e: sp.Expr) -> bool:
    return sp.simplify(e) == 0


# ---------------------------------------------------------------- elementwise ops
ELEMENTWISE = [
    ("add", lambda x, y: x + y, X + Y),
    ("sub", lambda x, y: x - y, X - Y),
    ("mul", lambda x, y: x * y, X * Y),
    ("div", lambda x, y: x / y, X / Y),
    ("neg", lambda x, y: -x, -X),
    ("exp", lambda x, y: cs.exp(x), sp.exp(X)),
    ("log", lambda x, y: cs.log(y), sp.log(Y)),
    ("pow", lambda x, y: x**2, X**2),
    ("pow", lambda x, y: cs.sqrt(x), sp.sqrt(X)),
    ("pow", lambda x, y: cs.rsqrt(y), 1 / sp.sqrt(Y)),
    ("pow", lambda x, y: x**3, X**3),
    ("pow", lambda x, y: x**-1.5, X ** sp.Rational(-3, 2)),
    ("erf", lambda x, y: cs.erf(x), sp.erf(X)),
    (
        "gelu",
        lambda x, y: x * (0.5 * (1.0 + cs.erf(x * (1.0 / math.sqrt(2.0))))),
        X * (1 + sp.erf(X * sp.Float(1 / math.sqrt(2.0), precision=53))) / 2,
    ),
]


@pytest.mark.parametrize(
    ("op", "fn", "expected"), ELEMENTWISE, ids=[f"{e[0]}-{k}" for k, e in enumerate(ELEMENTWISE)]
)
def test_elementwise_scalar(op, fn, expected):
    c = cs.trace(fn, x=cs.Input(()), y=cs.Input(()))
    if op != "gelu":
        assert op in c.op_counts()
    got = to_sympy(c)["out"]
    assert isinstance(got, sp.Expr)
    assert _is_zero(got - expected), (got, expected)


@pytest.mark.parametrize(
    ("op", "fn", "expected"),
    ELEMENTWISE[:7] + ELEMENTWISE[-2:-1],
    ids=[e[0] for e in ELEMENTWISE[:7] + ELEMENTWISE[-2:-1]],
)
def test_elementwise_arrays(op, fn, expected):
    c = cs.trace(fn, x=cs.Input((2, 3)), y=cs.Input((2, 3)))
    got = to_sympy(c)["out"]
    assert got.shape == (2, 3)
    for i, j in np.ndindex(2, 3):
        sub = {X: sp.Symbol(f"x_{i}_{j}"), Y: sp.Symbol(f"y_{i}_{j}")}
        assert _is_zero(got[i, j] - expected.xreplace(sub))


def test_pow_exponents_are_exact():
    c = cs.trace(lambda x: x**0.5 + x**-0.5 + x**2.0 + x**0.25, x=cs.Input(()))
    pow_nodes = {n.attrs[0] for n in c.nodes if n.op is Op.POW}
    assert pow_nodes == {0.5, -0.5, 2.0, 0.25}
    got = to_sympy(c)["out"]
    assert got == sp.sqrt(X) + 1 / sp.sqrt(X) + X**2 + X ** sp.Rational(1, 4)


def test_constants():
    assert sympy_number(0.5) == sp.Rational(1, 2) and sympy_number(3.0) == 3
    assert sympy_number(1 / 12) == sp.Rational(1, 12) and sympy_number(0.1) == sp.Rational(1, 10)
    v = 1 / math.sqrt(2.0)
    assert isinstance(sympy_number(v), sp.Float) and float(sympy_number(v)) == v
    assert sympy_number(-math.inf) == -sp.oo and sympy_number(math.nan) is sp.nan
    c = cs.trace(lambda x: 0.25 * x - 3.0, x=cs.Input(()))
    assert to_sympy(c)["out"] == X / 4 - 3


# ---------------------------------------------------------------- structure ops
def test_matmul_sum_transpose_reshape_broadcast():
    def f(a, b, v):
        ab = a @ b
        return {
            "mmT": ab.T,
            "flat": ab.reshape(4),
            "colsum": a.sum(axis=0),
            "bcast": a + v,
            "total": (a * v).sum(),
            "batched": cs.matmul(cs.stack([a, 2.0 * a]), cs.stack([b, b])),
        }

    c = cs.trace(f, a=cs.Input((2, 3)), b=cs.Input((3, 2)), v=cs.Input((3,)))
    out = to_sympy(c)
    A = sp.Matrix(2, 3, lambda i, j: sp.Symbol(f"a_{i}_{j}"))
    B = sp.Matrix(3, 2, lambda i, j: sp.Symbol(f"b_{i}_{j}"))
    V = sp.Matrix(1, 3, lambda i, j: sp.Symbol(f"v_{j}"))
    AB = A * B

    def same(got: np.ndarray, want: sp.Matrix) -> None:
        assert sp.Matrix(got.tolist()).shape == want.shape
        assert sp.simplify(sp.Matrix(got.tolist()) - want) == sp.zeros(*want.shape)

    same(out["mmT"], AB.T)
    same(out["flat"].reshape(1, 4), AB.reshape(1, 4))
    same(out["colsum"].reshape(1, 3), sp.ones(1, 2) * A)
    same(out["bcast"], A + sp.ones(2, 1) * V)
    assert _is_zero(out["total"] - sum(A[i, j] * V[0, j] for i in range(2) for j in range(3)))
    same(out["batched"][0], AB)
    same(out["batched"][1], 2 * AB)


def test_index_ops_with_concrete_values():
    def f(table, tokens, targets):
        e = cs.gather(table, tokens)  # rows 2, 0, 2
        padded = cs.pad(e, (1, 0), (0, 1))  # (4, 3)
        joined = cs.concat([padded[1:, 1:], e], axis=1)  # (3, 4): e[:, 1], 0, e[:, 0], e[:, 1]
        masked = cs.where(np.array([True, False, True, False]), joined, -joined)
        onehot = cs.one_hot(targets, 2) * e[:2, :2]
        back = cs.scatter_add(e, tokens, 3)
        return {"masked": masked, "onehot": onehot.sum(), "back": back}

    c = cs.trace(
        f, table=cs.Input((3, 2)), tokens=cs.Input((3,), "int"), targets=cs.Input((2,), "int")
    )
    tokens, targets = np.array([2, 0, 2]), np.array([1, -1])
    out = to_sympy(c, values={"tokens": tokens, "targets": targets})
    t = input_symbols(c)["table"]
    rows = [t[2], t[0], t[2]]
    want = [[rows[r][1], 0, rows[r][0], -rows[r][1]] for r in range(3)]
    assert out["masked"].tolist() == want
    assert out["onehot"] == t[2, 1]  # target 1 of row 0, target -1 is a zero row
    assert out["back"].tolist() == [list(t[0]), [0, 0], list(2 * t[2])]
    assert all(isinstance(e, sp.Basic) for e in out["back"].flat)


def test_custom_symbols_and_values():
    c = cs.trace(lambda x, y: x * y + cs.exp(y), x=cs.Input((2,)), y=cs.Input(()))
    s = sp.Symbol("s")
    out = to_sympy(c, symbols={"x": sp.Matrix([s, s**2]), "y": sp.log(s)})["out"]
    assert _is_zero(out[0] - (s * sp.log(s) + s)) and _is_zero(out[1] - (s**2 * sp.log(s) + s))
    out = to_sympy(c, values={"y": 0.5})["out"]
    assert out[1] == sp.Symbol("x_1") / 2 + sp.exp(sp.Rational(1, 2))


# ---------------------------------------------------------------- agreement with the interpreter
def _model(x, w, b, g):
    h = cs.matmul(x, w) + b  # (3, 4)
    ms = (h * h).mean(axis=-1, keepdims=True)
    n = h * cs.rsqrt(ms + 1e-5) * g
    act = n * (0.5 * (1.0 + cs.erf(n * (1.0 / math.sqrt(2.0)))))
    e = cs.exp(act)
    p = e / e.sum(axis=-1, keepdims=True)
    return {"loss": -cs.log(p[:, 1:3]).mean() + cs.sqrt(g * g + 1.0).sum(), "p": p.T}


def test_lowering_matches_interpreter():
    c = cs.trace(_model, x=cs.Input((3, 2)), w=cs.Input((2, 4)), b=cs.Input((4,)), g=cs.Input(()))
    symbols = input_symbols(c)
    flat = [s for v in symbols.values() for s in np.asarray(v, dtype=object).flat]
    out = to_sympy(c)
    fns = {
        name: [sp.lambdify(flat, e, modules="math") for e in np.asarray(v, dtype=object).flat]
        for name, v in out.items()
    }
    rng = np.random.default_rng(0)
    for _ in range(3):
        inputs = {name: rng.normal(size=c.input_shape(name)) for name in c.inputs}
        args = [float(v) for name in symbols for v in np.asarray(inputs[name]).flat]
        want = evaluate(c, inputs)
        for name, fs in fns.items():
            got = np.array([f(*args) for f in fs]).reshape(np.shape(want[name]))
            np.testing.assert_allclose(got, want[name], rtol=1e-12, atol=1e-12)
    # and at 30 digits: substituting 30-digit Floats evaluates the tree exactly once
    at = out["loss"].xreplace({s: sp.Float(a, 30) for s, a in zip(flat, args, strict=True)})
    assert abs(float(sp.N(at, 30)) - float(want["loss"])) < 1e-12


@pytest.mark.parametrize("mode", ["zero", "max"])
def test_shift_max_modes(mode):
    def softmax(x):
        z = x - cs.shift_max(x, axis=-1)
        e = cs.exp(z)
        return e / e.sum(axis=-1, keepdims=True)

    c = cs.trace(softmax, x=cs.Input((2, 3)))
    symbols = input_symbols(c, real=True)  # real symbols: re(x) -> x for the Max
    out = to_sympy(c, symbols=symbols, shift_max=mode)
    flat = list(symbols["x"].flat)
    x = np.random.default_rng(1).normal(size=(2, 3)) * 5
    got = np.array(
        [[float(sp.lambdify(flat, e, "math")(*x.flat)) for e in row] for row in out["out"]]
    )
    np.testing.assert_allclose(got, evaluate(c, {"x": x})["out"], rtol=1e-12, atol=1e-15)
    if mode == "zero":
        assert _is_zero(out["out"][0, 0] - sp.exp(flat[0]) / sum(map(sp.exp, flat[:3])))


# ---------------------------------------------------------------- refusals
def test_errors():
    sm = cs.trace(lambda x: cs.shift_max(x), x=cs.Input((3,)))
    with pytest.raises(LoweringError, match="shift_max"):
        to_sympy(sm)
    idx = cs.trace(lambda t, i: cs.gather(t, i), t=cs.Input((3, 2)), i=cs.Input((2,), "int"))
    with pytest.raises(LoweringError, match="int input 'i' needs a concrete value"):
        to_sympy(idx)
    with pytest.raises(LoweringError, match="shape"):
        to_sympy(idx, values={"i": np.array([0, 1, 2])})
    with pytest.raises(LoweringError, match="unknown input"):
        to_sympy(idx, values={"nope": 1})
    with pytest.raises(LoweringError, match="symbols\\['t'\\]: shape"):
        to_sympy(idx, symbols={"t": sp.Matrix([1, 2])}, values={"i": np.array([0, 1])})
    big = cs.trace(lambda a, b: a @ b, a=cs.Input((50, 50)), b=cs.Input((50, 50)))
    with pytest.raises(LoweringError, match="scalar elements"):
        to_sympy(big)
