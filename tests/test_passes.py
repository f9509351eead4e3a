"""Each compiler pass on its own: what it removes or rewrites, and that values are preserved
(the interpreter before and after must agree)."""

from __future__ import annotations

import numpy as np
import pytest

import circuitsketch as cs
from circuitsketch.interpret import evaluate, evaluate_series
from circuitsketch.ir import Circuit, Node, Op
from compiler.passes import (
    _merge_round,
    activity,
    cse,
    dce,
    fold_constants,
    lower_concat,
    merge_transposes,
    scalar_reciprocals,
    shared_reciprocals,
    simplify,
    sink_elementwise,
    transpose_narrow_operands,
)
from tests.conftest import WEIGHTS, assert_rel


def _ops(c: Circuit) -> list[Op]:
    return [n.op for n in c.nodes]


def _same_values(a: Circuit, b: Circuit, inputs: dict, tol: float = 0.0) -> None:
    va, vb = evaluate(a, inputs), evaluate(b, inputs)
    assert set(va) == set(vb), "outputs differ"
    for name in va:
        if tol == 0.0:
            np.testing.assert_array_equal(vb[name], va[name], err_msg=name)
        else:
            assert_rel(vb[name], va[name], tol, f"output {name} ({tol:.0e})")


# ---------------------------------------------------------------- dce
def test_dce_removes_unused_nodes_and_keeps_inputs():
    def f(x, y, unused):
        cs.log(cs.exp(x) + 3.0)  # computed, never used
        return {"a": x * y, "b": (x * y).sum()}

    c = cs.trace(f, x=cs.Input((3,)), y=cs.Input((3,)), unused=cs.Input((2,)))
    d = dce(c)
    d.verify()
    assert Op.EXP in _ops(c) and Op.LOG in _ops(c)
    assert Op.EXP not in _ops(d) and Op.LOG not in _ops(d)
    assert set(d.inputs) == {"x", "y", "unused"}, "dce must keep every input (the interface)"
    assert d.outputs.keys() == c.outputs.keys()
    assert len(d.nodes) == 3 + 2  # three inputs, mul, sum
    x = {"x": np.array([1.0, 2, 3]), "y": np.array([0.5, -1, 2]), "unused": np.zeros(2)}
    _same_values(c, d, x)
    assert len(dce(d).nodes) == len(d.nodes), "dce is idempotent"


# ---------------------------------------------------------------- cse
def _with_duplicates() -> tuple[Circuit, dict]:
    """exp(x*y) + exp(x*y) built with duplicate nodes appended directly (bypassing interning)."""
    c = Circuit()
    x = c.add_input("x", (3,))
    y = c.add_input("y", (3,))
    two = c.add_const(np.full(3, 2.0))
    nodes = [
        Node(Op.MUL, (x, y), (3,), "float"),  # 3
        Node(Op.MUL, (x, y), (3,), "float"),  # 4 duplicate of 3
        Node(Op.EXP, (3,), (3,), "float"),  # 5
        Node(Op.EXP, (4,), (3,), "float"),  # 6 duplicate after merging 3/4
        Node(Op.ADD, (5, 6), (3,), "float"),  # 7
        Node(Op.MUL, (7, two), (3,), "float"),  # 8
        Node(Op.MUL, (6, two), (3,), "float"),  # 9
    ]
    for node in nodes:
        c.nodes.append(node)
        c.scopes.append("")
    c.set_output("out", 8)
    c.set_output("other", 9)
    c.verify()
    return c, {"x": np.array([0.1, -0.4, 0.9]), "y": np.array([1.5, 0.3, -0.2])}


def test_cse_merges_duplicate_nodes():
    c, x = _with_duplicates()
    m = cse(c)
    m.verify()
    keys = [(n.op, n.inputs, n.attrs) for n in m.nodes]
    assert len(keys) == len(set(keys)), "cse left duplicate equations"
    assert _ops(m).count(Op.MUL) == 3 and _ops(m).count(Op.EXP) == 1
    assert len(m.nodes) == len(c.nodes) - 2
    _same_values(c, m, x)


