"""The reverse-mode transformation (circuitsketch.grad) against independent oracles.

* Every differentiable op, on small random circuits, against central finite
  differences (step 1e-6) of the interpreter: the scalar loss is
  sum(f(inputs) * W) with a random constant W, so a linear op's VJP is tested
  with a generic cotangent.  Error: max |grad - fd| / max |fd| per input.
* A deliberately wrong VJP rule must make that check fail.
* The gradient of microgpt's document loss against the oracle's scalar reverse
  mode (tests/oracle/autodiff.py), relative to each tensor's scale.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pytest

import circuitsketch as cs
from circuitsketch.grad import has_gradient
from circuitsketch.interpret import evaluate
from circuitsketch.ir import OPS, Op
from circuitsketch.models import microgpt
from circuitsketch.tracing import constant
from tests.conftest import assert_rel
from tests.oracle import microgpt as OM

# ops with a VJP rule, and ops that carry no gradient at all (by their family)
VJP = {op for op, entry in OPS.items() if entry.vjp is not None}
NO_GRADIENT = {op for op in OPS if not has_gradient(op)}


def patch_vjp(monkeypatch, op: Op, rule) -> None:
    """Replace op's VJP rule in the registry for one test (rule None: remove it)."""
    monkeypatch.setitem(OPS, op, dataclasses.replace(OPS[op], vjp=rule))


FD_STEP = 1e-6
FD_TOL = 1e-6
IDX = np.array([2, 0, 2, 1])  # gather / scatter indices with a repeat


class Case:
    """fn(**inputs) with input shapes; `pos` inputs are drawn in [0.5, 1.5]; `ops` must occur."""

    def __init__(self, name: str, fn: Callable, shapes: dict, ops: set[Op], pos=()):
        self.name, self.fn, self.shapes, self.ops, self.pos = name, fn, shapes, ops, set(pos)

    def __repr__(self) -> str:
        return self.name


MASK = np.array([[True, False, True, False]] * 3)
TARGETS = np.array([1, 3, -1])  # -1: a zero one-hot row (padding)

