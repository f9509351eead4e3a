"""Training writes its new state over the old one (``compiler/in_place.py``): the state
in real mode, its higher orders in series mode.

* microgpt's steps pass the order check, and a tagged replay of their slots
  (``test_slots.clobbered``, which does not use the check) finds no read of a
  state entry after it was overwritten, in both modes;
* training in place gives the same bits as training with two buffers, in both modes;
* a step that reads a state entry after writing it is kept on two buffers; the
  check is shown to matter: forced in place, that step computes wrong numbers;
  so is a product that writes over the entry it reads; the metagradient's reverse
  run, whose adds write over the cotangents they read, is in place and exact;
* a blow-up is still reported at its step (the state it read is recomputed), in
  both modes.
"""

from __future__ import annotations

import numpy as np
import pytest

from circuitsketch import program as P
from circuitsketch.ir import Circuit, Op
from circuitsketch.models import microgpt as m
from circuitsketch.optim import SGD
from circuitsketch.program import WEIGHT, Program, Step
from compiler import lower, pipeline
from compiler.compiled import CompiledProgram
from compiler.fusion import fuse
from compiler.in_place import state_in_place
from compiler.passes import simplify
from tests.conftest import DOCS
from tests.test_compiler import _exploding_program
from tests.test_slots import CIRCUITS, activity_of, clobbered


def _steps():
    return [(name, c, iface) for name, c, iface, state_outputs in CIRCUITS if state_outputs]


@pytest.mark.parametrize(("name", "c", "iface"), _steps(), ids=[s[0] for s in _steps()])
def test_microgpt_steps_are_written_in_place_and_no_read_finds_a_new_value(name, c, iface):
    fusion = fuse(c, [False] * len(c.nodes), 0)
    assert state_in_place(c, iface, fusion)
    errors, s = clobbered(c, iface, False, True, in_place=True)
    assert errors == [], errors[:3]
    assert "s_out" not in s.r_arr and "s_in" in s.r_arr


@pytest.mark.parametrize(("name", "c", "iface"), _steps(), ids=[s[0] for s in _steps()])
def test_microgpt_series_steps_write_their_higher_orders_in_place_soundly(name, c, iface):
    act = activity_of(c, iface)
    fusion = fuse(c, act.hi, 3)
    assert state_in_place(c, iface, fusion, (), True)
    errors, s = clobbered(c, iface, True, True, in_place=True)
    assert errors == [], errors[:3]
    assert "h_out" not in s.h_arr and "h_in" in s.h_arr and "s_out" in s.r_arr


def _sum_output(shape: tuple[int, ...]) -> Circuit:
    out = Circuit()
    x = out.add_input("p", shape)
    for _ in shape:
        x = out.add(Op.SUM, [x], (0,))
    out.set_output("loss", x)
    return out


def _step_program(name: str, c: Circuit, init: dict[str, np.ndarray]) -> Program:
    out = _sum_output((3,))
    return Program(
        name=name,
        init_state=init,
        params=tuple(init),
        step_circuits={0: c},
        output_circuits={0: out},
        steps=[Step(0, 0, {}) for _ in range(3)],
        num_docs=1,
        optimizer=SGD(lr=0.1, momentum=0.0),
        encode_test=lambda doc: (0, {}),
    )


def _step_circuit(*names: str) -> tuple[Circuit, list[int]]:
    c = Circuit()
    inputs = [c.add_input(n, (3,)) for n in names]
    c.add_input(WEIGHT, ())
    c.add_input("lr", ())  # the optimizer's schedule (unused)
    return c, inputs


def _read_after_write() -> Program:
    """A step that computes p' = 2 p + 1 before it reads p again (loss = sum p * p)."""
    c, (p,) = _step_circuit("p")
    q = c.add(Op.MUL, [p, c.add_const(np.full(3, 2.0))])
    new = c.add(Op.ADD, [q, c.add_const(np.full(3, 1.0))])
    loss = c.add(Op.SUM, [c.add(Op.MUL, [p, p])], (0,))
    c.set_output("p", new)
    c.set_output("loss", loss)
    return _step_program("read-after-write", c, {"p": np.array([0.5, -1.0, 2.0])})