# ---------------------------------------------------------------- fold_constants
def test_fold_constants_replaces_constant_subexpressions():
    k = np.array([[0.5, -1.0, 2.0]])

    def f(x):
        scale = cs.exp(cs.tracing.constant(x.circuit, k)) * 3.0 + 1.0  # constants only
        idx = cs.tracing.constant(x.circuit, np.array([2, 0]))
        picked = cs.gather(cs.tracing.constant(x.circuit, np.eye(3)), idx)  # constant gather
        return {"y": x * scale, "z": picked @ x.T}

    c = cs.trace(f, x=cs.Input((1, 3)))
    folded = fold_constants(c)
    folded.verify()
    assert Op.EXP in _ops(c) and Op.GATHER in _ops(c)
    for i, node in folded:
        if node.op not in (Op.INPUT, Op.CONST):
            assert any(folded.nodes[j].op is not Op.CONST for j in node.inputs), (
                f"%{i} {node.op.value} has constant operands only"
            )
    assert Op.EXP not in _ops(folded) and Op.GATHER not in _ops(folded)
    assert set(_ops(dce(folded))) == {Op.INPUT, Op.CONST, Op.MUL, Op.MATMUL, Op.TRANSPOSE}
    x = {"x": np.array([[0.3, -1.2, 2.0]])}
    _same_values(c, folded, x)
    want = x["x"] * (np.exp(k) * 3.0 + 1.0)
    np.testing.assert_allclose(evaluate(folded, x)["y"], want, rtol=1e-15)


def test_fold_constants_keeps_input_dependent_nodes():
    c = cs.trace(lambda x: cs.exp(x) * 2.0, x=cs.Input((2,)))
    assert Op.BROADCAST in _ops(c)  # of the scalar 2.0: constant, so it folds
    assert _ops(dce(fold_constants(c))) == [Op.INPUT, Op.EXP, Op.CONST, Op.MUL]
    _same_values(c, fold_constants(c), {"x": np.array([0.5, -2.0])})


# ---------------------------------------------------------------- lower_concat
def test_lower_concat_preserves_values():
    def f(x, y, z):
        return {
            "a": cs.concat([x, y], axis=1),
            "b": cs.concat([x, z, x], axis=0) * 2.0,
            "c": cs.stack([x, x * x], axis=2),
        }

    c = cs.trace(f, x=cs.Input((2, 3)), y=cs.Input((2, 4)), z=cs.Input((1, 3)))
    low = lower_concat(c)
    low.verify()
    assert Op.CONCAT in _ops(c) and Op.CONCAT not in _ops(low)
    assert Op.PAD in _ops(low)
    rng = np.random.default_rng(0)
    x = {"x": rng.normal(size=(2, 3)), "y": rng.normal(size=(2, 4)), "z": rng.normal(size=(1, 3))}
    _same_values(c, low, x)  # padding with zeros and adding is exact
    g = cs.grad(
        cs.trace(
            lambda x, y: (cs.concat([x, y], 1) ** 2).sum(), x=cs.Input((2, 3)), y=cs.Input((2, 4))
        ),
        "out",
        ["x", "y"],
    )
    _same_values(g, lower_concat(g), {"x": x["x"], "y": x["y"]})


# ---------------------------------------------------------------- merge_transposes
def test_merge_transposes_composes_and_cancels():
    def f(x):
        a = x.transpose((1, 0, 2)).transpose((1, 0, 2))  # identity: x itself
        b = x.transpose((2, 0, 1)).transpose((0, 2, 1))  # one transpose (2, 1, 0)
        return {"a": a * 2.0, "b": b}

    c = cs.trace(f, x=cs.Input((2, 3, 4)))
    m = dce(merge_transposes(c))
    m.verify()
    perms = [n.attrs[0] for n in m.nodes if n.op is Op.TRANSPOSE]
    assert perms == [(2, 1, 0)], perms
    _same_values(c, m, {"x": np.random.default_rng(0).normal(size=(2, 3, 4))})


