"""The compiler (generated Numba code) against the interpreter and the scalar oracle.

* Every op, compiled alone, against ``evaluate`` (real, 1e-13) and against
  ``evaluate_series`` (K = 3, B = 2 directions, 1e-12) for every combination
  of which float operands are series.
* microgpt: degree-0 compiled training against the interpreter and the oracle
  (1e-12); degree-K series training (K = 1, 3, 6) against the oracle's series
  training (1e-9 per coefficient); batching and the order-0 run bit for bit;
  c_1 (and c_2) against finite differences of compiled real retraining.
* Blow-ups raise NonFiniteError naming the step and the equation.

The microgpt programs come from the session fixtures of conftest.py (one
generated module per degree, compiled once and cached on disk).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np
import pytest

import circuitsketch as cs
from circuitsketch import program as P
from circuitsketch.interpret import evaluate
from circuitsketch.ir import Op
from circuitsketch.optim import SGD
from circuitsketch.program import Program, Step, build_output_circuit, build_step_circuit
from compiler.compiled import CompiledProgram, output_from_params, params_of
from compiler.diagnose import NonFiniteError
from compiler.function import CompiledCircuit
from tests.conftest import (
    DOCS,
    HELD_OUT,
    HELD_OUT_LONG,
    ORACLE_K,
    SERIES_DEGREES,
    WEIGHTS,
    B,
    T,
    assert_rel,
    directions,
    rel_err,
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
        loops = fused.source[: fused.source.index("def f_part0")]
        for rule in ("math.sqrt(", "(1.0 / math.sqrt(", "k.vexp(", "math.log(", "math.erf("):
            assert rule in loops, rule
        for rule in (" + ", " - ", " * ", " / ", "(-", " ** 3.0)"):
            assert rule in loops, rule
    got, want = fused(x, 2 if series else 1), apart(x, 2 if series else 1)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    if not series:
        check_real(c, fused, x, "fused")


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
    loops = fused.source[: fused.source.index("def f_part0")]
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


# ================================================================ microgpt, degree 0
@pytest.fixture(scope="module")
def real_run(compiled):
    cp = compiled(0)
    state, losses = cp.train(WEIGHTS)
    return cp.unpack_state(state), losses


def test_compiled_training_matches_interpreter(program, real_run):
    state, losses = real_run
    i_state, i_losses = P.train(program, WEIGHTS)
    assert losses.shape == (T,)
    assert_rel(losses, i_losses, 1e-12, "losses vs interpreter (1e-12)")
    assert set(state) == set(i_state)
    for name, arr in i_state.items():
        assert_rel(state[name], arr, 1e-12, f"final {name} vs interpreter (1e-12)")


def test_compiled_training_matches_oracle(real_run, oracle_real):
    state, losses = real_run
    o_params, o_losses, o_m, o_v = oracle_real
    for s in range(T):
        assert_rel(losses[s], o_losses[s], 1e-12, f"loss of step {s} vs oracle (1e-12)")
    for name, arr in o_params.items():
        assert_rel(state[name], arr, 1e-12, f"final {name} vs oracle (1e-12)")
        assert_rel(state[f"adam_m.{name}"], o_m[name], 1e-12, f"adam m of {name} (1e-12)")
        assert_rel(state[f"adam_v.{name}"], o_v[name], 1e-12, f"adam v of {name} (1e-12)")


@pytest.mark.parametrize("doc", [HELD_OUT, HELD_OUT_LONG])
def test_compiled_output_matches_oracle(compiled, oracle_real, chars, doc):
    from tests.oracle import microgpt as OM

    cp = compiled(0)
    state, _ = cp.train(WEIGHTS)
    got = cp.output(state, doc)
    assert isinstance(got, float | np.floating)
    assert_rel(got, OM.test_loss(oracle_real[0], OM.tokenize(doc, chars)), 1e-12, doc)


def test_compiled_training_resumes(compiled):
    """Running steps 0..7 then 7..T equals one run (state hand-over between calls)."""
    cp = compiled(0)
    full, losses = cp.train(WEIGHTS)
    mid, first = cp.train(WEIGHTS, stop=7)
    end, rest = cp.train(WEIGHTS, state=mid, start=7)
    np.testing.assert_array_equal(end, full)
    np.testing.assert_array_equal(np.concatenate([first, rest]), losses)


def test_compiled_argument_errors(compiled):
    cp0, cp1 = compiled(0), compiled(1)
    with pytest.raises(ValueError, match="weights: shape"):
        cp0.train(np.zeros(3))
    with pytest.raises(ValueError, match="degree >= 1"):
        cp0.train_series(directions())
    with pytest.raises(ValueError, match="degree-0"):
        cp1.train()
    with pytest.raises(ValueError, match="needs the higher orders"):
        cp1.output(cp0.train()[0], HELD_OUT)
    with pytest.raises(ValueError, match="directions: shape"):
        cp1.train_series(np.ones((2, 3)))


# ================================================================ microgpt, series
@pytest.fixture(scope="module")
def series_runs(compiled):
    """degree -> (order-0 state, hi, losses, test-loss coefficients (B, K+1)) for B directions."""
    psi = directions()
    out = {}
    for K in SERIES_DEGREES:
        cp = compiled(K)
        s0, hi, losses = cp.train_series(psi)
        out[K] = (s0, hi, losses, cp.output(s0, HELD_OUT, hi))
    return out


@pytest.mark.parametrize("K", SERIES_DEGREES)
def test_series_test_loss_matches_oracle(series_runs, oracle_series, K):
    _, _, _, coeffs = series_runs[K]
    want = oracle_series[1][: K + 1]
    assert coeffs.shape == (B, K + 1)
    for r in range(K + 1):
        err = abs(coeffs[0, r] - want[r]) / abs(want[r])
        assert err <= 1e-9, f"K={K}: c_{r} = {coeffs[0, r]} vs oracle {want[r]}: {err:.2e} > 1e-9"
    assert np.all(np.abs(want[1:]) > 1e-8), "oracle coefficients too small to be a test"


@pytest.mark.parametrize("K", SERIES_DEGREES)
def test_series_parameters_match_oracle(compiled, series_runs, oracle_series, K):
    """The final parameters' series (orders 0..K) along direction 0, tensor by tensor."""
    cp = compiled(K)
    s0, hi, _, _ = series_runs[K]
    state, his = cp.unpack_state(s0), cp.unpack_hi(hi, B)
    for name, want in oracle_series[0].items():
        assert_rel(state[name], want[0].real, 1e-12, f"K={K}: order 0 of {name} (1e-12)")
        for r in range(1, K + 1):
            assert_rel(his[name][0, r - 1], want[r], 1e-9, f"K={K}: order {r} of {name} (1e-9)")


