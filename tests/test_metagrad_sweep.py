"""The checkpointed reverse sweep equals the full-trajectory metagradient, and is bounded.

Reference: ``full_trajectory_metagradient`` (every forward state stored, one
reverse run over all of them), itself checked against central differences of
compiled retraining here and in test_metagrad.py.  Every schedule, under
tight and loose budgets, with one and two threads, must reproduce it to 1e-12
relative (it does bit for bit: the same compiled steps on the same states).
The last tests show the comparison sharp: a kept state 1e-10 off, the step to
document map shifted by one, a leaf reversed in the wrong order each fail it.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from circuitsketch.models import microgpt as m
from compiler.compiled import CompiledProgram
from runtime import sweep as sweep_mod
from runtime.checkpoints import Plan, leaf_bounds, simulate, tree_kept
from runtime.metagrad import Metagradient, full_trajectory_metagradient

N_DOCS, STEPS = 24, 61  # T not a square: leaves of unequal length
TESTS = ("max", "olivia")
TOL = 1e-12


@pytest.fixture(scope="module")
def program():
    return m.build(m.read_docs(m.corpus_path())[:N_DOCS], steps=STEPS)


@pytest.fixture(scope="module")
def reference(program):
    return np.stack([full_trajectory_metagradient(program, t) for t in TESTS])


def rel_err(g, ref) -> float:
    return float(np.max(np.abs(g - ref)) / np.max(np.abs(ref)))


def test_the_reference_matches_central_differences_of_retraining(program, reference):
    cp = CompiledProgram(program, 0)

    def loss(w):
        state, _ = cp.train(w)
        return cp.output(state, TESTS[0])

    h, eye = 1e-5, np.eye(N_DOCS)
    fd = np.array([(loss(h * eye[i]) - loss(-h * eye[i])) / (2 * h) for i in range(N_DOCS)])
    assert np.max(np.abs(reference[0] - fd) / np.abs(fd)) < 1e-6


PLANS = {
    "sqrt": None,
    "one leaf (full trajectory)": Plan("binomial", leaf_bounds(STEPS, 1), 0),
    "binomial, leaves of 1 step, 2 kept": Plan("binomial", leaf_bounds(STEPS, STEPS), 2),
    "binomial, leaves of 3, none kept": Plan("binomial", leaf_bounds(STEPS, 21), 0),
    "binomial, 12 leaves, 3 kept": Plan("binomial", leaf_bounds(STEPS, 12), 3),
    "tree k=2, leaves of 1 step": Plan("tree", leaf_bounds(STEPS, STEPS), 2),
    "tree k=3, 20 leaves": Plan("tree", leaf_bounds(STEPS, 20), 3),
}


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("name", list(PLANS))
def test_every_plan_equals_the_full_trajectory(program, reference, name, threads):
    mg = Metagradient(program, plan=PLANS[name], threads=threads)
    g = mg.many(TESTS)
    assert rel_err(g, reference) <= TOL, f"{name}: {rel_err(g, reference):.2e}"
    assert np.array_equal(g, reference)  # and in fact bit for bit


@pytest.mark.parametrize("schedule", ["sqrt", "binomial", "tree"])
def test_schedules_under_budgets(program, reference, schedule):
    loose = Metagradient(program, schedule=schedule)
    budgets = [None]
    if schedule != "sqrt":  # the tightest: x_0 and a few states beside the run's tables
        budgets.append(loose.memory.bytes(3 if schedule == "binomial" else tree_kept(STEPS, 2), 1))
    for budget in budgets:
        mg = Metagradient(program, schedule=schedule, memory_budget=budget)
        s = mg.summary()
        if budget is not None:
            assert s["memory_estimate_bytes"] <= budget and s["leaf_steps"] == 1
            assert s["forward_passes"] > 2
        assert rel_err(mg(TESTS[1]), reference[1]) <= TOL, (schedule, budget, s)


def test_a_budget_below_the_tightest_plan_is_refused(program):
    mg = Metagradient(program)
    with pytest.raises(ValueError, match="below the least the binomial schedule needs"):
        Metagradient(program, memory_budget=mg.memory.bytes(1, 1) - 1)


def test_states_kept_out_of_order_in_the_user_program_path(program, reference):
    """A state whose entries sit in the step circuit's inputs in another order than in the
    flat state: the trainer cannot write into the reverse rows directly; copied instead."""
    from dataclasses import replace

    names = list(program.init_state)
    shuffled = replace(program, init_state={n: program.init_state[n] for n in names[::-1]})
    mg = Metagradient(shuffled, plan=Plan("tree", leaf_bounds(STEPS, 9), 3), threads=2)
    assert mg.sweep.direct_column is None and Metagradient(program).sweep.direct_column == 0
    assert rel_err(mg.many(TESTS), reference) <= TOL


@pytest.mark.parametrize(
    "options", [{}, {"threads": 2}, {"schedule": "tree", "memory_budget": 3_000_000}]
)
def test_memory_is_bounded_by_the_estimate(options):
    """Peak of numpy's allocations during a sweep (tracemalloc sees them) and the leaf
    buffers ``warm`` made before it: within the plan's estimate, and far below the full
    trajectory's."""
    long = m.build(m.read_docs(m.corpus_path())[:N_DOCS], steps=400)
    mg = Metagradient(long, **options)
    mg.warm()
    held = mg.sweep.buffer_bytes
    assert held > 0
    tracemalloc.start()
    try:
        mg("max")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    peak += held
    est = mg.summary()["memory_estimate_bytes"]
    full = 2 * 400 * mg.forward.state_size * 8
    assert peak <= est, (peak, est)
    assert est < full / 4, (est, full)