def test_merge_transposes_on_microgpt_backward(program):
    """The backward pass transposes transposed weights back, and transposes each
    weight gradient a^T b into the weight's layout; none of that is left."""
    c = program.step_circuits[8]
    before = dce(fold_constants(lower_concat(cse(c))))
    after = simplify(c)

    def nested(circ):
        return sum(
            1
            for n in circ.nodes
            if n.op is Op.TRANSPOSE and circ.nodes[n.inputs[0]].op is Op.TRANSPOSE
        )

    def gradient_transposes(circ):  # (a^T b)^T, over the last two axes
        return sum(
            1
            for n in circ.nodes
            if n.op is Op.TRANSPOSE
            and n.attrs[0][-2:] == (len(n.shape) - 1, len(n.shape) - 2)
            and circ.nodes[n.inputs[0]].op is Op.MATMUL
            and circ.nodes[circ.nodes[n.inputs[0]].inputs[0]].op is Op.TRANSPOSE
        )

    assert nested(before) >= 8 and nested(after) == 0, (nested(before), nested(after))
    assert gradient_transposes(before) >= 7 and gradient_transposes(after) == 0
    t_before, t_after = (x.op_counts()["transpose"] for x in (before, after))
    assert t_after <= t_before - 14, (t_before, t_after)  # 40 -> 26; merging alone: 31
    _, inputs = program.step_inputs(0)
    # the same products summed in the same order; numpy's BLAS may block differently
    _same_values(before, after, {**program.init_state, **inputs, "w": WEIGHTS[1]}, tol=1e-14)


def _merged(f, shapes: dict) -> tuple[Circuit, Circuit]:
    """f traced over inputs of these shapes (after cse), and merge_transposes of it; their
    values checked equal on random inputs."""
    c = cse(cs.trace(f, **{k: cs.Input(s) for k, s in shapes.items()}))
    m = dce(merge_transposes(c))
    m.verify()
    rng = np.random.default_rng(0)
    _same_values(c, m, {k: rng.normal(size=s) for k, s in shapes.items()})
    return c, m


def _transposes_of(c: Circuit, op: Op) -> int:
    return sum(1 for n in c.nodes if n.op is Op.TRANSPOSE and c.nodes[n.inputs[0]].op is op)


def test_a_products_transpose_moves_to_its_smaller_operands():
    """(x^T y)^T with x^T read elsewhere too (so not dropped): y^T x, since transposing y,
    2 x 6, moves less than the 6 x 6 product; kept where the operands are the larger (a
    2 x 6 times b 6 x 2) or the product has another reader."""

    def f(x, y, w, a, b):
        xt = x.T  # 6 x 2, also summed
        p = xt @ w
        return {
            "flipped": (xt @ y).T + xt.sum(),
            "larger": (a @ b).T * 2.0,
            "read": p.T * 3.0 + p.sum(),
        }

    c, m = _merged(f, {"x": (2, 6), "y": (2, 6), "w": (2, 6), "a": (2, 6), "b": (6, 2)})
    assert _transposes_of(c, Op.MATMUL) == 3 and _transposes_of(m, Op.MATMUL) == 2


def test_a_transposed_sum_of_products_moves_to_the_products():
    """(x^T y + a^T b)^T, each product read only by the sum: y^T x + b^T a, the transposes
    on the operands (x^T's cancel); kept where a product is read elsewhere too."""

    def f(x, y, a, b):
        read = y.T @ b  # also summed
        return {"moved": (x.T @ y + a.T @ b).T * 2.0,
                "kept": (read + x.T @ a).T + read.sum()}  # fmt: skip

    c, m = _merged(f, {"x": (2, 6), "y": (2, 6), "a": (2, 6), "b": (2, 6)})
    assert _transposes_of(c, Op.ADD) == 2 and _transposes_of(m, Op.ADD) == 1
    assert m.op_counts()["matmul"] == c.op_counts()["matmul"] == 4


