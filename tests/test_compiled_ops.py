"""Every op and every generated loop kind, compiled alone, against the interpreter.

* Every op against ``evaluate`` (real, 1e-13) and against ``evaluate_series``
  (K = 3, B = 2 directions, 1e-12) for every combination of which float
  operands are series; larger operands at K = 6.
* Fused elementwise loops (order 0, and higher orders at K <= 8) give exactly
  the bits of one kernel per equation; vexp within one ulp of the C library.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np
import pytest

import circuitsketch as cs
from circuitsketch.interpret import evaluate
from circuitsketch.ir import Op
from compiler.function import CompiledCircuit
from tests.conftest import (
    assert_rel,
)
from tests.interpreter_check import check_real, check_series, series_inputs

# ================================================================ every op vs the interpreter
K_OP, B_OP = 3, 2
MASK = np.array([[True, False, True, False]] * 3)
IDX = np.array([2, 0, 2, 1])


class OpCase:
    """fn(**inputs): shapes maps name -> shape (float) or (shape, "int") with fixed values."""

    def __init__(self, name: str, fn: Callable, shapes: dict, ops: set[Op], pos=(), ints=None):
        self.name, self.fn, self.shapes, self.ops = name, fn, shapes, ops
        self.pos, self.ints = set(pos), ints or {}

    def trace(self) -> cs.Circuit:
        specs = {k: cs.Input(s) for k, s in self.shapes.items()}
        specs.update({k: cs.Input(v.shape, "int") for k, v in self.ints.items()})
        return cs.trace(self.fn, **specs)

    def values(self, rng) -> dict[str, np.ndarray]:
        out = {
            k: rng.uniform(0.5, 1.5, size=s) if k in self.pos else rng.normal(size=s)
            for k, s in self.shapes.items()
        }
        return {**out, **self.ints}


def _binary(name, fn, op, sx=(3, 4), sy=(3, 4), pos=()):
    return OpCase(name, fn, {"x": sx, "y": sy}, {op}, pos)


def _unary(name, fn, op, pos=False, shape=(3, 4)):
    return OpCase(name, fn, {"x": shape}, {op}, "x" if pos else ())


OP_CASES = [
    _binary("add", lambda x, y: x + y, Op.ADD),
    _binary("sub", lambda x, y: x - y, Op.SUB),
    _binary("mul", lambda x, y: x * y, Op.MUL),
    _binary("div", lambda x, y: x / y, Op.DIV, pos="y"),
    _binary("matmul", lambda x, y: x @ y, Op.MATMUL, sy=(4, 5)),
    _binary("matmul_3d", lambda x, y: x @ y, Op.MATMUL, (2, 3, 4), (2, 4, 5)),
    # fewer result columns than gemm.LANES: h_matmul pads its packed blocks
    _binary("matmul_narrow", lambda x, y: x @ y, Op.MATMUL, (2, 9, 5), (2, 5, 3)),
    _binary("where", lambda x, y: cs.where(MASK, x, y), Op.WHERE),
    _binary("concat", lambda x, y: cs.concat([x, y], axis=1) * 2.0, Op.CONCAT, sy=(3, 2)),
    _binary("broadcast_row", lambda x, y: x + y, Op.BROADCAST, sx=(1, 4)),
    _unary("square", lambda x: x * x, Op.MUL),
    _unary("neg", lambda x: -x, Op.NEG),
    _unary("exp", lambda x: cs.exp(x), Op.EXP),
    _unary("log", lambda x: cs.log(x), Op.LOG, pos=True),
    *[
        _unary(f"pow{p}", lambda x, p=p: x**p, Op.POW, pos=True)
        for p in (0.5, -0.5, 2.0, 1.7, 3.0, -1.0)
    ],
    _unary("erf", lambda x: cs.erf(x), Op.ERF),
    _unary("tanh", lambda x: cs.tanh(x), Op.TANH),
    _unary("sigmoid", lambda x: cs.sigmoid(x), Op.SIGMOID),
    _unary("relu", lambda x: cs.relu(x), Op.GREATER),
    _unary("abs", lambda x: cs.abs(x), Op.GREATER_EQUAL),
    _binary("maximum", lambda x, y: cs.maximum(x, y) * y, Op.WHERE),
    _binary("where_compared", lambda x, y: cs.where(x > y, x * y, 2.0), Op.GREATER),
    _unary("sum0", lambda x: x.sum(axis=0), Op.SUM),
    _unary("sum1", lambda x: x.sum(axis=1), Op.SUM),
    _unary("sum_3d", lambda x: x.sum(axis=1), Op.SUM, shape=(2, 3, 4)),
    _unary("transpose", lambda x: x.T * 1.0, Op.TRANSPOSE),
    _unary("transpose_3d", lambda x: x.transpose(2, 0, 1), Op.TRANSPOSE, shape=(2, 3, 4)),
    _unary("slice", lambda x: x[1:3, :2] * 1.0, Op.SLICE),
    _unary("pad", lambda x: cs.pad(x, (1, 0), (0, 2)) * 2.0, Op.PAD),
    _unary("broadcast", lambda x: x.sum(axis=1, keepdims=True) + x, Op.BROADCAST),
    _unary("reshape_out", lambda x: x.reshape(4, 3), Op.RESHAPE),
    _unary("reshape_mid", lambda x: cs.exp(x.reshape(2, 6)).sum(axis=0), Op.RESHAPE),
    _unary("shift_max", lambda x: x - cs.shift_max(x, axis=1), Op.SHIFT_MAX),
    _unary(
        "softmax",
        lambda x: cs.exp(x - cs.shift_max(x)) / cs.exp(x - cs.shift_max(x)).sum(1, keepdims=True),
        Op.DIV,
    ),
    _unary(
        "interface",  # an input, a constant and one node twice as outputs
        lambda x: {"same": x, "const": np.arange(3.0), "d1": x * 2.0, "d2": x * 2.0},
        Op.MUL,
    ),
    OpCase("gather", lambda x, t: cs.gather(x, t), {"x": (3, 4)}, {Op.GATHER}, ints={"t": IDX}),
    OpCase(
        "scatter_add",
        lambda x, t: cs.scatter_add(x, t, 5),
        {"x": (4, 3)},
        {Op.SCATTER_ADD},
        ints={"t": IDX},
    ),
    OpCase(
        "one_hot",
        lambda x, t: cs.one_hot(t, 3) * x,
        {"x": (4, 3)},
        {Op.ONE_HOT},
        ints={"t": np.array([2, -1, 0, 1])},
    ),
]


def _series_combos(case: OpCase) -> list[tuple[str, ...]]:
    names = list(case.shapes)
    return [s for r in range(1, len(names) + 1) for s in itertools.combinations(names, r)]


SERIES_PARAMS = [
    pytest.param(case, combo, id=f"{case.name}-{'+'.join(combo)}")
    for case in OP_CASES
    for combo in _series_combos(case)
]


def test_op_cases_cover_every_op():
    covered = set()
    for case in OP_CASES:
        ops = {n.op for n in case.trace().nodes}
        assert case.ops <= ops, f"{case.name} lacks {case.ops - ops}"
        covered |= ops
    assert covered == set(Op), f"no compiled-op case uses {set(Op) - covered}"


def check_op_real(case: OpCase, compiled=None) -> None:
    """The real op check: `compiled` (default: the case compiled at degree 0) against
    ``evaluate`` at REAL_TOL, on the case's inputs drawn with seed 0."""
    c = case.trace()
    compiled = compiled or CompiledCircuit(c, 0)
    check_real(c, compiled, case.values(np.random.default_rng(0)), case.name)