CASES = [
    Case("add", lambda x, y: x + y, {"x": (3, 4), "y": (3, 4)}, {Op.ADD}),
    Case("sub", lambda x, y: x - y, {"x": (3, 4), "y": (3, 4)}, {Op.SUB}),
    Case("mul", lambda x, y: x * y, {"x": (3, 4), "y": (3, 4)}, {Op.MUL}),
    Case("square", lambda x: x * x, {"x": (3, 4)}, {Op.MUL}),
    Case("div", lambda x, y: x / y, {"x": (3, 4), "y": (3, 4)}, {Op.DIV}, pos="y"),
    Case("div_self", lambda y: (y + 1.0) / y, {"y": (3, 4)}, {Op.DIV}, pos="y"),
    Case("neg", lambda x: -x, {"x": (3, 4)}, {Op.NEG}),
    Case("exp", lambda x: cs.exp(x), {"x": (3, 4)}, {Op.EXP}),
    Case("log", lambda y: cs.log(y), {"y": (3, 4)}, {Op.LOG}, pos="y"),
    Case("pow0.5", lambda y: y**0.5, {"y": (3, 4)}, {Op.POW}, pos="y"),
    Case("pow-0.5", lambda y: y**-0.5, {"y": (3, 4)}, {Op.POW}, pos="y"),
    Case("pow2", lambda x: x**2, {"x": (3, 4)}, {Op.POW}),
    Case("pow1.7", lambda y: y**1.7, {"y": (3, 4)}, {Op.POW}, pos="y"),
    Case("erf", lambda x: cs.erf(x), {"x": (3, 4)}, {Op.ERF}),
    Case("sum_axis0", lambda x: x.sum(axis=0), {"x": (3, 4)}, {Op.SUM}),
    Case("sum_axis1_3d", lambda x: x.sum(axis=1), {"x": (2, 3, 4)}, {Op.SUM}),
    Case("matmul", lambda x, z: x @ z, {"x": (3, 4), "z": (4, 2)}, {Op.MATMUL}),
    Case("matmul_self", lambda x: x @ x.T, {"x": (3, 4)}, {Op.MATMUL, Op.TRANSPOSE}),
    Case("matmul_3d", lambda a, b: a @ b, {"a": (2, 3, 4), "b": (2, 4, 5)}, {Op.MATMUL}),
    Case("gather", lambda x: cs.gather(x, IDX), {"x": (3, 4)}, {Op.GATHER}),
    Case(
        "scatter_add",
        lambda v: cs.scatter_add(v, IDX, 5),
        {"v": (4, 3)},
        {Op.SCATTER_ADD},
    ),
    Case("reshape", lambda x: x.reshape(2, 6) * x.reshape(2, 6), {"x": (3, 4)}, {Op.RESHAPE}),
    Case("transpose", lambda x: x.T, {"x": (3, 4)}, {Op.TRANSPOSE}),
    Case("transpose_3d", lambda a: a.transpose(2, 0, 1), {"a": (2, 3, 4)}, {Op.TRANSPOSE}),
    Case("slice", lambda x: x[1:3, :2], {"x": (3, 4)}, {Op.SLICE}),
    Case("index", lambda x: x[1] * x[:, 2].sum(), {"x": (3, 4)}, {Op.SLICE, Op.RESHAPE}),
    Case("pad", lambda x: cs.pad(x, (1, 0), (0, 2)), {"x": (3, 4)}, {Op.PAD}),
    Case("concat", lambda x, y: cs.concat([x, y], axis=1), {"x": (3, 4), "y": (3, 2)}, {Op.CONCAT}),
    Case("concat_same", lambda x: cs.concat([x, x * x, x], axis=0), {"x": (3, 4)}, {Op.CONCAT}),
    Case("stack", lambda x, y: cs.stack([x, y], axis=1), {"x": (3, 4), "y": (3, 4)}, {Op.CONCAT}),
    Case("broadcast_row", lambda u, x: u * x, {"u": (1, 4), "x": (3, 4)}, {Op.BROADCAST}),
    Case("broadcast_vec", lambda u, x: x - u, {"u": (4,), "x": (3, 4)}, {Op.BROADCAST}),
    Case(
        "broadcast_keepdims",
        lambda x: x * x.sum(axis=1, keepdims=True),
        {"x": (3, 4)},
        {Op.BROADCAST, Op.SUM},
    ),
    Case("where", lambda x, y: cs.where(MASK, x, y), {"x": (3, 4), "y": (3, 4)}, {Op.WHERE}),
    Case("where_same", lambda x: cs.where(MASK, x, x * 2.0), {"x": (3, 4)}, {Op.WHERE}),
    Case(
        "softmax_shift_max",
        lambda x: (
            cs.exp(x - cs.shift_max(x, axis=1))
            / cs.exp(x - cs.shift_max(x, axis=1)).sum(axis=1, keepdims=True)
        ),
        {"x": (3, 4)},
        {Op.SHIFT_MAX, Op.EXP, Op.DIV},
    ),
    Case(
        "log_softmax_pick",
        lambda x: (
            cs.one_hot(constant(x.circuit, TARGETS), 4)
            * (x - cs.log(cs.exp(x).sum(axis=1)).reshape(3, 1))
        ),
        {"x": (3, 4)},
        {Op.ONE_HOT, Op.LOG},
    ),
    Case("tanh", lambda x: cs.tanh(x), {"x": (3, 4)}, {Op.TANH}),
    Case("sigmoid", lambda x: cs.sigmoid(x), {"x": (3, 4)}, {Op.SIGMOID}),
    # piecewise: random normal inputs lie off the kinks by far more than FD_STEP
    Case("relu", lambda x: cs.relu(x) * x, {"x": (3, 4)}, {Op.GREATER, Op.WHERE}),
    Case("abs", lambda x: cs.abs(x), {"x": (3, 4)}, {Op.GREATER_EQUAL, Op.WHERE}),
    Case("maximum", lambda x, y: cs.maximum(x, y), {"x": (3, 4), "y": (3, 4)}, {Op.WHERE}),
    Case("clip", lambda x: cs.clip(x, -0.5, 0.7), {"x": (3, 4)}, {Op.WHERE}),
    Case(
        "clip_by_global_norm",
        lambda x, y: cs.concat([g.reshape(-1) for g in cs.clip_by_global_norm([x, y], 1.5)]),
        {"x": (3, 4), "y": (2,)},
        {Op.GREATER, Op.WHERE},
    ),
    Case(
        "rmsnorm_gelu",
        lambda x: microgpt.gelu(microgpt.rmsnorm(x)),
        {"x": (3, 4)},
        {Op.POW, Op.ERF},
    ),
]