def _swap() -> Program:
    """A step whose new p is the old q and whose new q the old p (copies at its end)."""
    c, (p, q) = _step_circuit("p", "q")
    c.set_output("p", q)
    c.set_output("q", p)
    c.set_output("loss", c.add(Op.SUM, [p], (0,)))
    return _step_program("swap", c, {"p": np.array([0.5, -1.0, 2.0]), "q": np.zeros(3)})


def test_a_step_that_reads_its_state_after_writing_it_keeps_two_buffers(monkeypatch):
    prog = _read_after_write()
    c = simplify(prog.step_circuits[0])
    assert c.nodes[c.outputs["p"]].op is Op.ADD and c.outputs["p"] < c.outputs["loss"]
    state, losses = P.train(prog)
    cp = CompiledProgram(prog, 0)
    assert not cp.build.in_place
    got, got_losses = cp.train()
    assert np.array_equal(got, state["p"]) and np.array_equal(got_losses, losses)
    # forced in place, the loss reads the new p: the check is what keeps this right
    monkeypatch.setattr(pipeline, "state_in_place", lambda *a: True)
    forced = CompiledProgram(prog, 0)
    assert forced.build.in_place
    _, wrong = forced.train()
    assert not np.allclose(wrong, losses)
    assert np.isclose(wrong[0], np.sum((2 * prog.init_state["p"] + 1) ** 2))


def test_a_step_that_swaps_two_entries_keeps_two_buffers(monkeypatch):
    prog = _swap()
    state, losses = P.train(prog)
    cp = CompiledProgram(prog, 0)
    assert not cp.build.in_place
    got, got_losses = cp.train()
    assert np.array_equal(got_losses, losses) and np.array_equal(got_losses, [1.5, 0.0, 1.5])
    assert np.array_equal(got, np.concatenate([state["p"], state["q"]]))
    monkeypatch.setattr(pipeline, "state_in_place", lambda *a: True)
    _, wrong = CompiledProgram(prog, 0).train()  # forced: p and q both end as one of them
    assert not np.array_equal(wrong, losses)


def _series_read_after_write() -> Program:
    """p' = 2 p + w, and after it q' = q + sum(p): the sum reads p's higher orders after
    p' has been written (a reduction, not element by element)."""
    c, (p, q) = _step_circuit("p", "q")
    w = c.add(Op.BROADCAST, [c.inputs[WEIGHT]], ((3,),))
    new_p = c.add(Op.ADD, [c.add(Op.MUL, [p, c.add_const(np.full(3, 2.0))]), w])
    total = c.add(Op.BROADCAST, [c.add(Op.SUM, [p], (0,))], ((3,),))
    new_q = c.add(Op.ADD, [q, total])
    c.set_output("p", new_p)
    c.set_output("q", new_q)
    c.set_output("loss", c.add(Op.SUM, [new_q], (0,)))
    return _step_program("series-read-after-write", c, {"p": np.zeros(3), "q": np.zeros(3)})


def test_a_series_step_that_reads_higher_orders_after_writing_them_keeps_two_buffers(
    monkeypatch,
):
    prog = _series_read_after_write()
    psi = np.ones((1, 1), np.complex128)  # order 1 along the one document's weight
    cp = CompiledProgram(prog, 1)
    assert not cp.build.in_place
    _, hi, _ = cp.train_series(psi)
    # by hand, order 1: p_1 <- 2 p_1 + 1, q_1 <- q_1 + 3 p_1 (the old p_1), three steps
    assert np.array_equal(hi, [7, 7, 7, 12, 12, 12])
    monkeypatch.setattr(pipeline, "state_in_place", lambda *a: True)
    forced = CompiledProgram(prog, 1)
    assert forced.build.in_place
    _, wrong, _ = forced.train_series(psi)  # the sum reads the new p_1: q_1 ends at 33
    assert np.array_equal(wrong, [7, 7, 7, 33, 33, 33])