def check_op_series(case: OpCase, series: tuple[str, ...], K: int = K_OP, compiled=None) -> None:
    """The series op check: `compiled` (default: the case compiled at degree K with
    `series` as series inputs) against ``evaluate_series`` at SERIES_TOL, B_OP
    directions, on inputs drawn with seed 1."""
    c = case.trace()
    rng = np.random.default_rng(1)
    inputs = series_inputs(case.values(rng), series, K, B_OP, rng)
    compiled = compiled or CompiledCircuit(c, K, series)
    check_series(c, compiled, inputs, series, K, B_OP, f"{case.name} {series}")


@pytest.mark.parametrize("case", OP_CASES, ids=lambda c: c.name)
def test_op_compiled_real_matches_interpreter(case):
    check_op_real(case)


@pytest.mark.parametrize(
    "bad", [np.inf, -np.inf, np.nan, -np.nan], ids=["inf", "-inf", "nan", "-nan"]
)
def test_all_finite_finds_one_bad_value_anywhere(bad):
    from compiler import kernels

    edge = [np.finfo(float).max, -np.finfo(float).max, 5e-324, -0.0, 0.0, 1.0]
    x = np.array(edge * 7)
    assert kernels.all_finite(x) and kernels.all_finite_c(x.view(np.complex128))
    for pos in (0, 17, x.size - 1):
        y = x.copy()
        y[pos] = bad
        assert not kernels.all_finite(y), pos
        assert not kernels.all_finite_c(y.view(np.complex128)), pos