def _reverse_inputs(program, seed: int) -> dict:
    """Inputs of a reverse step of step 0: the initial state as its forward state, random
    cotangents, and a data weight of 0.3."""
    from circuitsketch.program import WEIGHT
    from runtime.sweep import FWD

    rng = np.random.default_rng(seed)
    _, data = program.step_inputs(0)
    return {**{FWD + n: v for n, v in program.init_state.items()}, **data, WEIGHT: 0.3,
            **{n: rng.normal(size=np.shape(v)) for n, v in program.init_state.items()}}


def test_merge_transposes_rounds_until_nothing_moves(program):
    """In the metagradient's reverse step a flipped product leaves transposes of sums of
    products, which its round does not visit and the next moves onto the products'
    operands: fewer copies, the same products, the same values, and then a fixed point."""
    from runtime.sweep import reverse_circuits

    r = cse(reverse_circuits(program)[8])
    one, rounds = dce(_merge_round(r)), merge_transposes(r)
    counts = [(x.op_counts()["transpose"], x.op_counts()["matmul"]) for x in (one, rounds)]
    assert counts == [(65, 81), (53, 81)], counts
    assert merge_transposes(rounds).fingerprint() == rounds.fingerprint()
    # numpy's BLAS may block differently
    _same_values(one, rounds, _reverse_inputs(program, 7), tol=1e-14)


# ---------------------------------------------------------------- transpose_narrow_operands
def test_narrow_operands_are_transposed_instead_of_the_weight():
    """x W^T with x two rows and W 16 x 8: (W x^T)^T, W's transpose gone; a weight whose
    transpose has another reader, and rows as many as the weight's, keep x W^T."""

    def f(x, w, v, u, big):
        return {
            "narrow": x @ w.T,  # 2 x 8 and 2 x 16 against 16 x 8: flipped
            "shared": x @ v.T + v.T.sum(),  # v^T has another reader: kept
            "rows": big @ u.T,  # 16 x 8 rows against a 16 x 8 weight: kept
        }

    shapes = {"x": (2, 8), "w": (16, 8), "v": (16, 8), "u": (16, 8), "big": (16, 8)}
    c = cs.trace(f, **{k: cs.Input(s) for k, s in shapes.items()})
    t = dce(transpose_narrow_operands(c))
    t.verify()
    transposed = sorted((t.nodes[n.inputs[0]].op.value, n.shape) for n in t.nodes
                        if n.op is Op.TRANSPOSE)  # fmt: skip
    # v's and u's transposes stay; x and the product (w x^T) are transposed instead of w
    assert transposed == [("input", (8, 2)), ("input", (8, 16)), ("input", (8, 16)),
                          ("matmul", (2, 16))], transposed  # fmt: skip
    rng = np.random.default_rng(3)
    inputs = {k: rng.normal(size=s) for k, s in shapes.items()}
    _same_values(c, t, inputs, tol=1e-15)  # numpy's BLAS may sum in another order


def test_sinking_elementwise_equations_makes_interleaved_chains_consecutive():
    """a = 2x and b = 3y traced before either chain: each is moved down to its chain, so
    every elementwise equation fuses; the same equations and values."""
    from compiler.fusion import fuse

    def f(x, y):
        a, b = x * 2.0, y * 3.0
        return {"c": cs.exp(a) + x, "d": cs.exp(b) + y}

    c = cs.trace(f, x=cs.Input((3,)), y=cs.Input((5,)))
    s = sink_elementwise(c)
    s.verify()
    assert sorted(n.op.value for n in c.nodes) == sorted(n.op.value for n in s.nodes)

    def fused(k: Circuit) -> int:
        return sum(len(g.members) for g in fuse(k, [False] * len(k.nodes)).groups)

    assert (fused(c), fused(s)) == (4, 6)  # 2x and 3y were runs of one, left unfused
    rng = np.random.default_rng(5)
    _same_values(c, s, {"x": rng.normal(size=3), "y": rng.normal(size=5)})


