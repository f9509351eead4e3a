"""The second-order estimator and its data against a program known in closed form.

``tests/poly_program.py``'s test output is F(w) = q(e* - <b, w>), so its
Hessian in the data weights is H = q''(e*) b b^T, exactly, with no compiler
involved.  Checked here:

* the exact diagonal (degree-2 series along each unit direction, started at
  the document's first step) equals q''(e*) b_i^2 to 1e-12, and the same runs'
  first order equals the closed-form gradient to 1e-12;
* Hessian-vector products (central differences of metagradients) equal H v to
  1e-8 (their error is O(h^2) times F's third derivatives);
* the row sums H 1 equal the closed form's to 1e-8, and a set's sum of pairs is
  that of the symmetric secant matrix built from them, written densely (1e-12);
* the ``second-order`` estimator is its formula: c0 + <g, w> + (1/2) w^T A w,
  A the exact diagonal plus those pairs (1e-9 of the prediction, 1e-7 of the
  stderr: the row sums are central differences, good to about 1e-8), its stderr
  the size of that term;
* a diagonal off by one document's entry, or a series run started one step
  too late, fails these checks;
* ``evaluate`` stores each estimator's calibration factor, and ``auto``
  applies it to the stderr it reports.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import runtime.api as rt
from runtime import hessian as hs
from tests import poly_program as pp

PROGRAM = f"{Path(pp.__file__).resolve()}:build"
X, T = pp.data()
TEST = {"x": X[0], "t": np.array(0.5)}
OTHER = {"x": X[5], "t": np.array(-1.0)}


def closed_hessian(test: dict) -> np.ndarray:
    return pp.hessian(test["x"], float(test["t"]))


@pytest.fixture(scope="module")
def program():
    return pp.build()


def test_first_steps_of_a_two_epoch_run(program):
    np.testing.assert_array_equal(hs.first_steps(program), np.arange(pp.N))


def test_the_diagonal_and_first_order_equal_the_closed_form(program):
    diag, grad = hs.hessian_diagonal(program, [TEST, OTHER])
    for q, t in enumerate((TEST, OTHER)):
        h = closed_hessian(t)
        np.testing.assert_allclose(diag[q], np.diag(h), rtol=1e-12, atol=1e-15)
        want = pp.gradient(t["x"], float(t["t"]))
        np.testing.assert_allclose(grad[q], want, rtol=1e-12, atol=1e-15)


def test_a_series_run_started_late_misses_the_document(program, monkeypatch):
    """Starting each document's run one step after its first step drops its effect."""
    late = hs.first_steps(program) + 1
    monkeypatch.setattr(hs, "first_steps", lambda p: late)
    diag, _ = hs.hessian_diagonal(program, [TEST])
    assert np.max(np.abs(diag[0] - np.diag(closed_hessian(TEST)))) > 1e-6


def test_hessian_vector_products_and_the_row_sum_pairs(program):
    rng = np.random.default_rng(3)
    v = rng.normal(size=(pp.N, 2))
    hv = hs.hessian_products(program, v, [TEST, OTHER])
    for q, t in enumerate((TEST, OTHER)):
        want = closed_hessian(t) @ v
        assert np.max(np.abs(hv[q] - want)) <= 1e-8 * np.max(np.abs(want))
    h = closed_hessian(TEST)
    rows = hs.row_sums(program, [TEST])[0]
    np.testing.assert_allclose(rows, h.sum(axis=1), rtol=1e-8, atol=1e-12)
    # the pairs of the symmetric secant matrix A = (r 1' + 1 r') / N - (1'r) 1 1' / N^2, dense
    n, one = pp.N, np.ones(pp.N)
    r = h.sum(axis=1)
    a = (np.outer(r, one) + np.outer(one, r)) / n - r.sum() / n**2
    np.testing.assert_allclose(a @ one, r, rtol=1e-12)  # it maps 1 to the row sums
    diag = np.diag(h)
    index = np.array([[0, 3, 5, pp.N], [1, 2, pp.N, pp.N], [4, 6, 7, 11], [9, pp.N, pp.N, pp.N]])
    w = np.zeros((len(index), pp.N))
    for s, row in enumerate(index):
        w[s, row[row < pp.N]] = 1.0
    want = w @ diag + np.einsum("si,ij,sj->s", w, a, w) - w**2 @ np.diag(a)
    np.testing.assert_allclose(hs.quadratic_terms(diag, r, index), want, rtol=1e-12)
    # without the row sums only the diagonal is summed
    np.testing.assert_allclose(hs.quadratic_terms(diag, None, index), w @ diag, rtol=1e-14)


@pytest.fixture(scope="module")
def sketch(tmp_path_factory) -> rt.Sketch:
    out = tmp_path_factory.mktemp("poly2") / "sketch"
    return rt.precompute(rt.program(PROGRAM), out, degree=2, directions=8, seed=4)


@pytest.fixture(scope="module")
def sets() -> rt.DeletionSets:
    rng = np.random.default_rng(6)
    lists = [rng.choice(pp.N, z, replace=False) for z in (1, 2, 4, 6) for _ in range(8)]
    return rt.DeletionSets.from_lists(lists, pp.N)