def test_leaf_buffers_are_kept_for_the_next_sweep(program, reference):
    """warm makes the plan's buffers; sweeps reuse them (stale rows from the last sweep do
    not leak into the next: the same bits for every test input, in any order); a plan
    with longer leaves makes its own."""
    mg = Metagradient(program, plan=Plan("binomial", leaf_bounds(STEPS, 12), 3), threads=2)
    mg.warm()
    made = [id(leaf) for leaf in mg.sweep._buffers]
    assert len(made) == 2 and mg.sweep.buffer_bytes > 0
    for i in (1, 0, 1):
        assert np.array_equal(mg(TESTS[i]), reference[i])
        assert [id(leaf) for leaf in mg.sweep._buffers] == made
    longer = Metagradient(program, plan=Plan("sqrt", leaf_bounds(STEPS, 3)))
    longer.sweep._buffers = mg.sweep._buffers  # as if left by the other plan's sweep
    assert np.array_equal(longer(TESTS[0]), reference[0])
    assert [id(leaf) for leaf in longer.sweep._buffers] != made
    assert longer.sweep._buffers[0].capacity == longer.plan.leaf_steps


# ---------------------------------------------------------------- the checks are sharp
def _fails(program, reference, monkeypatch, plan=None) -> float:
    g = Metagradient(program, plan=plan or Plan("binomial", leaf_bounds(STEPS, 12), 3)).many(
        TESTS
    )
    monkeypatch.undo()
    return rel_err(g, reference)


def test_a_kept_state_slightly_off_is_caught(program, reference, monkeypatch):
    real = sweep_mod.Sweep._recompute

    def off(self, leaf, x_a, a, b):
        if a == leaf_bounds(STEPS, 12)[5]:
            x_a = x_a * (1 + 1e-10)
        return real(self, leaf, x_a, a, b)

    monkeypatch.setattr(sweep_mod.Sweep, "_recompute", off)
    assert _fails(program, reference, monkeypatch) > TOL


def test_a_shifted_step_to_document_map_is_caught(program, reference, monkeypatch):
    monkeypatch.setattr(sweep_mod, "step_docs", lambda docs: (docs + 1) % N_DOCS)
    assert _fails(program, reference, monkeypatch) > TOL


def test_a_leaf_reversed_in_the_wrong_order_is_caught(program, reference, monkeypatch):
    real = sweep_mod.Sweep._fill

    def unreversed(self, leaf):
        real(self, leaf)
        n = leaf.b - leaf.a
        for t in leaf.tables:
            t[:n] = t[:n][::-1].copy()

    monkeypatch.setattr(sweep_mod.Sweep, "_fill", unreversed)
    assert _fails(program, reference, monkeypatch) > TOL


def test_plans_here_are_valid(program):
    for plan in PLANS.values():
        if plan is not None:
            assert simulate(plan).forward_steps >= STEPS


# ---------------------------------------------------------------- the command line
@pytest.fixture(scope="module")
def docs_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("mg") / "names.txt"
    path.write_text("\n".join(m.read_docs(m.corpus_path())[:N_DOCS]) + "\n")
    return path