def test_fused_loop_keeps_a_shared_scalar_alive():
    """A fused loop reads a broadcast scalar from its source; when the broadcast is also
    read outside the loop (so it is emitted), the source must still live until the loop
    runs, or a later scalar takes its slot (found by review: y used c2's value)."""

    def f(x):
        a = x.sum()
        u = (x - a).sum()  # broadcast(a) also read by a lone sub: emitted
        c2 = cs.exp((x * x).sum())  # a later scalar that could take a's slot
        y = cs.exp(x * a) * x  # fused loop reading a
        return {"u": u, "c2": c2, "y": y}

    c = cs.trace(f, x=cs.Input((3, 4)))
    x = {"x": np.arange(12.0).reshape(3, 4) / 100}
    fused = CompiledCircuit(c, 0)
    assert "def fused_" in fused.source
    got, apart, want = fused(x), CompiledCircuit(c, 0, fused=False)(x), evaluate(c, x)
    for name in want:
        np.testing.assert_array_equal(got[name], apart[name], err_msg=name)
        assert_rel(got[name], want[name], 1e-13, f"{name} vs interpreter (1e-13)")


def test_vexp_is_within_one_ulp_of_the_c_library():
    """kernels.vexp (the order-0 exp of compiled code) against math.exp: at most one
    ulp apart over the whole range, and the same at the special values."""
    from numba import njit

    from compiler.kernels import vexp

    @njit
    def run(x):
        z = np.empty_like(x)
        for i in range(x.size):
            z[i] = vexp(x[i])
        return z

    rng = np.random.default_rng(7)
    x = np.concatenate(
        [
            rng.uniform(-750.0, 712.0, 60_000),
            rng.normal(size=60_000) * 4.0,
            rng.uniform(-1e-6, 1e-6, 5_000),
            rng.uniform(-745.2, -700.0, 20_000),  # subnormal and tiny results
            rng.uniform(700.0, 709.8, 20_000),  # near overflow
        ]
    )

    def libm(v):
        try:
            return math.exp(v)
        except OverflowError:
            return math.inf

    got, want = run(x), np.array([libm(v) for v in x])
    ulps = np.abs(got.view(np.int64) - want.view(np.int64))
    assert ulps.max() <= 1, (x[ulps.argmax()], got[ulps.argmax()], want[ulps.argmax()])
    special = [0.0, -0.0, np.inf, -np.inf, 709.782712893384, 709.7827128933841, -745.14, 5e-324]
    special += [-745.1332191019411, 1e-300, -1e-300]
    got = run(np.array(special))
    for v, g in zip(special, got, strict=True):
        assert g == libm(v), (v, g, libm(v))
    assert np.isnan(run(np.array([np.nan]))[0])


