"""The IR front end: circuit invariants, interning, fingerprints, printing, rule tables, and
the errors the tracer raises for programs it cannot record."""

from __future__ import annotations

import inspect
import os

import numpy as np
import pytest

import circuitsketch as cs
from circuitsketch.interpret import evaluate
from circuitsketch.ir import OPS, Circuit, IRError, Node, Op, rebuild

THIS_FILE = os.path.basename(__file__)


def kitchen_sink(x, y, t):
    """Uses every op of the IR once at least (x: (3, 4) float, y: (4, 2) float, t: (3,) int)."""
    a = cs.exp(x) + x * x - x / (1.0 + x * x)  # exp, add, mul, sub, div, broadcast (scalar)
    b = cs.log(cs.erf(x) + 2.0) ** 0.5 - (-x)  # log, erf, pow, neg
    m = a @ y  # matmul
    s = m.sum(axis=1)  # sum
    g = cs.gather(y, t)  # gather
    sc = cs.scatter_add(g, t, 5)  # scatter_add
    r = x.reshape(4, 3).T  # reshape, transpose
    sl = b[1:3, :2]  # slice
    p = cs.pad(sl, (1, 0), (0, 2))  # pad
    cat = cs.concat([p, r], axis=1)  # concat
    w = cs.where(np.eye(3, 4, dtype=bool), x, a)  # where
    z = w - cs.shift_max(w, axis=1)  # shift_max
    oh = cs.one_hot(t, 4) * z  # one_hot
    h = cs.where(x > a, cs.tanh(x), cs.sigmoid(a))  # greater, tanh, sigmoid
    q = cs.where(x >= 0.5, x, a)  # greater_equal
    return {"s": s, "sc": sc, "cat": cat, "oh": oh, "h": h, "q": q}


SINK_INPUTS = {"x": cs.Input((3, 4)), "y": cs.Input((4, 2)), "t": cs.Input((3,), "int")}