def test_sunk_reverse_steps_give_the_same_metagradient(monkeypatch):
    """The reverse run compiled with and without sinking: the same bits."""
    from circuitsketch.models import microgpt
    from compiler import pipeline
    from runtime.metagrad import full_trajectory_metagradient
    from tests.conftest import DOCS

    # five short names, one length bucket: the program of test_metagrad_sweep's runs of one
    # to three steps, so only the reverse run without sinking is compiled here
    program = microgpt.build(list(DOCS[:5]), steps=12)
    sunk: list[int] = []
    sink = pipeline.sink_elementwise
    monkeypatch.setattr(pipeline, "sink_elementwise", lambda c: sunk.append(1) or sink(c))
    g = full_trajectory_metagradient(program, "emma")
    assert sunk  # the reverse run's circuits were sunk (the forward run's are not)
    monkeypatch.setattr(pipeline, "sink_elementwise", lambda c: c)
    np.testing.assert_array_equal(full_trajectory_metagradient(program, "emma"), g)


def test_the_reverse_run_adds_its_products_by_fused_multiply_adds(monkeypatch):
    """The reverse runs' products round once per term (``runtime.sweep.REVERSE``): other
    bits than rounding twice, the same metagradient to a few units in the last place."""
    from circuitsketch.models import microgpt
    from runtime import sweep
    from runtime.metagrad import full_trajectory_metagradient
    from tests.conftest import DOCS

    program = microgpt.build(list(DOCS[:5]), steps=12)
    g = full_trajectory_metagradient(program, "emma")
    monkeypatch.setitem(sweep.REVERSE, "fma", False)
    plain = full_trajectory_metagradient(program, "emma")
    assert not np.array_equal(g, plain)  # the option reaches the products
    assert_rel(g, plain, 1e-14, "fused against separate multiply-adds")

def test_narrow_operands_on_a_wide_model():
    """A 1-layer model 64 wide: every weight matrix's transpose is gone from the step (the
    forward pass reads each weight as W x^T); the default 16 wide model is unchanged."""
    from circuitsketch.models import microgpt as m

    docs = tuple(m.read_docs(m.corpus_path())[:4])

    def weight_transposes(c):
        names = set(c.inputs)
        return sum(1 for n in c.nodes if n.op is Op.TRANSPOSE
                   and c.nodes[n.inputs[0]].op is Op.INPUT
                   and c.nodes[n.inputs[0]].attrs[0] in names and len(n.shape) == 2)  # fmt: skip

    wide = m.build(docs, n_embd=64).step_circuits[8]
    merged = dce(merge_transposes(fold_constants(lower_concat(cse(wide)))))
    assert weight_transposes(merged) >= 6 and weight_transposes(simplify(wide)) == 0
    small = m.build(docs).step_circuits[8]
    assert simplify(small).fingerprint() == dce(scalar_reciprocals(merge_transposes(
        fold_constants(lower_concat(cse(small)))))).fingerprint()  # fmt: skip