@pytest.mark.parametrize("K", SERIES_DEGREES)
def test_series_batch_equals_single_runs_exactly(compiled, series_runs, K):
    cp = compiled(K)
    s0, hi, losses, coeffs = series_runs[K]
    psi = directions()
    batched = cp.unpack_hi(hi, B)
    for b in range(B):
        s0_b, hi_b, losses_b = cp.train_series(psi[b : b + 1])
        assert np.array_equal(s0_b, s0), f"K={K}: order 0 of direction {b} differs"
        assert np.array_equal(losses_b, losses)
        single = cp.unpack_hi(hi_b, 1)
        for name, v in single.items():
            assert np.array_equal(v[0], batched[name][b]), f"K={K}: {name}, direction {b}"
        assert np.array_equal(cp.output(s0_b, HELD_OUT, hi_b)[0], coeffs[b]), f"K={K}, b={b}"


def test_direction_groups_equal_one_pass_exactly(compiled, monkeypatch):
    """Batches larger than PASS_ORDERS // K run in groups; the result (also when resuming
    from a given hi half-way) is bit for bit that of one pass over all directions."""
    from compiler import compiled as compiled_module

    K, n = 6, 5
    cp = compiled(K)
    monkeypatch.setattr(compiled_module, "PASS_ORDERS", 12)  # groups of 2, 2 and 1
    psi = directions(n, seed=3)
    half = T // 2

    def run():
        s, h, l1 = cp.train_series(psi, stop=half)
        s, h, l2 = cp.train_series(psi, state=s, hi=h, start=half)
        return s, h, np.concatenate([l1, l2])

    grouped = run()
    monkeypatch.setattr(compiled_module, "PASS_ORDERS", 10**6)
    one_pass = run()
    for got, want in zip(grouped, one_pass, strict=True):
        assert np.array_equal(got, want)