@pytest.mark.parametrize(
    "options",
    [[], ["--checkpoint-schedule", "tree", "--memory-budget", "2.6MB"],
     ["--memory-budget", "2400kB", "--threads", "2"]],
)  # fmt: skip
def test_cli_schedules_equal_the_full_trajectory(capsys, docs_file, reference, options):
    from tests.cli_helpers import run_json

    r = run_json(capsys, "metagrad", "--docs", docs_file, "--steps", STEPS, "--doc", TESTS[0],
                 *options)  # fmt: skip
    plan = r["sweep"]
    assert plan["schedule"] == (options[1] if "--checkpoint-schedule" in options
                                else "binomial" if options else "sqrt")  # fmt: skip
    if "--memory-budget" in options:
        from runtime.checkpoints import parse_bytes

        budget = parse_bytes(options[options.index("--memory-budget") + 1])
        assert plan["memory_estimate_bytes"] <= budget and plan["forward_passes"] > 2
    assert rel_err(np.array(r["metagradient"]), reference[0]) <= TOL
    assert r["peak_rss_bytes"] > 0 and r["tests_in_sweep"] == 1


def test_cli_refuses_bad_budgets_in_one_line(capsys, docs_file):
    from tests.cli_helpers import one_line_error

    base = ["metagrad", "--docs", docs_file, "--steps", STEPS, "--doc", TESTS[0]]
    err = one_line_error(capsys, *base, "--memory-budget", "100kB")
    assert "below the least the binomial schedule needs for 61 steps" in err
    err = one_line_error(capsys, *base, "--memory-budget", "2.3MB", "--checkpoint-schedule", "sqrt")
    assert "try --checkpoint-schedule binomial or tree" in err
    assert "expected a number of bytes" in one_line_error(capsys, *base, "--memory-budget", "2 XB")
    assert "invalid choice" in one_line_error(capsys, *base, "--checkpoint-schedule", "revolve")
    assert "invalid choice" in one_line_error(capsys, *base, "--threads", "3")


@pytest.mark.parametrize("threads", [1, 2])
def test_a_run_that_diverges_is_reported_from_either_thread(threads):
    import circuitsketch as cs
    from compiler.diagnose import NonFiniteError

    rng = np.random.default_rng(0)
    X = rng.normal(size=(12, 3))
    prog = cs.training_program(
        name="diverges", params={"theta": np.zeros(3)},
        loss=lambda p, x, t: ((p["theta"] * x).sum() - t) ** 2,
        docs=[{"x": X[i], "t": np.array(1.0)} for i in range(12)],
        optimizer=cs.SGD(lr=1e150, momentum=0.0), steps=40)  # fmt: skip
    mg = Metagradient(prog, threads=threads)
    with pytest.raises(NonFiniteError, match="non-finite value at training step"):
        mg({"x": X[0], "t": np.array(1.0)})


@pytest.mark.parametrize("threads", [1, 2])
def test_a_user_program_with_documents_of_two_shapes(threads):
    """Two step circuits whose data sit at different places of the reverse rows (momentum
    SGD, documents of 3 and 5 features): every plan equals the full trajectory."""
    import circuitsketch as cs

    rng = np.random.default_rng(1)
    docs = [{"x": rng.normal(size=3 if i % 3 else 5), "t": np.array(rng.normal())}
            for i in range(10)]  # fmt: skip

    def loss(p, x, t):
        return ((p["theta"][: x.shape[0]] * x).sum() - t) ** 2

    sgd = cs.SGD(lr=0.05, momentum=0.9)
    prog = cs.training_program(name="two shapes", params={"theta": np.full(5, 0.1)}, loss=loss,
                               docs=docs, optimizer=sgd, steps=37)  # fmt: skip
    test = {"x": docs[1]["x"], "t": np.array(0.3)}
    ref = full_trajectory_metagradient(prog, test)
    plans = (None, Plan("binomial", leaf_bounds(37, 37), 2), Plan("tree", leaf_bounds(37, 9), 2))
    for plan in plans:
        mg = Metagradient(prog, plan=plan, threads=threads)
        assert mg.sweep.direct_column == 0 and len(mg.sweep._fplans) == 2
        assert rel_err(mg(test), ref) <= TOL


def test_at_nonzero_weights_and_for_runs_of_one_to_three_steps():
    w = np.linspace(-0.3, 0.5, N_DOCS)
    prog = m.build(m.read_docs(m.corpus_path())[:N_DOCS], steps=30)
    g = Metagradient(prog, w, plan=Plan("tree", leaf_bounds(30, 10), 2), threads=2)(TESTS[0])
    assert rel_err(g, full_trajectory_metagradient(prog, TESTS[0], w)) <= TOL
    for T in (1, 2, 3):
        prog = m.build(m.read_docs(m.corpus_path())[:5], steps=T)
        ref = full_trajectory_metagradient(prog, TESTS[0])
        for schedule in ("sqrt", "binomial", "tree"):
            assert rel_err(Metagradient(prog, schedule=schedule)(TESTS[0]), ref) <= TOL