def test_erf_is_within_one_ulp_and_has_the_c_library_bits():
    """compiler/erf.py (the order-0 erf of compiled code, its own polynomials below 1.25)
    against erf correctly rounded (mpmath at 40 digits): at most one ulp apart; and against
    the C library's erf on glibc, whose algorithm and grouping it repeats: the same bits,
    written in place or not (there the library's erf is fdlibm's; other C libraries may
    round differently, within their own ulp)."""
    import platform

    import mpmath

    from compiler.erf import erf
    from compiler.layout import OUT, A, N

    rng = np.random.default_rng(11)
    x = np.concatenate([
        rng.normal(size=40_000), rng.normal(size=20_000) * 3.0, rng.uniform(-1.3, 1.3, 20_000),
        rng.uniform(-1e-8, 1e-8, 4_000), 10.0 ** rng.uniform(-320, -280, 2_000),
        [0.0, -0.0, 0.84375, -0.84375, np.nextafter(0.84375, 0.0), 1.25, np.nextafter(1.25, 0.0),
         2.0**-28, 2.0**-1015, np.nextafter(2.0**-1015, 0.0), 5e-324, -5e-324, 6.0, 1e300,
         np.inf, -np.inf, np.nan],
    ])
    code = np.zeros((1, 16), np.int64)
    code[0, N] = x.size  # operand and result at offset 0 of their arrays (A, OUT)
    assert code[0, A] == code[0, OUT] == 0
    got = np.empty_like(x)
    erf(x, got, code, 0)
    in_place = x.copy()
    erf(in_place, in_place, code, 0)
    np.testing.assert_array_equal(in_place, got)
    finite = np.isfinite(x)
    with mpmath.workdps(40):
        exact = np.array([float(mpmath.erf(mpmath.mpf(float(v)))) for v in x[finite]])
    ulps = np.abs(got[finite].view(np.int64) - exact.view(np.int64))
    assert ulps.max() <= 1, x[finite][ulps.argmax()]
    assert list(got[~finite][:2]) == [1.0, -1.0] and np.isnan(got[-1])
    libc, version = platform.libc_ver()
    if libc != "glibc":
        pytest.skip(f"the C library is {libc or 'not glibc'}: its erf may round otherwise")
    want = np.array([math.erf(v) for v in x])
    same = (got.view(np.int64) == want.view(np.int64)) | (np.isnan(got) & np.isnan(want))
    assert same.all(), (version, x[~same][:3], got[~same][:3], want[~same][:3])


def _adam_and_more(p, g, m, v, lr, bias1, bias2):
    p2, (m2, v2) = cs.Adam().update(p, g, (m, v), {"lr": lr, "bias1": bias1, "bias2": bias2})
    tail = cs.exp(p2) * cs.log(v2 + 1.0) - cs.erf(m2) ** 3.0 + cs.rsqrt(v2 + 2.0) / -p
    tail = tail * (m2 - p2) ** 2.0  # every special case of pow: 0.5, -0.5, 2, other
    tail = tail + cs.exp(p * 2.0 + m)  # no higher orders when g is the series input
    return {"p": p2, "m": m2, "v": v2, "tail": tail}


@pytest.mark.parametrize("series", [(), ("g",)], ids=["real", "series"])
def test_fused_loops_give_the_same_bits(series):
    """Fused elementwise chains (compiler/fusion.py) compute exactly what one kernel per
    equation computes (this keeps fusion.SCALAR and the order-0 kernels in step: every
    op and pow case of the table is used); in series mode only the values without
    higher orders fuse."""
    vec, one = cs.Input((5, 3)), cs.Input(())
    c = cs.trace(_adam_and_more, p=vec, g=vec, m=vec, v=vec, lr=one, bias1=one, bias2=one)
    rng = np.random.default_rng(3)
    x = {n: rng.normal(size=(5, 3)) for n in "pgm"} | {"v": rng.random((5, 3))}
    x |= {"lr": 0.01, "bias1": 0.15, "bias2": 0.01}
    K = 3 if series else 0
    if series:
        x["g"] = rng.normal(size=(2, K + 1, 5, 3)) + 1j * rng.normal(size=(2, K + 1, 5, 3))
        x["g"][:, 0] = x["g"][:, 0].real
    fused, apart = CompiledCircuit(c, K, series), CompiledCircuit(c, K, series, fused=False)
    assert "def fused_" in fused.source and "def fused_" not in apart.source
    if not series:  # the whole update and tail are a handful of loops, using every rule
        assert fused.source.count("fused_") < apart.source.count("k.") / 3
        loops = fused.source[: fused.source.index("def part_")]
        for rule in ("math.sqrt(", "(1.0 / math.sqrt(", "k.vexp(", "math.log("):
            assert rule in loops, rule
        assert "k.erf," in fused.source  # erf's own kernel, not fused: compiler/erf.py
        for rule in (" + ", " - ", " * ", " / ", "(-", " ** 3.0)"):
            assert rule in loops, rule
    got, want = fused(x, 2 if series else 1), apart(x, 2 if series else 1)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    if not series:
        check_real(c, fused, x, "fused")