def _inputs(case: Case, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        k: rng.uniform(0.5, 1.5, size=s) if k in case.pos else rng.normal(size=s)
        for k, s in case.shapes.items()
    }


def _loss_circuit(case: Case, seed: int = 1) -> cs.Circuit:
    """sum(f(inputs) * W) for a random constant W of f's output shape."""
    probe = cs.trace(case.fn, **{k: cs.Input(s) for k, s in case.shapes.items()})
    shape = probe.nodes[probe.outputs["out"]].shape
    weights = np.random.default_rng(seed).normal(size=shape)
    return cs.trace(
        lambda **kw: (case.fn(**kw) * weights).sum(),
        **{k: cs.Input(s) for k, s in case.shapes.items()},
    )


def fd_check(case: Case) -> dict[str, float]:
    """Relative error of grad against central differences, per input (asserts < FD_TOL)."""
    c = _loss_circuit(case)
    g = cs.grad(c, "out", list(case.shapes))
    g.verify()
    x = _inputs(case)
    got = evaluate(g, x)
    errs = {}
    for name, value in x.items():
        fd = np.empty_like(value)
        for idx in np.ndindex(value.shape):
            plus, minus = dict(x), dict(x)
            plus[name], minus[name] = value.copy(), value.copy()
            plus[name][idx] += FD_STEP
            minus[name][idx] -= FD_STEP
            fd[idx] = (evaluate(c, plus)["out"] - evaluate(c, minus)["out"]) / (2 * FD_STEP)
        assert got[f"grad_{name}"].shape == value.shape
        errs[name] = float(np.max(np.abs(got[f"grad_{name}"] - fd)) / np.max(np.abs(fd)))
        assert errs[name] < FD_TOL, (
            f"{case.name}: d/d{name} vs central differences: relative error "
            f"{errs[name]:.2e} >= {FD_TOL:.0e}"
        )
    return errs


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_grad_matches_finite_differences(case):
    c = _loss_circuit(case)
    present = {n.op for n in c.nodes}
    assert case.ops <= present, f"{case.name}: circuit lacks {case.ops - present}"
    fd_check(case)


def test_cases_cover_every_differentiable_op():
    covered = set().union(*(case.ops for case in CASES))
    assert set(VJP) <= covered, f"no finite-difference case for {set(VJP) - covered}"
    assert {Op.SHIFT_MAX, Op.ONE_HOT} <= covered


def test_wrong_vjp_rule_is_caught(monkeypatch):
    exp_case = next(c for c in CASES if c.name == "exp")
    fd_check(exp_case)
    # d exp(x) = exp(x) dx; the wrong rule uses x instead of exp(x)
    patch_vjp(monkeypatch, Op.EXP, lambda g, n, ins, out: [g * ins[0]])
    with pytest.raises(AssertionError, match="central differences"):
        fd_check(exp_case)


