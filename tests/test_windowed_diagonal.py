"""The windowed diagonal of the second-order data (``runtime.windowed_diagonal``).

References: the direct series passes of ``runtime.hessian`` and the cubic program's
closed form (``tests/poly_program``).  Its passes must cover every visit of every
document exactly once, which their first order checks against the metagradient.
"""

from __future__ import annotations

import numpy as np
import pytest

import circuitsketch as cs
import runtime.api as rt
from runtime import hessian as hs
from runtime import windowed_diagonal as wd
from tests import poly_program as pp

PROGRAM = pp.SPEC
X, _ = pp.data()
TEST = {"x": X[0], "t": np.array(0.5)}
OTHER = {"x": X[5], "t": np.array(-1.0)}


def cubic(epochs: int, batch_size: int = 1, shuffle_seed: int | None = None):
    """The cubic program over `epochs` epochs, in batches."""
    x, t = pp.data()
    return cs.training_program(
        name="cubic12", params={"theta": pp.theta0()}, loss=pp.loss, output=pp.output,
        docs=[{"x": x[i], "t": np.array(t[i])} for i in range(pp.N)],
        optimizer=cs.SGD(lr=pp.LR, momentum=0.0), batch_size=batch_size, epochs=epochs,
        shuffle_seed=shuffle_seed,
    )  # fmt: skip


@pytest.mark.parametrize("batch_size, shuffle_seed", [(1, None), (5, 3)])
@pytest.mark.parametrize("window", [1, 3, 100])
def test_every_visit_is_in_exactly_one_pass(batch_size, shuffle_seed, window):
    program = cubic(3, batch_size, shuffle_seed)
    passes = wd.window_passes(program, window)
    visits = {d: [s for s, st in enumerate(program.steps) if d in st.docs]
              for d in range(pp.N)}  # fmt: skip
    covered: dict[int, list[int]] = {d: [] for d in range(pp.N)}
    for p in passes:
        assert 1 <= len(p.docs) <= hs.DIAGONAL_GROUP and len(set(p.docs)) == len(p.docs)
        for d in p.docs:
            mine = [s for s in visits[d] if p.start <= s < p.stop]
            assert mine, (p, d)  # a pass holds a document it trains on
            covered[int(d)] += mine
        last = max(s for d in p.docs for s in visits[d] if s < p.stop)
        assert p.stop <= min(program.num_steps, last + 1 + window)
    assert all(sorted(covered[d]) == visits[d] for d in range(pp.N)), covered


def test_a_window_to_the_end_is_the_exact_diagonal(monkeypatch):
    monkeypatch.setattr(pp, "EPOCHS", 1)  # one visit a document: its pass reaches the end
    program = cubic(1)
    diag, grad = wd.windowed_diagonal(program, [TEST, OTHER], window=program.num_steps)
    direct = hs.hessian_diagonal(program, [TEST, OTHER])
    assert np.array_equal(diag, direct[0])  # the same passes, so the same bits
    np.testing.assert_allclose(grad, direct[1], rtol=1e-12)  # the sweep's g
    for q, t in enumerate([TEST, OTHER]):
        h = np.diag(pp.hessian(t["x"], float(t["t"])))
        np.testing.assert_allclose(diag[q], h, rtol=1e-12, atol=1e-14)


def test_a_short_window_carries_order_two_by_the_adjoint():
    """The cubic program's parameters are affine in w: a pass that stops before the end
    ends with no order 2, so only passes reaching the end add to the diagonal, and the
    first order is still the closed form's."""
    program = cubic(2)
    window = 2
    diag, grad = wd.windowed_diagonal(program, [TEST], window=window)
    np.testing.assert_allclose(grad[0], pp.gradient(TEST["x"], 0.5), rtol=1e-12, atol=1e-15)
    early = set(range(pp.N)) - {int(d) for p in wd.window_passes(program, window)
                                if p.stop == program.num_steps for d in p.docs}  # fmt: skip
    assert early and all(diag[0, d] == 0.0 for d in early)
    assert np.any(diag[0] != 0.0)


def test_shuffled_batches_of_several_epochs_pass_the_first_order_check():
    """Documents visited in three epochs, in shuffled batches of 5: the passes' first order
    (checked inside against the metagradient) is the closed form's."""
    program = cubic(3, batch_size=5, shuffle_seed=3)
    _, grad = wd.windowed_diagonal(program, [TEST], window=1)
    from runtime.metagrad import metagradient

    np.testing.assert_allclose(grad[0], metagradient(program, TEST), rtol=1e-12, atol=1e-15)