@pytest.mark.parametrize("axis", [1, 0])
def test_reductions_add_in_order_four_rows_at_a_time(axis):
    """A sum or max over rows that lie in one piece runs four rows at once
    (``movement._reduce``); every output is still its elements added left to right, the
    bits of a plain loop: 9 rows (two groups of four and one left), and a sum along
    the other axis through the reduction map."""
    c = cs.trace(lambda x: {"s": x.sum(axis=axis), "m": cs.shift_max(x, axis=axis)},
                 x=cs.Input((9, 33)))
    x = np.random.default_rng(5).normal(size=(9, 33)) * np.logspace(0, 12, 33)
    got = CompiledCircuit(c, 0, ())({"x": x})
    rows = np.moveaxis(x, axis, 0).T
    want = [0.0] * len(rows)
    for i, row in enumerate(rows):
        for v in row:
            want[i] += v
    np.testing.assert_array_equal(got["s"], want)
    np.testing.assert_array_equal(got["m"].ravel(), rows.max(axis=1))


def _rows_and_columns(rows: int, width: int):
    """A bias added along columns, a masked softmax and a norm along rows, a ReLU: the
    broadcasts that fuse as a row's or a column's value, and `where`."""
    mask = np.arange(width) <= (np.arange(rows) % width)[:, None]  # causal, row by row

    def f(x, b):
        y = x + b
        shift = cs.shift_max(cs.where(mask, y, -np.inf), axis=-1)
        e = cs.where(mask, cs.exp(cs.where(mask, y - shift, 0.0)), 0.0)
        soft = e / e.sum(axis=-1, keepdims=True)
        norm = y * ((y * y).sum(axis=-1, keepdims=True) * 0.2 + 1e-5) ** -0.5
        return {"soft": soft, "norm": norm, "out": cs.relu(soft - norm)}

    return cs.trace(f, x=cs.Input((rows, width)), b=cs.Input((width,)))


@pytest.mark.parametrize(("rows", "width"), [(96, 16), (160, 10), (6, 16)])
def test_broadcasts_along_rows_and_columns_fuse_with_the_same_bits(rows, width):
    """A broadcast of a row's value (x[i // w]) or a column's (x[i % w]) is read where
    its source lies by the fused loop over rows of 16 (the shape is not square, so
    reading one as the other fails); rows of 10, which that loop runs slowly
    (``fusion.vector_rows``), are written out and read by a flat loop.  `where` fuses
    in both.  Values below ``fusion.MIN_NEW_LOOP`` elements keep the kernels (a loop of
    their own is a compile that short steps do not repay)."""
    c = _rows_and_columns(rows, width)
    rng = np.random.default_rng(4)
    x = {"x": rng.normal(size=(rows, width)), "b": rng.normal(size=width)}
    fused, apart = CompiledCircuit(c, 0, ()), CompiledCircuit(c, 0, (), fused=False)
    assert "k.take" in apart.source and "k.where" in apart.source
    big = rows * width >= 1536
    assert ("k.where" in fused.source) is not big
    by_rows = big and width == 16
    assert ("k.take" in fused.source) is not by_rows
    assert ("for row in range(n // w)" in fused.source) is by_rows
    got, want = fused(x), apart(x)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    check_real(c, fused, x, "rows and columns")