# ---------------------------------------------------------------- scalar_reciprocals
def test_scalar_reciprocals_on_adam(program):
    """Adam's divisions by its bias corrections (run-time scalars) become products with
    one reciprocal each; divisions by vectors and by constants stay; values agree."""

    def f(x, y, s):
        return {"q": x / s, "v": x / y, "c": x / 3.0, "sq": (x * x) / s}

    vec = cs.Input((4, 3))
    c = cs.trace(f, x=vec, y=vec, s=cs.Input(()))
    r = dce(scalar_reciprocals(c))
    divs = [n for n in r.nodes if n.op is Op.DIV]
    assert [n.size for n in divs] == [1, 12, 12], [(n.size, n.shape) for n in divs]
    rng = np.random.default_rng(2)
    _same_values(
        c, r, {"x": rng.normal(size=(4, 3)), "y": rng.random((4, 3)) + 0.5, "s": 0.3}, tol=3e-16
    )
    step = program.step_circuits[8]
    before = dce(fold_constants(lower_concat(cse(step))))
    after = simplify(step)
    by_scalar = [
        n
        for n in after.nodes
        if n.op is Op.DIV
        and n.size > 1
        and after.nodes[n.inputs[1]].op is Op.BROADCAST
        and after.nodes[after.nodes[n.inputs[1]].inputs[0]].op is Op.INPUT
    ]
    assert by_scalar == [] and after.op_counts()["div"] <= before.op_counts()["div"] - 14
    _, inputs = program.step_inputs(0)
    _same_values(before, after, {**program.init_state, **inputs, "w": WEIGHTS[1]}, tol=1e-14)


# ---------------------------------------------------------------- shared_reciprocals
def test_shared_reciprocals_invert_each_divisor_once():
    """Two divisions by y, x / sqrt(v) beside v ** -0.5, and a division by a broadcast row
    sum become one reciprocal each and products (1 / sqrt(v) is that reciprocal); a value
    that divides once stays a division with its bits; every value within two roundings."""

    def f(x, y, v):
        root = cs.sqrt(v)
        rows = x.sum(axis=1, keepdims=True)
        return {"a": x / y, "b": (x * x) / y, "s": x / root, "t": cs.rsqrt(v) * y,
                "r": y / rows, "once": x / v}  # fmt: skip

    mat = cs.Input((4, 3))
    c = cs.trace(f, x=mat, y=mat, v=mat)
    r = dce(shared_reciprocals(c))
    r.verify()
    divs = [n for n in r.nodes if n.op is Op.DIV]
    assert len(divs) == 4, r.op_counts()  # 1 / y, 1 / sqrt(v), 1 / rows (4 x 1), x / v
    assert sorted(n.size for n in divs) == [4, 12, 12, 12]
    assert len({n.inputs[1] for n in divs}) == 4, "a divisor inverted twice"
    assert not [n for n in r.nodes if n.op is Op.POW and n.attrs[0] == -0.5]
    rng = np.random.default_rng(4)
    inputs = {"x": rng.normal(size=(4, 3)), "y": rng.normal(size=(4, 3)),
              "v": rng.random((4, 3)) + 0.5}  # fmt: skip
    want, got = evaluate(c, inputs), evaluate(r, inputs)
    np.testing.assert_array_equal(got["once"], want["once"])
    for name in want:  # a * (1 / b) against a / b: at most 1.5 units in the last place
        np.testing.assert_allclose(got[name], want[name], rtol=3.4e-16, atol=0, err_msg=name)


def test_shared_reciprocals_on_the_reverse_step(program):
    """The metagradient's reverse step divides by each divisor once: Adam's transpose had
    three divisions by sqrt(v_hat + eps) and a 1 / sqrt per parameter; its outputs agree."""
    from circuitsketch.grad import reverse_step
    from circuitsketch.program import WEIGHT
    from runtime.sweep import FWD, reverse_circuits

    step = program.step_circuits[8]
    names = list(program.init_state)
    before = simplify(reverse_step(step, names, WEIGHT, FWD))
    after = simplify(reverse_circuits(program)[8])
    divisors = [n.inputs[1] for n in after.nodes if n.op is Op.DIV and n.size > 1]
    assert len(divisors) == len(set(divisors))
    n_params = len(program.params)
    assert after.op_counts()["div"] <= before.op_counts()["div"] - 3 * n_params
    # up to 2e-15 seen (Adam's v: a product of five roundings, then a sum)
    _same_values(before, after, _reverse_inputs(program, 6), tol=1e-14)