def test_slightly_wrong_vjp_rule_is_caught(monkeypatch):
    """A rule off by a relative 1e-5 is still caught: the check is tight, not just sane."""
    case = next(c for c in CASES if c.name == "pow1.7")
    patch_vjp(
        monkeypatch,
        Op.POW,
        lambda g, n, ins, out: [g * ((n.attrs[0] * (1 + 1e-5)) * cs.power(ins[0], n.attrs[0] - 1))],
    )
    with pytest.raises(AssertionError, match="central differences"):
        fd_check(case)


def test_missing_rule_is_a_named_error(monkeypatch):
    patch_vjp(monkeypatch, Op.ERF, None)
    c = _loss_circuit(next(c for c in CASES if c.name == "erf"))
    with pytest.raises(cs.IRError, match="no gradient rule for op 'erf'"):
        cs.grad(c, "out", ["x"])


def test_no_gradient_ops_are_constants():
    """shift_max and one_hot carry no gradient: d/dx (x - shift_max(x)) = 1 exactly."""
    c = cs.trace(lambda x: (x - cs.shift_max(x, axis=1)).sum(), x=cs.Input((3, 4)))
    g = evaluate(cs.grad(c, "out", ["x"]), {"x": np.random.default_rng(0).normal(size=(3, 4))})
    np.testing.assert_array_equal(g["grad_x"], np.ones((3, 4)))
    assert not set(VJP) & NO_GRADIENT


def test_unused_input_gets_zero_gradient():
    c = cs.trace(lambda x, y: (x * x).sum(), x=cs.Input((2,)), y=cs.Input((3,)))
    g = evaluate(cs.grad(c, "out", ["x", "y"]), {"x": np.array([1.0, -2.0]), "y": np.ones(3)})
    np.testing.assert_array_equal(g["grad_x"], [2.0, -4.0])
    np.testing.assert_array_equal(g["grad_y"], np.zeros(3))


def test_grad_argument_errors():
    c = cs.trace(lambda x: x * 2.0, x=cs.Input((2,)))
    with pytest.raises(cs.IRError, match="must be a scalar"):
        cs.grad(c, "out", ["x"])
    s = cs.trace(lambda x: x.sum(), x=cs.Input((2,)))
    with pytest.raises(cs.IRError, match="no output named 'nope'"):
        cs.grad(s, "nope", ["x"])
    with pytest.raises(cs.IRError, match="no input named 'z'"):
        cs.grad(s, "out", ["z"])


def test_second_order_by_grad_of_grad():
    """grad applied to a circuit that already holds a backward pass (Hessian-vector product)."""
    v = np.array([0.3, -1.1, 0.7])

    def f(x):
        (gx,) = cs.gradients((cs.exp(x) * x).sum(), [x])
        return (gx * v).sum()

    c = cs.trace(f, x=cs.Input((3,)))
    x = np.array([0.2, -0.5, 1.0])
    got = evaluate(cs.grad(c, "out", ["x"]), {"x": x})["grad_x"]
    # d/dx (x + 1) e^x = (x + 2) e^x, diagonal Hessian
    np.testing.assert_allclose(got, (x + 2) * np.exp(x) * v, rtol=1e-14)


# ---------------------------------------------------------------- microgpt vs the oracle
@pytest.mark.parametrize("doc", ["emma", "christina"])
def test_microgpt_grad_matches_oracle(program, init_params, chars, doc):
    key, data = program.encode_test(doc)
    c = program.output_circuits[key]
    g = cs.grad(c, "loss", list(program.params))
    got = evaluate(g, {**init_params, **data})
    loss, grads = OM.doc_loss_and_grad(init_params, OM.tokenize(doc, chars))
    assert_rel(got["loss"], loss, 1e-12, f"loss of {doc!r} (1e-12)")
    for name in program.params:
        assert_rel(got[f"grad_{name}"], np.array(grads[name]), 1e-10, f"d loss/d {name} (1e-10)")