def _every_series_rule(p, g, m, v, lr, bias1, bias2):
    out = _adam_and_more(p, g, m, v, lr, bias1, bias2)
    s = g * 0.5 + m  # a series
    extra = (1.0 - s) / s + 2.0 / (s * s + 1.0)  # minus a series; series / series; x / series
    out["extra"] = extra * cs.exp(-s) - cs.log(s * s + 2.0) * v  # neg, exp, log, scale
    out["ode"] = cs.tanh(s * 0.5 + m) * cs.sigmoid(s - v) + 2.0 * s  # f' = P(f)
    return out


@pytest.mark.parametrize("K", [1, 3, 6])
def test_series_fused_loops_give_the_same_bits(K):
    """Series values fuse too at a fixed degree (compiler/series_fusion.py): the unrolled
    loop over orders 1..K gives exactly what the h_* kernels give, for every rule of
    HI_RULES (add, sub and neg with one or two series, products and quotients with
    one or two, pow with each special exponent, exp, log, the f' = P(f) rule of tanh
    and sigmoid)."""
    shape = (7, 10)
    vec, one = cs.Input(shape), cs.Input(())
    c = cs.trace(_every_series_rule, p=vec, g=vec, m=vec, v=vec, lr=one, bias1=one, bias2=one)
    rng = np.random.default_rng(4)
    x = {n: rng.normal(size=shape) for n in "pm"} | {"v": rng.random(shape)}
    x |= {"lr": 0.01, "bias1": 0.15, "bias2": 0.01}
    x["g"] = rng.normal(size=(3, K + 1, *shape)) + 1j * rng.normal(size=(3, K + 1, *shape))
    x["g"][:, 0] = rng.normal(size=shape)  # order 0 is real and shared by all directions
    fused = CompiledCircuit(c, K, ("g",))
    apart = CompiledCircuit(c, K, ("g",), fused=False)
    loops = fused.source[: fused.source.index("def part_")]
    assert loops.count("for b in range(B):") >= 2, "no fused loop over higher orders"
    assert "k.h_" not in fused.source.replace("k.h_take", "").replace("k.h_erf", "")
    got, want = fused(x, 3), apart(x, 3)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    check_series(c, fused, x, ("g",), K, 3, f"fused, K = {K}", tol=1e-11)


def test_only_long_series_chains_fuse():
    """A series loop is slow to compile: chains shorter than MIN_SERIES_MEMBERS keep
    their series equations as kernels (their order-0 parts may still fuse)."""
    from compiler.fusion import MIN_SERIES_MEMBERS, fuse
    from compiler.passes import activity

    vec, one = cs.Input((5, 3)), cs.Input(())
    short = cs.trace(lambda g, m: {"y": (g * 2.0 + m) * cs.exp(g)}, g=vec, m=vec)
    f = fuse(short, activity(short, ["g"]).hi, 3)
    assert not any(g.series for g in f.groups)
    long = cs.trace(_adam_and_more, p=vec, g=vec, m=vec, v=vec, lr=one, bias1=one, bias2=one)
    hi = activity(long, ["g"]).hi
    series = [g for g in fuse(long, hi, 3).groups if g.series]
    assert series and all(len(g.members) >= MIN_SERIES_MEMBERS for g in series)
    assert not any(g.series for g in fuse(long, hi, 0).groups)  # degree 0: never


def _series_without_needed_orders(g, m):
    a = g * 0.5 + m
    y = cs.exp(a * 0.3)  # a series whose higher orders nothing needs (only shift_max reads z)
    w = a * a
    z = y * w + a / y
    v = cs.log(w + 1.0) * 2.0 - a
    return {"out": v, "sm": cs.shift_max(z)}


def _interleaved_chains(g, p, m, lr):
    x1 = g * 0.5
    x2 = x1 + m
    s1 = g * 2.0  # a short series chain traced between the long chain's equations
    x3 = cs.exp(x2 * 0.3)
    s2 = cs.exp(s1 * 0.1)
    x4 = x3 * p
    x5 = x4 - x1
    x6 = x5 * x5
    x7 = cs.log(x6 + 1.0)
    x8 = x7 / x3
    return {"long": x8 + lr, "short": s2.sum(), "mm": x5.sum()}