def sink_values(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": rng.normal(size=(3, 4)), "y": rng.normal(size=(4, 2)), "t": np.array([0, 3, 3])}


@pytest.fixture(scope="module")
def sink() -> Circuit:
    return cs.trace(kitchen_sink, **SINK_INPUTS)


# ---------------------------------------------------------------- the registry
def test_every_op_has_a_registry_entry():
    """Completeness of each entry (every rule present) is tests/test_registry.py's job."""
    assert set(OPS) == set(Op)
    assert all(entry.op is op for op, entry in OPS.items())


def test_kitchen_sink_uses_every_op(sink):
    used = {node.op for node in sink.nodes}
    assert used == set(Op), f"kitchen_sink misses {set(Op) - used}"


# ---------------------------------------------------------------- verify
def test_traced_circuits_verify(sink):
    sink.verify()
    cs.grad(cs.trace(lambda x: (x * x).sum(), x=cs.Input((2,))), "out", ["x"]).verify()


def _copy(c: Circuit) -> Circuit:
    return Circuit(list(c.nodes), dict(c.consts), dict(c.inputs), dict(c.outputs), list(c.scopes))


def _replace(c: Circuit, i: int, **changes) -> Circuit:
    bad = _copy(c)
    n = bad.nodes[i]
    bad.nodes[i] = Node(
        changes.get("op", n.op),
        changes.get("inputs", n.inputs),
        changes.get("shape", n.shape),
        changes.get("dtype", n.dtype),
        changes.get("attrs", n.attrs),
    )
    return bad


def _first(c: Circuit, op: Op) -> int:
    return next(i for i, n in c if n.op is op)


def test_verify_rejects_malformed_circuits(sink):
    i_mul, i_mm = _first(sink, Op.MUL), _first(sink, Op.MATMUL)
    i_const = _first(sink, Op.CONST)
    cases = {
        "forward reference": _replace(sink, i_mul, inputs=(i_mul, 0)),
        "self reference": _replace(sink, i_mul, inputs=(0, i_mul)),
        "wrong arity": _replace(sink, i_mul, inputs=(0,)),
        "wrong shape": _replace(sink, i_mm, shape=(3, 3)),
        "wrong dtype": _replace(sink, i_mm, dtype="int"),
        "bad attrs": _replace(sink, _first(sink, Op.SUM), attrs=(5,)),
    }
    no_const = _copy(sink)
    del no_const.consts[i_const]
    cases["const without value"] = no_const
    bad_out = _copy(sink)
    bad_out.outputs["s"] = len(sink.nodes) + 3
    cases["output outside"] = bad_out
    bad_in = _copy(sink)
    bad_in.inputs["x"] = sink.inputs["y"]
    cases["input points elsewhere"] = bad_in
    for what, bad in cases.items():
        with pytest.raises(IRError):
            bad.verify()
            pytest.fail(f"verify() accepted a circuit with a {what}")


def test_add_checks_shapes_and_arity():
    c = Circuit()
    x = c.add_input("x", (3, 4))
    y = c.add_input("y", (4, 3))
    with pytest.raises(IRError, match="operand shapes differ"):
        c.add(Op.ADD, [x, y])
    with pytest.raises(IRError, match="takes 2 inputs"):
        c.add(Op.MUL, [x])
    with pytest.raises(IRError, match="does not exist"):
        c.add(Op.NEG, [7])
    with pytest.raises(IRError, match="declared twice"):
        c.add_input("x", (1,))
    with pytest.raises(IRError, match="matmul: incompatible"):
        c.add(Op.MATMUL, [x, x])
    assert c.nodes[c.add(Op.MATMUL, [x, y])].shape == (3, 3)


# ---------------------------------------------------------------- interning, fingerprints
def test_same_expression_is_the_same_node():
    def f(x, y):
        a = cs.exp(x * y + 1.0)
        b = cs.exp(x * y + 1.0)
        assert a.id == b.id, "rebuilding exp(x*y + 1) made a new node"
        assert (x * y).id == (x * y).id
        assert (y * x).id != (x * y).id  # operand order is part of the key
        return a + b

    c = cs.trace(f, x=cs.Input((2,)), y=cs.Input((2,)))
    counts = c.op_counts()
    assert counts["exp"] == 1 and counts["mul"] == 2 and counts["const"] == 1  # x*y, y*x
    # constants are interned by value
    k = Circuit()
    assert k.add_const(np.arange(3.0)) == k.add_const(np.arange(3.0))
    assert k.add_const(np.arange(3.0)) != k.add_const(np.arange(3.0) + 1)
    assert k.add_const(np.arange(3)) != k.add_const(np.arange(3.0))  # int vs float


def test_fingerprint_is_stable_and_discriminating(sink):
    again = cs.trace(kitchen_sink, **SINK_INPUTS)
    assert again.fingerprint() == sink.fingerprint()
    assert rebuild(sink).fingerprint() == sink.fingerprint()

    def variant(const=2.0, op=cs.exp):
        return lambda x: op(x) * const

    base = cs.trace(variant(), x=cs.Input((3,))).fingerprint()
    assert cs.trace(variant(), x=cs.Input((3,))).fingerprint() == base
    others = {
        "constant value": cs.trace(variant(const=2.5), x=cs.Input((3,))),
        "op": cs.trace(variant(op=cs.log), x=cs.Input((3,))),
        "shape": cs.trace(variant(), x=cs.Input((4,))),
        "input name": cs.trace(lambda z: cs.exp(z) * 2.0, z=cs.Input((3,))),
        "output name": cs.trace(lambda x: {"y": cs.exp(x) * 2.0}, x=cs.Input((3,))),
    }
    for what, c in others.items():
        assert c.fingerprint() != base, f"fingerprint ignores the {what}"


def test_printer_shows_every_op_and_the_interface(sink):
    text = str(sink)
    lines = text.splitlines()
    assert len(lines) == len(sink.nodes) + len(sink.outputs)
    for op in Op:
        assert any(f"= {op.value} " in line for line in lines), f"op {op.value} not printed"
    for i, node in sink:
        assert lines[i].startswith(f"%{i} = {node.op.value}")
        assert f"{node.dtype}[{','.join(map(str, node.shape))}]" in lines[i]
        for j in node.inputs:
            assert f"%{j}" in lines[i]
    for name, nid in sink.outputs.items():
        assert f"output {name} = %{nid}" in text


def test_scopes_are_recorded_and_printed():
    c = Circuit()
    x = c.add_input("x", (2,))
    with c.scope("model"), c.scope("mlp"):
        y = c.add(Op.EXP, [x])
    c.set_output("y", y)
    assert c.scopes[y] == "model/mlp"
    assert "# model/mlp" in c.format_node(y)


def test_evaluate_checks_inputs(sink):
    vals = sink_values()
    with pytest.raises(IRError, match="missing value for input 't'"):
        evaluate(sink, {"x": vals["x"], "y": vals["y"]})
    with pytest.raises(IRError, match="input 'x': shape"):
        evaluate(sink, {**vals, "x": np.zeros((4, 3))})
    with pytest.raises(IRError, match="unknown input 'q'"):
        evaluate(sink, {**vals, "q": 1.0})
    with pytest.raises(IRError, match="index 7 out of range"):
        evaluate(sink, {**vals, "t": np.array([0, 7, 1])})


def test_interpreter_matches_plain_numpy(sink):
    """The interpreter against a direct numpy transcription of kitchen_sink."""
    from math import erf

    v = sink_values()
    x, y, t = v["x"], v["y"], v["t"]
    a = np.exp(x) + x * x - x / (1.0 + x * x)
    b = np.log(np.vectorize(erf)(x) + 2.0) ** 0.5 + x
    sc = np.zeros((5, 2))
    np.add.at(sc, t, y[t])
    p = np.pad(b[1:3, :2], ((1, 0), (0, 2)))
    w = np.where(np.eye(3, 4, dtype=bool), x, a)
    want = {
        "s": (a @ y).sum(axis=1),
        "sc": sc,
        "cat": np.concatenate([p, x.reshape(4, 3).T], axis=1),
        "oh": np.eye(4)[t] * (w - w.max(axis=1, keepdims=True)),
    }
    got = evaluate(sink, v)
    for name, arr in want.items():
        np.testing.assert_allclose(got[name], arr, rtol=1e-14, atol=1e-15, err_msg=name)


# ---------------------------------------------------------------- tracing errors
def _line_of(fn, needle: str) -> int:
    src, start = inspect.getsourcelines(fn)
    return start + next(k for k, line in enumerate(src) if needle in line)


def _assert_names_line(err: BaseException, fn, needle: str) -> None:
    where = f"{THIS_FILE}:{_line_of(fn, needle)}"
    assert where in str(err), f"error does not name {where}: {err}"


def test_bool_of_traced_value_names_the_line():
    def f(x):
        if x:
            return x
        return -x

    with pytest.raises(cs.TracingError, match="control flow") as info:
        cs.trace(f, x=cs.Input((3,)))
    _assert_names_line(info.value, f, "if x:")


def test_comparison_control_flow_names_the_line():
    def f(x):
        if x > 0:
            return x
        return -x

    with pytest.raises(cs.TracingError) as info:
        cs.trace(f, x=cs.Input(()))
    _assert_names_line(info.value, f, "if x > 0")

    def g(x):
        return max(x[0], x[1])

    with pytest.raises(cs.TracingError) as info:
        cs.trace(g, x=cs.Input((2,)))
    _assert_names_line(info.value, g, "max(x[0]")


def test_unsupported_numpy_function_is_named():
    def f(x):
        return np.sin(x) + 1.0

    with pytest.raises(cs.TracingError, match=r"np\.sin") as info:
        cs.trace(f, x=cs.Input((3,)))
    _assert_names_line(info.value, f, "np.sin")

    def g(x):
        return np.max(x)

    with pytest.raises(cs.TracingError, match=r"np\.max"):
        cs.trace(g, x=cs.Input((3,)))


def test_in_place_mutation_is_rejected():
    def f(x):
        x[0] = 1.0
        return x

    with pytest.raises(cs.TracingError, match="in-place") as info:
        cs.trace(f, x=cs.Input((3,)))
    _assert_names_line(info.value, f, "x[0] = 1.0")


def test_other_unrecordable_constructs():
    cases = {
        "float": lambda x: float(x),
        "traced exponent": lambda x: x**x,
        "traced index": lambda x: x[x],
        "strided slice": lambda x: x[::2],
        "complex constant": lambda x: x * (1 + 2j),
        "to numpy": lambda x: np.asarray(x),
    }
    for what, fn in cases.items():
        with pytest.raises(cs.TracingError):
            cs.trace(fn, x=cs.Input((3,)))
            pytest.fail(f"{what} was traced")


def test_shape_errors_name_the_line():
    def f(x, y):
        return x @ y

    with pytest.raises(IRError, match="matmul: incompatible") as info:
        cs.trace(f, x=cs.Input((3, 4)), y=cs.Input((3, 4)))
    _assert_names_line(info.value, f, "x @ y")