@pytest.mark.parametrize("K", SERIES_DEGREES)
def test_series_order0_equals_real_training_exactly(compiled, series_runs, K):
    cp0 = compiled(0)
    s0, _, losses, coeffs = series_runs[K]
    real_state, real_losses = cp0.train()
    assert np.array_equal(s0, real_state), f"K={K}: order-0 state != real training"
    assert np.array_equal(losses, real_losses), f"K={K}: order-0 losses != real losses"
    real_out = cp0.output(real_state, HELD_OUT)
    assert np.all(coeffs[:, 0] == real_out), f"K={K}: c_0 {coeffs[:, 0]} != {real_out}"


def test_series_parameter_round_trip(compiled, series_runs):
    """params_of / output_from_params (what a sketch stores) give the same output."""
    K = 3
    cp = compiled(K)
    s0, hi, _, coeffs = series_runs[K]
    p0, phi = params_of(cp, s0, hi, B)
    assert p0.shape == (4192,) and phi.shape == (B, K, 4192)
    np.testing.assert_array_equal(output_from_params(cp, p0, phi, HELD_OUT), coeffs)
    cp0 = compiled(0)
    r0, _ = params_of(cp0, cp0.train()[0])
    assert output_from_params(cp0, r0, None, HELD_OUT) == coeffs[0, 0]


def test_series_long_test_document(compiled, oracle_series, series_runs, chars):
    """The output circuit of the 16 bucket on the series parameters, against the oracle."""
    from tests.oracle import microgpt as OM

    K = ORACLE_K
    cp = compiled(K)
    s0, hi, _, _ = series_runs[K]
    got = cp.output(s0, HELD_OUT_LONG, hi)[0]
    want = np.array(OM.test_loss(oracle_series[0], OM.tokenize(HELD_OUT_LONG, chars)).coeffs)
    for r in range(K + 1):
        err = abs(got[r] - want[r]) / abs(want[r])
        assert err <= 1e-9, f"{HELD_OUT_LONG}: c_{r} {got[r]} vs oracle {want[r]} ({err:.1e})"


def _retrained_loss(cp0: CompiledProgram, weights: np.ndarray) -> float:
    state, _ = cp0.train(weights)
    return float(cp0.output(state, HELD_OUT))


def test_c1_matches_finite_differences(compiled, series_runs):
    """c_1 = <grad F, psi> = D_{Re psi} F + i D_{Im psi} F by central differences."""
    cp0 = compiled(0)
    psi = directions()[0]
    h = 1e-5
    fd = 0j
    for part, unit in ((psi.real, 1.0), (psi.imag, 1j)):
        plus, minus = _retrained_loss(cp0, h * part), _retrained_loss(cp0, -h * part)
        fd += unit * (plus - minus) / (2 * h)
    for K in SERIES_DEGREES:
        c1 = series_runs[K][3][0, 1]
        err = abs(c1 - fd) / abs(fd)
        assert err <= 1e-5, f"K={K}: c_1 {c1} vs finite differences {fd}: {err:.1e} > 1e-5"


def test_c2_matches_second_differences(compiled, series_runs):
    """c_2 = Q(psi) with Q(v) = v^T H v / 2: Q(a) - Q(b) + i (Q(a+b) - Q(a) - Q(b))."""
    cp0 = compiled(0)
    psi = directions()[0]
    h = 1e-3
    f0 = _retrained_loss(cp0, np.zeros(len(DOCS)))

    def q(v):
        plus, minus = _retrained_loss(cp0, h * v), _retrained_loss(cp0, -h * v)
        return (plus - 2 * f0 + minus) / (2 * h * h)

    qa, qb, qab = q(psi.real), q(psi.imag), q(psi.real + psi.imag)
    want = qa - qb + 1j * (qab - qa - qb)
    for K in (3, 6):
        c2 = series_runs[K][3][0, 2]
        err = abs(c2 - want) / abs(want)
        assert err <= 1e-4, f"K={K}: c_2 {c2} vs second differences {want}: {err:.1e} > 1e-4"


def test_series_coefficients_are_independent_of_degree(series_runs):
    """Orders 0..K of a degree-K run are those of a degree-6 run (truncation commutes)."""
    top = series_runs[max(SERIES_DEGREES)][3]
    for K in SERIES_DEGREES:
        assert rel_err(series_runs[K][3], top[:, : K + 1]) <= 1e-13, f"K={K}"