def test_series_fusion_edge_cases_from_review():
    """Found by a fuzz review: (1) members that depend on the series but whose higher
    orders nothing needs got higher orders in the fused loop, which then asked for
    order-0 values nobody stored (KeyError at build time); (2) excluding a short chain's
    series values split a long chain into series groups shorter than the minimum."""
    from compiler.fusion import MIN_SERIES_MEMBERS, fuse
    from compiler.passes import activity, simplify

    vec = cs.Input((5, 3))
    c = cs.trace(_series_without_needed_orders, g=vec, m=vec)
    rng = np.random.default_rng(5)
    x = {"m": rng.normal(size=(5, 3)), "g": rng.normal(size=(2, 4, 5, 3)) + 0j}
    x["g"][:, 0] = rng.normal(size=(5, 3))
    fused = CompiledCircuit(c, 3, ("g",))
    assert "for b in range(B):" in fused.source
    got, want = fused(x, 2), CompiledCircuit(c, 3, ("g",), fused=False)(x, 2)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)

    c = simplify(cs.trace(_interleaved_chains, g=vec, p=vec, m=vec, lr=cs.Input(())))
    groups = [g for g in fuse(c, activity(c, ["g"]).hi, 3).groups if g.series]
    assert all(len(g.members) >= MIN_SERIES_MEMBERS for g in groups), groups  # was 2, 2, 7


@pytest.mark.parametrize(("case", "series"), SERIES_PARAMS)
def test_op_compiled_series_matches_interpreter(case, series):
    check_op_series(case, series)


# A higher degree and larger operands than the cases above (more than 64 elements per
# operand; matmul_big: row and column counts that are not multiples of the register tile).
HIGH_DEGREE = 6
HIGH_CASES = [
    _binary("matmul_big", lambda x, y: x @ y, Op.MATMUL, (2, 9, 7), (2, 7, 10)),
    _binary("mul_big", lambda x, y: x * y, Op.MUL, (9, 17), (9, 17)),
    _binary("div_big", lambda x, y: x / y, Op.DIV, (9, 17), (9, 17), pos="y"),
    _unary("exp_big", lambda x: cs.exp(x), Op.EXP, shape=(9, 17)),
    _unary("log_big", lambda x: cs.log(x), Op.LOG, pos=True, shape=(9, 17)),
    _unary("pow_big", lambda x: x**-0.5, Op.POW, pos=True, shape=(9, 17)),
    _unary("erf_big", lambda x: cs.erf(x), Op.ERF, shape=(9, 17)),
    _unary("tanh_big", lambda x: cs.tanh(x), Op.TANH, shape=(9, 17)),
    _unary("sigmoid_big", lambda x: cs.sigmoid(x), Op.SIGMOID, shape=(9, 17)),
]


@pytest.mark.parametrize(
    ("case", "series"),
    [
        pytest.param(case, combo, id=f"{case.name}-{'+'.join(combo)}")
        for case in HIGH_CASES
        for combo in _series_combos(case)
    ],
)
def test_high_degree_kernels_match_interpreter(case, series):
    check_op_series(case, series, K=HIGH_DEGREE)


def test_op_check_catches_a_wrong_reference_rule(monkeypatch):
    """The series op check also fails when the interpreter's own rule is wrong (exp's
    series 1e-7 off): compiled code and reference are compared, neither is trusted.
    That the check catches wrong compiled code is test_checks_are_sharp.py's job."""
    import dataclasses

    from circuitsketch import series_math
    from circuitsketch.ir import OPS

    case = next(c for c in OP_CASES if c.name == "exp")
    check_op_series(case, ("x",))
    wrong = dataclasses.replace(
        OPS[Op.EXP], series=lambda x, n, k: series_math.exp(x[0] * 1.0000001)
    )
    monkeypatch.setitem(OPS, Op.EXP, wrong)
    with pytest.raises(AssertionError, match="relative error"):
        check_op_series(case, ("x",))