def test_a_weight_read_through_a_transposed_view_is_read_where_its_product_runs(monkeypatch):
    """W' = 2 W + 1 comes before the product x @ W.T that reads W through a view: the
    transpose stands before the update, but the product reads W after it."""
    monkeypatch.setattr(lower, "VIEW_MIN", 1)
    c = Circuit()
    w = c.add_input("p", (3, 3))
    c.add_input(WEIGHT, ())
    c.add_input("lr", ())
    wt = c.add(Op.TRANSPOSE, [w], ((1, 0),))
    new = c.add(Op.ADD, [c.add(Op.MUL, [w, c.add_const(np.full((3, 3), 2.0))]),
                         c.add_const(np.full((3, 3), 1.0))])
    y = c.add(Op.MATMUL, [c.add_const(np.arange(6.0).reshape(2, 3)), wt])
    c.set_output("p", new)
    c.set_output("loss", c.add(Op.SUM, [c.add(Op.SUM, [y], (1,))], (0,)))
    prog = _step_program("view-after-write", c, {"p": np.eye(3) * 0.5})
    prog.output_circuits[0] = _sum_output((3, 3))
    assert lower.transposed_views(simplify(c)) == {wt}
    state, losses = P.train(prog)
    cp = CompiledProgram(prog, 0)
    assert not cp.build.in_place
    got, got_losses = cp.train()
    assert np.array_equal(got_losses, losses) and np.array_equal(got, state["p"].ravel())


def test_a_product_that_writes_over_the_entry_it_reads_keeps_two_buffers(monkeypatch):
    """p' = p @ A, with the loss read first: the product is p's last reader and its writer,
    but its tiles read whole rows of p after writing parts of them; only an elementwise
    loop or an add, sub or mul kernel may write where it reads."""
    c = Circuit()
    n = 40  # wider than a register tile: a later tile reads rows an earlier one wrote
    p = c.add_input("p", (n, n))
    c.add_input(WEIGHT, ())
    c.add_input("lr", ())
    c.set_output("loss", c.add(Op.SUM, [c.add(Op.SUM, [c.add(Op.MUL, [p, p])], (0,))], (0,)))
    turn = np.random.default_rng(3).normal(size=(n, n)) / n
    c.set_output("p", c.add(Op.MATMUL, [p, c.add_const(turn)]))
    prog = _step_program("product", c, {"p": np.arange(n * n).reshape(n, n) / n**2})
    prog.output_circuits = {0: _sum_output((n, n))}
    state, losses = P.train(prog)
    cp = CompiledProgram(prog, 0)
    assert not cp.build.in_place
    got, got_losses = cp.train()
    # numpy's products may sum in another order: a few units in the last place
    np.testing.assert_allclose(got, state["p"].ravel(), rtol=1e-13, atol=1e-18)
    np.testing.assert_allclose(got_losses, losses, rtol=1e-13)
    monkeypatch.setattr(pipeline, "state_in_place", lambda *a: True)
    forced, _ = CompiledProgram(prog, 0).train()
    assert not np.allclose(forced, got, rtol=1e-6)  # the check is what keeps this right


# The two-buffer builds below are compiled for these tests alone: with the five short
# names (one length bucket) a batch size of 1 has one step circuit to compile, not two.
SHORT = DOCS[:5]