# ================================================================ non-finite values
def _exploding_program(steps: int = 4) -> Program:
    """loss = -sum exp(50 p x): each SGD step multiplies the growth; step 2 overflows exp."""
    opt = SGD(lr=0.1, momentum=0.0)

    def loss_fn(params, x):
        return -cs.exp(params["p"] * x * 50.0).sum()

    shapes = {"p": (2,)}
    spec = {"x": cs.Input((2,))}
    data = {"x": np.array([1.0, 0.5])}
    return Program(
        name="exploding",
        init_state={"p": np.zeros(2)},
        params=("p",),
        step_circuits={0: build_step_circuit(loss_fn, shapes, spec, opt)},
        output_circuits={0: build_output_circuit(loss_fn, shapes, spec)},
        steps=[Step(0, 0, data) for _ in range(steps)],
        num_docs=1,
        optimizer=opt,
        encode_test=lambda doc: (0, data),
    )


def test_nonfinite_real_training_names_step_and_node():
    prog = _exploding_program()
    with np.errstate(over="ignore"):
        P.train(prog)  # the interpreter just runs into inf (no check): compiled code must not
    cp = CompiledProgram(prog, 0)
    with pytest.raises(NonFiniteError, match=r"training step 2\b") as info:
        cp.train()
    assert "= exp " in str(info.value), f"the exp equation is not named: {info.value}"
    assert "%" in str(info.value)
    # the steps before the blow-up are fine
    state, losses = cp.train(stop=2)
    assert np.all(np.isfinite(state)) and np.all(np.isfinite(losses))


def test_nonfinite_series_training_names_step_and_node():
    cp = CompiledProgram(_exploding_program(), 1)
    with pytest.raises(NonFiniteError, match=r"training step 2\b") as info:
        cp.train_series(np.array([[1.0 + 0.5j]]))
    assert "= exp " in str(info.value), f"the exp equation is not named: {info.value}"


def test_nonfinite_series_state_outside_fused_loops():
    """SGD's short update is not fused, so the caller checks the state's higher orders
    (``step_0_UNCHECKED_HI``).  A direction of 1e300 gives finite order-1 values at
    step 0 and an overflowing order 2 at step 1, while order 0 stays finite."""
    opt = SGD(lr=0.1, momentum=0.0)

    def loss_fn(params, x):
        return ((params["p"] * x) ** 2.0).sum()

    spec, data = {"x": cs.Input((2,))}, {"x": np.array([1.0, 0.5])}
    prog = Program(
        name="quadratic",
        init_state={"p": np.ones(2)},
        params=("p",),
        step_circuits={0: build_step_circuit(loss_fn, {"p": (2,)}, spec, opt)},
        output_circuits={0: build_output_circuit(loss_fn, {"p": (2,)}, spec)},
        steps=[Step(0, 0, data) for _ in range(3)],
        num_docs=1,
        optimizer=opt,
        encode_test=lambda doc: (0, data),
    )
    cp = CompiledProgram(prog, 2)
    assert cp.module.step_0_UNCHECKED_HI != (), "the SGD state should be checked by the caller"
    s0, hi, _ = cp.train_series(np.array([[1e300 + 0j]]), stop=1)
    assert np.all(np.isfinite(hi)) and np.all(np.isfinite(s0))
    with pytest.raises(NonFiniteError, match=r"training step 1\b"):
        cp.train_series(np.array([[1e300 + 0j]]))


def test_nonfinite_microgpt_huge_weights(compiled):
    """Weights 1e300 make g * g overflow in Adam's second moment at step 0."""
    with pytest.raises(NonFiniteError, match=r"training step 0 \(document 0\)") as info:
        compiled(0).train(np.full(len(DOCS), 1e300))
    assert "node %" in str(info.value) and "= mul " in str(info.value), str(info.value)


def test_nonfinite_microgpt_huge_direction(compiled):
    """A direction of norm 1e300 overflows order 2 of the series of g * g at step 0."""
    psi = directions(1) * 1e300
    # all of microgpt's state is written by fused Adam loops, which check it themselves
    assert compiled(3).module.step_0_UNCHECKED_HI == ()
    with pytest.raises(NonFiniteError, match=r"training step 0") as info:
        compiled(3).train_series(psi)
    msg = str(info.value)
    assert "node %" in msg and "= mul " in msg and "coefficient of order 2" in msg, msg