# ---------------------------------------------------------------- activity
def test_activity_marks_series_and_higher_orders():
    def f(x, y, t):
        only_shift = x * 3.0  # active, but only shift_max reads it: no higher orders needed
        m = cs.shift_max(only_shift, axis=0)  # a constant
        e = cs.exp(x) - m  # active, needs its series
        oh = cs.one_hot(t, 4)  # a constant
        plain = y * oh.sum(axis=0)  # depends on no series input
        mask = cs.where(np.array([True, False, True, False]), e, plain)  # active
        return {"e": e, "plain": plain, "mixed": mask, "m": m}

    c = cs.trace(f, x=cs.Input((4,)), y=cs.Input((4,)), t=cs.Input((2,), "int"))
    act = activity(c, ["x"])
    by = {}
    for i, node in c:
        by.setdefault(node.op, []).append(i)
    (x, y, t) = (c.inputs[n] for n in ("x", "y", "t"))
    assert act.active[x] and act.hi[x]
    assert not act.active[y] and not act.active[t]
    (shift,) = by[Op.SHIFT_MAX]
    (onehot,) = by[Op.ONE_HOT]
    (only_shift,) = c.nodes[shift].inputs
    assert c.nodes[only_shift].op is Op.MUL
    assert act.active[only_shift] and not act.hi[only_shift], "feeds only shift_max"
    assert not act.active[shift] and not act.hi[shift]
    assert not act.active[onehot] and not act.hi[onehot]
    assert act.active[c.outputs["e"]] and act.hi[c.outputs["e"]]
    assert act.active[c.outputs["mixed"]] and act.hi[c.outputs["mixed"]]
    assert not act.active[c.outputs["plain"]] and not act.active[c.outputs["m"]]
    # hi implies active; every node on a path from x to an active output needs hi except
    # those read only by shift_max
    assert all(a or not h for a, h in zip(act.active, act.hi, strict=True))
    s = act.summary(c)
    assert s["nodes"] == len(c) and s["order0_only_series"] >= 1
    assert s["series"] + s["order0_only_series"] + s["real"] == len(c)
    with pytest.raises(ValueError, match="no input named 'q'"):
        activity(c, ["q"])
    # no series input: nothing is active
    assert not any(activity(c, []).active)


def test_activity_agrees_with_series_evaluation(program):
    """On microgpt's step: nodes marked inactive have zero higher orders when the data
    weight is a series, and hi-less active nodes are never read beyond order 0."""
    c = simplify(program.step_circuits[8])
    state = program.init_state
    act = activity(c, [*state, "w"])
    assert sum(act.hi) > 0 and sum(not a for a in act.active) > 0
    assert sum(a and not h for a, h in zip(act.active, act.hi, strict=True)) > 0
    _, inputs = program.step_inputs(0)
    w = np.array([0.0, 0.7 - 0.2j])
    env = _series_env(c, {**state, **inputs, "w": w}, 1)
    for i, node in c:
        if node.dtype == "float" and not act.active[i]:
            assert not np.any(env[i][1:]), f"%{i} {node.op.value} inactive but has a series"
    assert any(np.any(env[i][1:]) for i in range(len(c)) if act.hi[i])


def _series_env(c: Circuit, inputs: dict, degree: int) -> list:
    """Every node's series value (the interpreter run with all nodes as outputs)."""
    probe = Circuit(c.nodes, c.consts, c.inputs, {f"n{i}": i for i in range(len(c))}, c.scopes)
    out = evaluate_series(probe, inputs, degree)
    return [out[f"n{i}"] for i in range(len(c))]


# ---------------------------------------------------------------- the pipeline
def test_simplify_preserves_microgpt_step(program):
    for key, c in program.step_circuits.items():
        s = simplify(c)
        s.verify()
        assert len(s) < len(c) and Op.CONCAT not in _ops(s)
        _, inputs = program.step_inputs(0 if key == 8 else 5)
        vals = {**program.init_state, **inputs, "w": WEIGHTS[1]}
        _same_values(c, s, vals, tol=1e-14)
