"""The op registry: every entry is complete, and each rule agrees with independent readings.

* Completeness: every op has a shape rule, an evaluation, a series rule, a VJP
  (or a family that carries no gradient), a sympy lowering (or is data
  movement, lowered through its evaluation), and code (a kernel, a scalar
  expression for a generated loop, or an alias) whose series rule the
  compiler knows; exemptions are listed and must really lack the rule.
* Series rules against the interpreter by the Cauchy integral: along
  x(t) = sum_r x_r t^r, the Taylor coefficients of the complex evaluation
  f(x(t)) are (1/N) sum_k f(x(rho w^k)) w^(-rk) / rho^r (w = e^(2 pi i/N)), an
  oracle independent of every recurrence; agreement to 1e-9.
* Elementwise analytic rules against sympy's series at 30 digits (1e-12) and,
  for orders 1 and 2, against central finite differences of the evaluation.
* A deliberately wrong series rule fails the Cauchy check.
* ``tanh`` (the worked example of docs/architecture.md) is named in at most
  two source files outside tests and docs: the registry does the rest.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib

import numpy as np
import pytest
import sympy as sp

import circuitsketch as cs
from circuitsketch import series_math as sm
from circuitsketch.grad import has_gradient
from circuitsketch.interpret import evaluate, evaluate_series
from circuitsketch.ir import OPS, Family, Op
from compiler.series_rules import SERIES

ROOT = pathlib.Path(__file__).resolve().parents[1]
K = 4
IDX = np.array([2, 0, 2, 1])
MASK = np.array([[True, False, True, False]] * 3)

# one small program per op whose float inputs are its operands (pos: drawn in [0.5, 1.5])
SAMPLES: dict[Op, tuple] = {
    Op.ADD: (lambda x, y: x + y, {"x": (3, 4), "y": (3, 4)}, ()),
    Op.SUB: (lambda x, y: x - y, {"x": (3, 4), "y": (3, 4)}, ()),
    Op.MUL: (lambda x, y: x * y, {"x": (3, 4), "y": (3, 4)}, ()),
    Op.DIV: (lambda x, y: x / y, {"x": (3, 4), "y": (3, 4)}, "y"),
    Op.NEG: (lambda x: -x, {"x": (3, 4)}, ()),
    Op.EXP: (lambda x: cs.exp(x), {"x": (3, 4)}, ()),
    Op.LOG: (lambda x: cs.log(x), {"x": (3, 4)}, "x"),
    Op.POW: (lambda x: x**1.7, {"x": (3, 4)}, "x"),
    Op.TANH: (lambda x: cs.tanh(x), {"x": (3, 4)}, ()),
    Op.SIGMOID: (lambda x: cs.sigmoid(x), {"x": (3, 4)}, ()),
    Op.SUM: (lambda x: x.sum(axis=1), {"x": (3, 4)}, ()),
    Op.MATMUL: (lambda x, y: x @ y, {"x": (2, 3, 4), "y": (2, 4, 5)}, ()),
    Op.GATHER: (lambda x: cs.gather(x, IDX), {"x": (3, 4)}, ()),
    Op.SCATTER_ADD: (lambda x: cs.scatter_add(x, IDX, 5), {"x": (4, 3)}, ()),
    Op.RESHAPE: (lambda x: x.reshape(2, 6), {"x": (3, 4)}, ()),
    Op.TRANSPOSE: (lambda x: x.transpose(2, 0, 1), {"x": (2, 3, 4)}, ()),
    Op.SLICE: (lambda x: x[1:3, :2], {"x": (3, 4)}, ()),
    Op.PAD: (lambda x: cs.pad(x, (1, 0), (0, 2)), {"x": (3, 4)}, ()),
    Op.CONCAT: (lambda x, y: cs.concat([x, y], axis=1), {"x": (3, 4), "y": (3, 2)}, ()),
    Op.BROADCAST: (lambda x: x + np.zeros((3, 4)), {"x": (1, 4)}, ()),
    Op.WHERE: (lambda x, y: cs.where(MASK, x, y), {"x": (3, 4), "y": (3, 4)}, ()),
}
# ops whose series is not analytic in complex arguments: checked against sympy below
NOT_COMPLEX = {Op.ERF}
# ops with no series of their own (sources; order-0 ops read only the real order 0)
NO_SERIES = {
    op for op, e in OPS.items() if e.family in (Family.SOURCE, Family.ORDER0, Family.INDEX)
}
NO_CODE = {Op.INPUT, Op.CONST, Op.CONCAT}  # sources have a place, not code; concat is lowered


# ---------------------------------------------------------------- completeness
@pytest.mark.parametrize("op", list(Op), ids=lambda op: op.value)
def test_entry_is_complete(op):
    e = OPS[op]
    assert e.op is op and callable(e.shape)
    if e.family is Family.SOURCE:
        return
    assert callable(e.eval), "no evaluation"
    assert callable(e.series), "no series rule"
    assert (e.vjp is not None) == has_gradient(op), "a VJP exactly where gradients flow"
    if e.family in (Family.ANALYTIC, Family.BILINEAR) or op in (Op.ADD, Op.SUB, Op.NEG, Op.SUM):
        assert e.sympy is not None, "arithmetic needs its sympy lowering"
    if op in NO_CODE:
        assert e.code.kernel is None and e.code.scalar is None
        return
    assert e.code.kernel or e.code.scalar, "no code: neither a kernel nor a scalar expression"
    if op not in NO_SERIES:
        assert e.code.series in SERIES, f"series rule {e.code.series!r} unknown to the compiler"
    else:
        assert e.code.series is None


def test_every_series_op_has_a_sample():
    assert set(SAMPLES) | NOT_COMPLEX | NO_SERIES == set(Op)


# ---------------------------------------------------------------- the Cauchy-integral oracle
def _sample(op: Op, seed: int = 0):
    fn, shapes, pos = SAMPLES[op]
    c = cs.trace(fn, **{k: cs.Input(s) for k, s in shapes.items()})
    rng = np.random.default_rng(seed)
    series = {}
    for name, shape in shapes.items():
        x = np.empty((K + 1, *shape), np.complex128)
        x[0] = rng.uniform(0.5, 1.5, shape) if name in pos else rng.normal(size=shape)
        x[1:] = 0.3 * (rng.normal(size=(K, *shape)) + 1j * rng.normal(size=(K, *shape)))
        series[name] = x
    return c, series


def cauchy_coefficients(c, series: dict, n: int = 64, rho: float = 0.25) -> dict:
    """Taylor coefficients 0..K of each output along the inputs' series, by the FFT."""
    w = np.exp(2j * np.pi * np.arange(n) / n)
    runs = []
    for t in rho * w:
        point = {k: sum(v[r] * t**r for r in range(K + 1)) for k, v in series.items()}
        runs.append(evaluate(c, point, dtype=np.complex128))
    out = {}
    for name in runs[0]:
        vals = np.stack([r[name] for r in runs])
        coef = np.fft.fft(vals, axis=0) / n  # sum_k f_k w^(-rk) / n
        out[name] = coef[: K + 1] / rho ** np.arange(K + 1).reshape((-1,) + (1,) * (vals.ndim - 1))
    return out