def quadratic_form(test: dict, w: np.ndarray) -> np.ndarray:
    """(1/2) w^T A w, A = H's diagonal plus the pairs of the secant matrix of H 1, dense."""
    h = closed_hessian(test)
    r, one, n = h.sum(axis=1), np.ones(pp.N), pp.N
    a = (np.outer(r, one) + np.outer(one, r)) / n - r.sum() / n**2
    a[np.diag_indices(n)] = np.diag(h)
    return 0.5 * np.einsum("si,ij,sj->s", w, a, w)


def test_the_estimator_is_its_formula(sketch, sets):
    res = sketch.query(sets, [TEST, OTHER], estimator="second-order")
    w = sets.matrix()
    for d, t in enumerate((TEST, OTHER)):
        g = pp.gradient(t["x"], float(t["t"]))
        quad = quadratic_form(t, w)
        c0 = pp.truth(t["x"], float(t["t"]), np.zeros(pp.N))
        np.testing.assert_allclose(res.prediction[:, d], c0 + w @ g + quad, rtol=1e-9, atol=0)
        np.testing.assert_allclose(res.stderr[:, d], np.abs(quad), rtol=1e-7, atol=0)


def test_a_wrong_diagonal_entry_fails_the_formula_check(sketch, sets, monkeypatch):
    real = hs.quadratic_terms

    def off_by_one(diag, rows, index):
        bad = diag.copy()
        bad[3] *= 1.1
        return real(bad, rows, index)

    monkeypatch.setattr(hs, "quadratic_terms", off_by_one)
    res = sketch.query(sets, [TEST], estimator="second-order")
    w = sets.matrix()
    want = (
        pp.truth(TEST["x"], 0.5, np.zeros(pp.N))
        + w @ pp.gradient(TEST["x"], 0.5)
        + quadratic_form(TEST, w)
    )
    assert not np.allclose(res.prediction[:, 0], want, rtol=1e-9, atol=0.0)


def test_evaluate_calibrates_and_auto_applies_it(sketch, sets, tmp_path):
    report = sketch.evaluate(
        [TEST], sets=sets, estimators=["first-order", "second-order"], out=tmp_path / "ev"
    )
    by_size = report["estimators"]["second-order"]["by_size"]
    res_so = sketch.query(sets, [TEST], estimator="second-order")
    res_auto = sketch.query(sets, [TEST], estimator="auto")
    checked = 0
    for z, sc in by_size.items():
        rows = np.flatnonzero(sets.sizes == int(z))
        picked = set(res_auto.estimator[rows, 0].tolist())
        if picked == {"second-order"} and sc["scale"] is not None:
            np.testing.assert_allclose(
                res_auto.stderr[rows, 0], sc["scale"] * res_so.stderr[rows, 0], rtol=1e-12
            )
            # the factor is the 95% quantile of |error| / (2 stderr) on these sets
            true = pp.truth(TEST["x"], 0.5, sets.matrix()[rows])
            err = np.abs(res_so.prediction[rows, 0] - true)
            ratio = err / (2 * res_so.stderr[rows, 0])
            # (evaluate's truth is retraining, equal to the closed form to 1e-12)
            assert sc["scale"] == pytest.approx(float(np.quantile(ratio, 0.95)), rel=1e-8)
            checked += 1
    assert checked, "auto picked second-order at no size: nothing was checked"


def test_the_third_order_probe_is_its_dense_tensor():
    """examples/third_order_mean_field.py's term is (1/6) T(w, w, w) for the symmetric
    tensor nearest to zero with T(1, 1, .) = t, written densely: that tensor satisfies the
    constraint and is orthogonal to every symmetric tensor the constraint maps to 0."""
    from examples.third_order_mean_field import third_order_terms

    rng = np.random.default_rng(8)
    n = 7
    t = rng.normal(size=(2, n))
    w = (rng.random((5, n)) < 0.5).astype(np.float64)
    one = np.ones(n)
    for q in range(2):
        lam = (3.0 * t[q] - 2.0 * t[q].sum() / n) / n**2
        dense = (lam[:, None, None] + lam[None, :, None] + lam[None, None, :]) / 3.0
        np.testing.assert_allclose(np.einsum("ijk,i,j->k", dense, one, one), t[q], rtol=1e-12)
        want = np.einsum("ijk,si,sj,sk->s", dense, w, w, w) / 6.0
        np.testing.assert_allclose(third_order_terms(t, w)[:, q], want, rtol=1e-12, atol=1e-15)
        # nearest to zero: orthogonal to every symmetric tensor z with z(1, 1, .) = 0
        z = rng.normal(size=(n, n, n))
        z = sum(z.transpose(p) for p in
                ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))) / 6.0
        r = np.einsum("ijk,i,j->k", z, one, one)
        lam_z = (3.0 * r - 2.0 * r.sum() / n) / n**2
        z -= (lam_z[:, None, None] + lam_z[None, :, None] + lam_z[None, None, :]) / 3.0
        assert np.max(np.abs(np.einsum("ijk,i,j->k", z, one, one))) < 1e-12
        assert abs(np.sum(dense * z)) < 1e-12 * np.linalg.norm(dense) * np.linalg.norm(z)