def test_a_visit_left_out_is_caught(monkeypatch):
    program = cubic(2)
    every = wd.window_passes(program, 2)
    monkeypatch.setattr(wd, "window_passes", lambda *a: every[1:])
    with pytest.raises(RuntimeError, match="first order differs from the metagradient"):
        wd.windowed_diagonal(program, [TEST], window=2)


def test_what_the_windows_miss_is_a_trimmed_mean():
    exact = np.zeros((1, 12))
    windowed = np.zeros((1, 12))
    sample = np.arange(10)
    exact[0, :10] = np.arange(10.0)  # residuals 0..9 ...
    exact[0, 3] = 1000.0  # ... one far out: cut, with the smallest
    assert wd.missed(windowed, exact, sample)[0] == pytest.approx(np.mean([1, 2, 4, 5, 6, 7, 8, 9]))
    trained = np.arange(11)  # document 11 is never trained on: stays 0
    out = wd.corrected(windowed, exact, sample, trained)
    assert np.array_equal(out[0, :10], exact[0, :10])
    assert out[0, 10] == pytest.approx(np.mean([1, 2, 4, 5, 6, 7, 8, 9])) and out[0, 11] == 0.0


def test_the_sample_is_seeded_and_trained_on():
    program = cubic(1)
    a, b = wd.sample_docs(program, 5, 0), wd.sample_docs(program, 5, 0)
    assert np.array_equal(a, b) and len(set(a)) == 5 and np.all(np.diff(a) > 0)
    assert not np.array_equal(a, wd.sample_docs(program, 5, 1))
    assert np.array_equal(wd.sample_docs(program, 50, 0), np.arange(pp.N))