def _check(op: Op) -> float:
    c, series = _sample(op)
    got = evaluate_series(c, series, K)
    want = cauchy_coefficients(c, series)
    errs = [np.max(np.abs(got[k] - want[k])) / max(1.0, np.max(np.abs(want[k]))) for k in want]
    return max(errs)


@pytest.mark.parametrize("op", list(SAMPLES), ids=lambda op: op.value)
def test_series_rule_matches_the_cauchy_integral(op):
    c, _ = _sample(op)
    assert op in {n.op for n in c.nodes}
    assert _check(op) < 1e-9


def test_cauchy_check_catches_a_wrong_rule(monkeypatch):
    """The oracle is sharp: exp's recurrence with one term off by 1e-7 fails it."""
    def wrong(x, n, k):
        out = sm.exp(x[0])
        out[2] *= 1.0 + 1e-7
        return out

    assert _check(Op.EXP) < 1e-9
    monkeypatch.setitem(OPS, Op.EXP, dataclasses.replace(OPS[Op.EXP], series=wrong))
    assert _check(Op.EXP) > 1e-8


# ---------------------------------------------------------------- sympy and differences
UNARY = {
    Op.EXP: 0.3, Op.LOG: 1.3, Op.POW: 1.2, Op.ERF: 0.4, Op.TANH: -0.7, Op.SIGMOID: 0.9,
    Op.NEG: 0.5,
}


def _node(op: Op):
    fn = {Op.POW: lambda x: x**1.7, Op.ERF: cs.erf, Op.NEG: lambda x: -x}.get(op)
    fn = fn or getattr(cs, op.value)
    c = cs.trace(fn, x=cs.Input(()))
    return next(n for n in c.nodes if n.op is op)


@pytest.mark.parametrize("op", list(UNARY), ids=lambda op: op.value)
def test_unary_series_matches_sympy_and_differences(op):
    node, x0 = _node(op), UNARY[op]
    dx = [x0, 0.7, -0.4, 0.25, 0.1]
    got = OPS[op].series([np.array(dx, np.complex128)], node, K)
    t = sp.Symbol("t")
    path = sum(sp.Rational(repr(v)) * t**r for r, v in enumerate(dx))
    expr = OPS[op].sympy(sp, [np.array(path, dtype=object)], node)[()]
    poly = sp.series(expr, t, 0, K + 1).removeO()
    want = [complex(sp.N(poly.coeff(t, r), 30)) for r in range(K + 1)]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)

    def f(h):
        return float(OPS[op].eval([np.array(sum(v * h**r for r, v in enumerate(dx)))], node))

    h = 1e-5
    assert math.isclose(got[1].real, (f(h) - f(-h)) / (2 * h), rel_tol=1e-7)
    h = 1e-3
    assert math.isclose(got[2].real, (f(h) - 2 * f(0.0) + f(-h)) / (2 * h * h), rel_tol=1e-5)


# ---------------------------------------------------------------- one file per op
def test_tanh_lives_in_two_source_files():
    """Adding tanh took its Op member (ir.py) and its registry entry with its public
    function (ops/elementwise.py); nothing else in the sources names it."""
    hits = sorted(
        str(p.relative_to(ROOT))
        for pkg in ("circuitsketch", "compiler", "runtime")
        for p in (ROOT / pkg).rglob("*.py")
        if "tanh" in p.read_text(encoding="utf-8").lower()
    )
    assert hits == ["circuitsketch/ir.py", "circuitsketch/ops/elementwise.py"], hits
