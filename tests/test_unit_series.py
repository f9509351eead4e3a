"""The diagonal's parameter series stored beside a sketch (``runtime.unit_series``).

Against ``hessian.hessian_diagonal`` (the passes run and their outputs taken at
once) and the closed form of ``tests/poly_program.py``:

* the stored path gives the same bits as the direct one, and the closed-form
  diagonal and first order to 1e-12;
* a later call with another test input runs no series pass;
* a call interrupted after its first block resumes with the second only, to the
  same bits; two worker processes give the same bits;
* a pass that ends at parameters other than the sketch's is refused.
"""

from __future__ import annotations

import numpy as np
import pytest

import runtime.api as rt
from compiler.compiled import CompiledProgram
from runtime import hessian as hs
from runtime import unit_series as us
from runtime.sources import sketch_source
from tests import poly_program as pp

PROGRAM = pp.SPEC
X, _ = pp.data()
TEST = {"x": X[0], "t": np.array(0.5)}
OTHER = {"x": X[5], "t": np.array(-1.0)}


@pytest.fixture
def sketch(poly_sketch_copy) -> rt.Sketch:
    """A fresh copy of the cubic program's sketch, nothing derived from it stored yet."""
    return rt.open_sketch(poly_sketch_copy, program=PROGRAM)


@pytest.fixture(scope="module")
def program():
    return pp.build()


@pytest.fixture(scope="module")
def direct(program):
    return hs.hessian_diagonal(program, [TEST, OTHER])


def closed(test: dict) -> tuple[np.ndarray, np.ndarray]:
    """The closed-form Hessian (N, N) and gradient (N,) of the test output."""
    return pp.hessian(test["x"], float(test["t"])), pp.gradient(test["x"], float(test["t"]))


def stored(sk: rt.Sketch, tests: list, workers: int = 1) -> tuple[np.ndarray, np.ndarray, float]:
    return us.stored_diagonal(sk.store, sketch_source(sk.store, full=True), tests,
                              workers=workers)


def count_passes(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = CompiledProgram.train_series

    def counted(self, directions, *a, **k):
        calls.append(len(directions))
        return real(self, directions, *a, **k)

    monkeypatch.setattr(CompiledProgram, "train_series", counted)
    return calls


def test_same_bits_as_the_direct_diagonal_and_the_closed_form(sketch, program, direct):
    diag, grad, _ = stored(sketch, [TEST, OTHER])
    assert np.array_equal(diag, direct[0]) and np.array_equal(grad, direct[1])
    for q, t in enumerate((TEST, OTHER)):
        h, g = closed(t)
        np.testing.assert_allclose(diag[q], np.diag(h), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(grad[q], g, rtol=1e-12, atol=1e-15)
    assert list((sketch.path / us.STORE_DIR).glob("*.npy")), "nothing was stored"


def test_a_later_test_input_runs_no_series_pass(sketch, program, direct, monkeypatch):
    stored(sketch, [TEST])
    calls = count_passes(monkeypatch)
    diag, grad, _ = stored(sketch, [OTHER])
    assert calls == []
    assert np.array_equal(diag[0], direct[0][1]) and np.array_equal(grad[0], direct[1][1])
    # and through the estimator's data: second-order of OTHER reads the stored series
    found = rt.open_sketch(sketch.path, program=PROGRAM)
    from runtime.second_order import sketch_second_order

    got = sketch_second_order(found.store, [OTHER])
    assert calls == []
    assert np.array_equal(next(iter(got.values())).diag, direct[0][1])


def test_an_interrupted_call_resumes_at_the_missing_block(sketch, program, direct, monkeypatch):
    monkeypatch.setattr(us, "BLOCK_PASSES", 1)  # N = 12: two passes, two blocks
    assert len(hs.diagonal_groups(program)) == 2
    real = us.unit_block_job
    calls: list[int] = []

    def stops_at_the_second(job):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(job)

    monkeypatch.setattr(us, "unit_block_job", stops_at_the_second)
    with pytest.raises(KeyboardInterrupt):
        stored(sketch, [TEST])
    monkeypatch.setattr(us, "unit_block_job", real)
    passes = count_passes(monkeypatch)
    diag, grad, _ = stored(sketch, [TEST, OTHER])
    assert passes == [len(hs.diagonal_groups(program)[1])]  # the second pass only
    assert np.array_equal(diag, direct[0]) and np.array_equal(grad, direct[1])


def test_two_workers_give_the_same_bits(sketch, direct, monkeypatch):
    monkeypatch.setattr(us, "BLOCK_PASSES", 1)  # two blocks: one task each
    diag, grad, _ = stored(sketch, [TEST, OTHER], workers=2)
    assert np.array_equal(diag, direct[0]) and np.array_equal(grad, direct[1])
    assert len(list((sketch.path / us.STORE_DIR).glob("*.npy"))) == 2


def test_a_pass_ending_elsewhere_is_refused(sketch, program, monkeypatch):
    p0 = sketch.store.params0().copy()
    p0[0] += 1e-12
    monkeypatch.setattr(type(sketch.store), "params0", lambda self: p0)
    with pytest.raises(RuntimeError, match="not the sketch's"):
        stored(sketch, [TEST])


def test_the_python_api_gives_the_data_and_refuses_what_is_missing(sketch):
    with pytest.raises(ValueError, match="no stored second-order data"):
        sketch.second_order([OTHER], compute=False)
    diag, rows = sketch.second_order([TEST, OTHER])
    for q, t in enumerate((TEST, OTHER)):
        h, _ = closed(t)
        np.testing.assert_allclose(diag[q], np.diag(h), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(rows[q], h.sum(axis=1), rtol=1e-8, atol=1e-12)
    again = sketch.second_order([OTHER], compute=False)  # now stored
    assert np.array_equal(again[0][0], diag[1]) and np.array_equal(again[1][0], rows[1])