def test_sampling_every_document_gives_the_exact_data_and_estimator(poly_sketch_copy):
    """With every document in the sample the windowed data are the exact ones, so the two
    estimators agree; the closed form checks both."""
    sk = rt.open_sketch(poly_sketch_copy, program=PROGRAM)
    diag, rows = sk.second_order([TEST], diagonal="windowed", window=1, sample=pp.N)
    h = pp.hessian(TEST["x"], 0.5)
    np.testing.assert_allclose(diag[0], np.diag(h), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(rows[0], h.sum(axis=1), rtol=1e-6, atol=1e-8)
    sets = [[0, 3], [5], [1, 2, 7, 9]]
    win = sk.query(sets, [TEST], estimator="second-order-windowed")
    exact = sk.query(sets, [TEST], estimator="second-order")
    np.testing.assert_allclose(win.prediction, exact.prediction, rtol=1e-13)


def test_passes_split_into_tasks_give_the_same_diagonal():
    """Each task runs its own sweep for a range of the passes; their sums are one
    process's diagonal (up to the order of the additions)."""
    program = cubic(3, batch_size=5, shuffle_seed=3)
    passes = wd.window_passes(program, 2)
    whole, _ = wd.windowed_diagonal(program, [TEST, OTHER], window=2)
    split = wd.parts(passes, 3)
    assert [a for a, _ in split] == [0, *[b for _, b in split[:-1]]] and split[-1][1] == len(passes)
    assert len(split) == 3
    total = sum(wd.window_terms(program, [TEST, OTHER], 2, part=p)[0] for p in split)
    np.testing.assert_allclose(total, whole, rtol=1e-13, atol=1e-16)


def test_two_worker_processes_give_the_same_windowed_diagonal(poly_sketch_copy):
    from runtime.sources import sketch_source

    source = sketch_source(rt.open_sketch(poly_sketch_copy, program=PROGRAM).store, full=True)
    one = wd.run_windows(source, [TEST], 2, workers=1)
    two = wd.run_windows(source, [TEST], 2, workers=2)
    np.testing.assert_allclose(two[0], one[0], rtol=1e-13, atol=1e-16)
    assert np.array_equal(two[1], one[1])  # the same sweep's g
    again = wd.run_windows(source, [TEST], 2, workers=2)
    assert np.array_equal(again[0], two[0])  # summed in the tasks' order: the same bits


def test_bad_settings_are_refused_by_name(poly_sketch_copy):
    sk = rt.open_sketch(poly_sketch_copy, program=PROGRAM)
    with pytest.raises(ValueError, match=r"the window must be >= 1 step, got 0"):
        sk.second_order([TEST], diagonal="windowed", window=0)
    with pytest.raises(ValueError, match=r"the sample must be >= 0 documents, got -1"):
        sk.second_order([TEST], diagonal="windowed", sample=-1)
    with pytest.raises(ValueError, match=r"diagonal: 'fast'; expected 'exact' or 'windowed'"):
        sk.second_order([TEST], diagonal="fast")


class Interrupt(Exception):
    """Stands for a Ctrl-C in the middle of a task."""


def test_a_task_resumes_from_its_stored_state_with_the_same_bits(monkeypatch):
    """A task shows its state after each leaf of its sweep; stopped after two, packed and
    unpacked as it is stored, it goes on from there to the uninterrupted task's bits,
    running only the passes left."""
    from compiler.compiled import CompiledProgram

    program = cubic(3, batch_size=5, shuffle_seed=3)
    tests = [TEST, OTHER]
    whole = wd.window_terms(program, tests, 2)
    states = []

    def save(state):
        states.append(state.pack())
        if len(states) == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        wd.window_terms(program, tests, 2, save=save)
    arr, layout = states[-1]
    state = wd.WindowState.unpack(arr, layout, len(tests), pp.N,
                                  CompiledProgram(program, 0).state_size)  # fmt: skip
    assert 0 < state.point.a < program.num_steps
    series = CompiledProgram(program, 2)
    ran = []
    train_series = series.train_series
    monkeypatch.setattr(series, "train_series", lambda *a, **k: ran.append(k["start"]) or
                        train_series(*a, **k))  # fmt: skip
    again = wd.window_terms(program, tests, 2, series=series, resume=state)
    assert all(np.array_equal(x, y) for x, y in zip(again, whole, strict=True))
    left = [p.start for p in wd.window_passes(program, 2) if p.start < state.point.a]
    assert sorted(ran) == sorted(left) and len(left) < len(wd.window_passes(program, 2))
    with pytest.raises(ValueError, match=r"stored state holds \d+ values, expected \d+"):
        wd.WindowState.unpack(arr[:-1], layout, len(tests), pp.N, series.state_size)


def test_an_interrupted_windowed_call_resumes_where_its_tasks_stopped(poly_sketch_copy,
                                                                     monkeypatch):
    """Through ``Sketch.second_order``: a call stopped inside its window task leaves the
    task's state beside the sketch; the next call resumes it and stores the same data,
    bit for bit, as a call without a stop, then removes the task's state."""
    from pathlib import Path

    from compiler.compiled import CompiledProgram
    from runtime.sources import sketch_source
    from runtime.spec import compiled

    sk = rt.open_sketch(poly_sketch_copy, program=PROGRAM)
    whole = sk.second_order([TEST], diagonal="windowed", window=1, sample=2)
    tasks = Path(poly_sketch_copy) / wd.STORE_DIR
    assert not list(tasks.glob("*.npy"))  # removed once the data were stored
    for f in (Path(poly_sketch_copy) / "second_order_windowed").glob("*"):
        f.unlink()
    monkeypatch.setattr(wd, "CHECKPOINT_SECONDS", 0.0)  # a state after every leaf
    monkeypatch.setattr(wd, "SAVE_SHARE", 0)
    pack, calls = wd.WindowState.pack, []

    def pack_twice(self):
        calls.append(self.point.a)
        if len(calls) == 3:
            raise Interrupt
        return pack(self)

    monkeypatch.setattr(wd.WindowState, "pack", pack_twice)
    with pytest.raises(Interrupt):
        sk.second_order([TEST], diagonal="windowed", window=1, sample=2)
    assert len(list(tasks.glob("*.npy"))) == 1
    monkeypatch.setattr(wd.WindowState, "pack", pack)
    ran = []
    train_series = CompiledProgram.train_series
    monkeypatch.setattr(CompiledProgram, "train_series",
                        lambda self, *a, **k: ran.append(k.get("start")) or
                        train_series(self, *a, **k))  # fmt: skip
    again = sk.second_order([TEST], diagonal="windowed", window=1, sample=2)
    assert all(np.array_equal(x, y) for x, y in zip(again, whole, strict=True))
    program = compiled(sketch_source(sk.store, full=True), 0).program
    assert 0 < len(ran) < len(wd.window_passes(program, 1))  # only the passes left
    assert not list(tasks.glob("*.npy"))