@pytest.mark.parametrize("batch_size", [1, 3])
def test_in_place_training_gives_the_bits_of_two_buffers(batch_size, monkeypatch):
    prog = m.build(SHORT, batch_size=batch_size)
    cp = CompiledProgram(prog, 0)
    assert cp.build.in_place
    state, losses = cp.train()
    monkeypatch.setattr(pipeline, "state_in_place", lambda *a: False)
    two = CompiledProgram(prog, 0)
    assert not two.build.in_place
    state2, losses2 = two.train()
    assert np.array_equal(state, state2) and np.array_equal(losses, losses2)
    # a run in pieces, from a state given (not changed by the call), ends in the same bits
    half, _ = cp.train(stop=prog.num_steps // 2)
    kept = half.copy()
    rest, _ = cp.train(state=half, start=prog.num_steps // 2)
    assert np.array_equal(half, kept) and np.array_equal(rest, state)


@pytest.mark.parametrize("batch_size", [1, 3])
def test_series_in_place_gives_the_bits_of_two_buffers(batch_size, monkeypatch):
    prog = m.build(SHORT, batch_size=batch_size)
    psi = np.random.default_rng(0).normal(size=(3, prog.num_docs)) + 0.5j
    cp = CompiledProgram(prog, 2)
    assert cp.build.in_place
    s0, hi, losses = cp.train_series(psi)
    monkeypatch.setattr(pipeline, "state_in_place", lambda *a: False)
    two = CompiledProgram(prog, 2)
    assert not two.build.in_place
    s2, hi2, losses2 = two.train_series(psi)
    assert np.array_equal(s0, s2) and np.array_equal(hi, hi2) and np.array_equal(losses, losses2)
    # in pieces, from higher orders given (not changed by the call): the same bits
    half_s, half_h, _ = cp.train_series(psi, stop=prog.num_steps // 2)
    kept = half_h.copy()
    _, rest, _ = cp.train_series(psi, state=half_s, hi=half_h, start=prog.num_steps // 2)
    assert np.array_equal(half_h, kept) and np.array_equal(rest, hi)


@pytest.mark.parametrize("degree", [0, 3])
def test_a_step_circuit_built_alone_for_inspect_is_in_place_as_when_it_runs(degree):
    from compiler.compiled import program_build

    prog = m.build(DOCS[:12])
    key = next(iter(prog.step_circuits))
    alone = pipeline.run(program_build(prog, degree, only=("step", key)), until="lower")
    assert alone.in_place and CompiledProgram(prog, degree).build.in_place
    code = "\n".join(line for lines in alone.units[0].lowered.lines for line in lines)
    assert ("s_out" not in code) if degree == 0 else ("h_out" not in code and "h_in" in code)


def test_a_blow_up_in_place_names_its_step():
    from compiler.diagnose import NonFiniteError

    cp = CompiledProgram(_exploding_program(), 0)
    assert cp.build.in_place
    with pytest.raises(NonFiniteError, match=r"training step 2\b"), np.errstate(over="ignore"):
        cp.train()


def test_steps_out_of_range_are_refused():
    cp = CompiledProgram(_read_after_write(), 0)
    for start, stop in ((0, 4), (2, 1), (-1, 2)):
        with pytest.raises(ValueError, match=f"steps {start} to {stop}: out of range 0 to 3"):
            cp.train(start=start, stop=stop)


def test_the_reverse_run_is_written_in_place_and_gives_the_bits_of_two_buffers(monkeypatch):
    """The metagradient's reverse step writes each parameter's cotangent with a standalone
    add of the cotangent it was given (its seed) and a product's result, over that seed:
    element i after reading element i.  The slot replay finds no read of an overwritten
    value, and the metagradient is the one computed on two buffers, to the bit."""
    from compiler.compiled import _data_layout, state_layout
    from compiler.slots import Interface
    from runtime.metagrad import full_trajectory_metagradient
    from runtime.sweep import reverse_circuits

    prog = m.build(SHORT, steps=12)
    state = state_layout(prog)
    (c,) = (simplify(r) for r in reverse_circuits(prog).values())
    ints, floats = _data_layout(c, set(state) | {WEIGHT})
    iface = Interface(state, ints, floats, WEIGHT)
    adds = [n for n in state if c.nodes[c.outputs[n]].op is Op.ADD
            and c.inputs[n] in c.nodes[c.outputs[n]].inputs]  # fmt: skip
    assert len(adds) >= 8, adds  # every weight matrix's cotangent
    assert state_in_place(c, iface, fuse(c, [False] * len(c.nodes), 0))
    errors, _ = clobbered(c, iface, False, True, in_place=True)
    assert errors == [], errors[:3]
    g = full_trajectory_metagradient(prog, "emma")
    monkeypatch.setattr(pipeline, "state_in_place", lambda *a: False)
    np.testing.assert_array_equal(full_trajectory_metagradient(prog, "emma"), g)