def test_a_sweep_s_cost_is_shared_by_the_test_inputs_it_served():
    """Per test input, as the second-order data's cost: evaluate adds tests x per-test."""
    from runtime.metagrad import MetagradResult

    r = MetagradResult("a", "a", np.zeros(3), True, seconds=8.0, train_seconds=2.0,
                       setup_seconds=None, info={"tests_in_sweep": 4})  # fmt: skip
    assert r.cost == 1.0
    r.info = {}
    assert r.cost == 4.0


@pytest.mark.parametrize("threads, direct", [(1, True), (2, True), (1, False)])
def test_an_observer_sees_the_full_trajectorys_states_and_cotangents(program, threads, direct):
    """What ``Sweep.run`` shows an Observer, leaf by leaf, equals the plain method's: every
    forward state, and each seed's cotangent of every state (the reverse program run over
    the whole stored trajectory), bit for bit; the gradient is unchanged.  direct=False:
    the states kept in a buffer of their own and copied (as for states the reverse table
    does not hold in one block)."""
    from runtime.metagrad import output_cotangent, reverse_program, trajectory

    cp = CompiledProgram(program, 0)
    traj = trajectory(cp)
    rev = CompiledProgram(reverse_program(program, cp, traj), 0, **sweep_mod.REVERSE)
    cot = []
    for t in TESTS:
        rows = np.empty((STEPS, cp.state_size))
        rev.train(state=output_cotangent(cp, traj[-1], t), trajectory=rows)
        cot.append({s: rows[STEPS - s] for s in range(1, STEPS + 1)})  # row k: x_{T-k}'s
    seen_states, seen_cots, leaves = {}, {}, []

    def seen(a, b, state, cots):
        leaves.append((a, b))
        seen_states.update({s: state(s) for s in range(a, b)})
        seen_cots.update(cots)

    def keep(a, b):
        return np.arange(a + 1, b + 1)

    mg = Metagradient(program, threads=threads)
    if not direct:
        mg.sweep.direct_column = None
    g = mg.many(list(TESTS), observe=sweep_mod.Observer(keep, seen))
    assert leaves == sorted(leaves, reverse=True) and len(leaves) == mg.plan.leaves
    assert all(np.array_equal(seen_states[s], traj[s]) for s in range(STEPS))
    assert sorted(seen_cots) == list(range(1, STEPS + 1))
    for s, c in seen_cots.items():
        assert all(np.array_equal(c[q], cot[q][s]) for q in range(len(TESTS))), s
    assert np.array_equal(g, Metagradient(program, threads=threads).many(list(TESTS)))


@pytest.mark.parametrize("threads", [1, 2])
def test_a_sweep_resumed_where_it_stood_gives_the_same_bits(program, threads):
    """``Observer.reached`` shows where the sweep stands after each leaf; a sweep resumed
    from any of those points (skipping the leaves reversed before) ends at the same g,
    bit for bit, and reverses only the leaves left.  A step inside a leaf is refused."""
    points, leaves = [], []

    def keep(a, b):
        return np.zeros(0, np.int64)

    def seen(a, b, state, cots):
        leaves.append(a)

    def reached(p):
        points.append(sweep_mod.SweepPoint(p.a, p.cotangents.copy(), p.g.copy(), p.final.copy()))

    mg = Metagradient(program, threads=threads)
    full = mg.many(list(TESTS), observe=sweep_mod.Observer(keep, seen, reached))
    assert [p.a for p in points] == leaves and points[-1].a == 0 and len(points) >= 3
    for p in (points[0], points[len(points) // 2], points[-1]):
        leaves.clear()
        g = mg.many(list(TESTS), observe=sweep_mod.Observer(keep, seen), resume=p)
        assert np.array_equal(g, full)
        assert leaves == [a for a in [q.a for q in points] if a < p.a]  # only those left
    inside = sweep_mod.SweepPoint(points[0].a + 1, *(getattr(points[0], f)
                                  for f in ("cotangents", "g", "final")))  # fmt: skip
    with pytest.raises(ValueError, match=r"cannot resume at step \d+: the plan's leaf"):
        mg.many(list(TESTS), resume=inside)
