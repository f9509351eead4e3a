"""The groups' terms and ``third-order-groups`` (``runtime.group_terms``).

References: least-norm solutions found by ``numpy.linalg.lstsq`` over dense matrices and
tensors (the terms' definitions, not their closed forms), and the cubic program's closed
form (``tests/poly_program``), where a deleted group's output is known exactly.
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

import runtime.api as rt
from runtime import group_terms as gt
from runtime.deletion_sets import DeletionSets
from tests import poly_program as pp

PROGRAM = pp.SPEC
X, _ = pp.data()
TEST = {"x": X[0], "t": np.array(0.5)}
GROUPS = [[0, 3, 5], [1, 2, 7, 9], [4, 5, 6, 10, 11]]


def _symmetric_least_norm(rows: list[np.ndarray], rhs: list[float], shape: tuple) -> np.ndarray:
    """The least-norm symmetric array of `shape` with <row, T> = rhs for every row: lstsq
    over all entries, with T = T permuted as equations."""
    size = int(np.prod(shape))
    eqs, b = [r.ravel() for r in rows], list(rhs)
    idx = np.arange(size).reshape(shape)
    for perm in itertools.permutations(range(len(shape))):
        m = np.zeros((size, size))
        m[np.arange(size), idx.ravel()] += 1.0
        m[np.arange(size), idx.transpose(perm).ravel()] -= 1.0
        eqs += list(m)
        b += [0.0] * size
    return np.linalg.lstsq(np.array(eqs), np.array(b), rcond=None)[0].reshape(shape)


def test_the_nearest_tensor_is_the_least_norm_one_with_the_groups_contractions():
    rng = np.random.default_rng(3)
    n = 6
    v = np.array([[1, 1, 0, 0, 1, 0], [0, 1, 1, 1, 0, 0], [1, 0, 0, 1, 1, 1]], float).T
    t = rng.normal(size=(n, 3))
    b = gt.nearest_tensor(v, t)
    ours = sum(np.einsum("i,j,k->ijk", v[:, k], v[:, k], b[:, k]) for k in range(3))
    ours = sum(ours.transpose(p) for p in itertools.permutations(range(3))) / 6
    rows, rhs = [], []
    for k, m in itertools.product(range(3), range(n)):
        e = np.zeros(n)
        e[m] = 1.0
        rows.append(np.einsum("i,j,k->ijk", v[:, k], v[:, k], e))
        rhs.append(t[m, k])
    dense = _symmetric_least_norm(rows, rhs, (n, n, n))
    np.testing.assert_allclose(ours, dense, rtol=0, atol=1e-10)
    for k in range(3):  # its contractions, and a set's cubic term from them
        np.testing.assert_allclose(np.einsum("ijk,i,j->k", ours, v[:, k], v[:, k]), t[:, k],
                                   atol=1e-10)  # fmt: skip
    terms = gt.GroupTerms(v.T, np.zeros((3, n)), t.T)
    index = np.array([[0, 1, 4], [1, 2, 3], [0, 5, n]])  # padding n
    want = [np.einsum("ijk,i,j,k->", ours, w, w, w) for w in
            (np.isin(np.arange(n), r).astype(float) for r in index)]  # fmt: skip
    np.testing.assert_allclose(terms.cubic(index), want, rtol=1e-10)


def test_the_pairs_are_those_of_the_least_norm_secant_matrix():
    rng = np.random.default_rng(4)
    n = 7
    members = np.array([[1, 1, 0, 0, 1, 0, 0], [0, 0, 1, 1, 1, 1, 0]], float)
    h = rng.normal(size=(n, n))
    h = h + h.T
    diag = np.diag(h).copy()
    terms = gt.GroupTerms(members, members @ h, np.zeros((2, n)))
    v = np.vstack([np.ones(n), members]).T
    y = h @ v - diag[:, None] * v
    rows, rhs = [], []
    for k, m in itertools.product(range(3), range(n)):
        e = np.zeros((n, n))
        e[m] = v[:, k]
        rows.append(e)
        rhs.append(y[m, k])
    a = _symmetric_least_norm(rows, rhs, (n, n))
    index = np.array([[0, 1, 4, n], [2, 3, 4, 5], [0, 6, n, n]])
    want = [a[np.ix_(r[r < n], r[r < n])].sum() for r in index]
    np.testing.assert_allclose(terms.pairs(diag, h.sum(axis=1), index), want, rtol=1e-9)


def test_a_set_inside_a_group_is_concentrated_and_random_ones_are_not():
    n = 1000
    members = np.zeros((2, n))
    members[0, :25] = 1.0
    members[1, ::2] = 1.0
    rng = np.random.default_rng(0)
    sets = [list(range(25)), [], list(range(5))] + [
        sorted(rng.choice(n, z, replace=False).tolist()) for z in (1, 10, 50, 200, 500)
        for _ in range(40)]  # fmt: skip
    indptr = np.cumsum([0] + [len(s) for s in sets])
    block = DeletionSets(n, indptr, np.array([i for s in sets for i in s], np.int64),
                         np.ones(len(sets)))  # fmt: skip
    z = gt.concentration(members, block)
    # all 25 of group 0 (2.5% of the documents): (25 - 0.625) / sqrt(0.609 * 975 / 999)
    assert z[0] == pytest.approx((25 - 0.625) / np.sqrt(25 * 0.025 * 0.975 * 975 / 999))
    assert z[0] >= gt.CONCENTRATED and z[2] >= gt.CONCENTRATED and z[1] == 0.0
    assert z[3:].max() < 4.5  # random sets, 200 of them: below the threshold
    one = DeletionSets(n, np.array([0, 1, 4]), np.array([3, 0, 1, 2]), np.ones(2))
    assert list(gt.concentration(members, one)) == [0.0, 0.0]  # too few inside: z 6.2, 10.7


@pytest.fixture
def groups_file(tmp_path):
    path = tmp_path / "groups.jsonl"
    path.write_text("".join(json.dumps({"delete": g}) + "\n" for g in [*GROUPS, GROUPS[0]]))
    return path


def test_a_deleted_group_is_predicted_exactly_on_the_cubic_program(poly_sketch_copy,
                                                                  groups_file):
    """F is a cubic of w there, so first order, the group's pairs and its third order are
    all there is: a deleted group (and two disjoint ones together) is its retraining's
    closed form; second-order-windowed, without the third order, misses it."""
    sk = rt.open_sketch(poly_sketch_copy, program=PROGRAM)
    sk.second_order([TEST], diagonal="windowed", window=1, sample=pp.N)  # its exact diagonal
    members, hv, tv, anchors = sk.group_terms([TEST], doc_groups=str(groups_file))
    assert members.shape == (3, pp.N)  # the repeated line is one group
    np.testing.assert_allclose(anchors[0].ravel(),
                               pp.truth(TEST["x"], 0.5, gt.anchor_sets(members)), rtol=1e-12)
    _, b = pp.closed_form(TEST["x"], 0.5)  # F = q(e* - <b, w>), third derivative of q: 3
    np.testing.assert_allclose(hv[0], members @ pp.hessian(TEST["x"], 0.5), rtol=1e-7)
    np.testing.assert_allclose(tv[0], -3.0 * ((members @ b) ** 2)[:, None] * b, rtol=0,
                               atol=1e-9)  # a second difference at h = 1e-3: rounding 1e-10
    sets = [*GROUPS, GROUPS[0] + GROUPS[1]]
    got = sk.query(sets, [TEST], estimator="third-order-groups").prediction[:, 0]
    want = [pp.truth(TEST["x"], 0.5, np.isin(np.arange(pp.N), s)) for s in sets]
    np.testing.assert_allclose(got, want, rtol=1e-8)
    plain = sk.query(sets, [TEST], estimator="second-order-windowed").prediction[:, 0]
    assert np.min(np.abs(plain - want)) > 100 * np.max(np.abs(got - want))


@pytest.fixture(scope="module")
def quartic_sketch(tmp_path_factory):
    out = tmp_path_factory.mktemp("quartic") / "sketch"
    rt.precompute(rt.program(pp.SPEC_QUARTIC), out, degree=1, directions=4, seed=2)
    return out


def test_a_set_concentrated_in_a_group_gets_its_orders_above_three(quartic_sketch, tmp_path,
                                                                   groups_file, monkeypatch):
    """F(w) = q(e* - <b, w>) + (e* - <b, w>)^4 / 4 there: along 1_G its fourth order is
    s^4 / 4, s = <b, 1_G>, and orders 1-3 are exact for a group.  Its two retrainings (the
    group, and a part of it) make both exact (stderr 0 for the group) where orders 1-3 miss
    s^4 / 4; a set holding a share t of the group gets the group's remainder times t^p, p
    from the part's; a set not concentrated gets nothing."""
    import shutil

    test = {"x": X[1], "t": np.array(0.5)}  # s = -0.265 for group 2: s^4 / 4 = 1.2e-3
    sk_path = tmp_path / "sk"
    shutil.copytree(quartic_sketch, sk_path)
    sk = rt.open_sketch(sk_path, program=pp.SPEC_QUARTIC)
    sk.second_order([test], diagonal="windowed", window=1, sample=pp.N)
    members, _, _, anchors = sk.group_terms([test], doc_groups=str(groups_file))
    e, b = pp.closed_form(test["x"], 0.5)

    def truth(w):
        return pp.q(e - w @ b) + 0.25 * (e - w @ b) ** 4

    sets_of = gt.anchor_sets(members)
    np.testing.assert_allclose(anchors[0].ravel(), truth(sets_of), rtol=1e-12)
    part = np.flatnonzero(sets_of[3 + 2]).tolist()  # group 2's part: 4 of its 5 documents
    three = [*sorted(set(GROUPS[2]) - set(part)), *part[:2]]  # 3 of them, not all the part's
    sets = [GROUPS[2], part, three, [*GROUPS[2], 8], [0, 1, 4]]
    monkeypatch.setattr(gt, "MIN_INSIDE", 1)
    monkeypatch.setattr(gt, "CONCENTRATED", 1e9)  # no set concentrated: orders 1-3 only
    plain = sk.query(sets, [test], estimator="third-order-groups").prediction[:, 0]
    monkeypatch.setattr(gt, "CONCENTRATED", 2.0)  # sets 0-3 (z 3.3, 2.8, 2.3, 2.8), not 4
    got = sk.query(sets, [test], estimator="third-order-groups")
    want = [truth(np.isin(np.arange(pp.N), d).astype(float)) for d in sets]
    np.testing.assert_allclose(got.prediction[:2, 0], want[:2], rtol=1e-12)  # its anchors
    assert got.stderr[0, 0] == pytest.approx(0.0, abs=1e-9)
    s = members[2] @ b
    assert want[0] - plain[0] == pytest.approx(s**4 / 4, rel=1e-5)  # what orders 1-3 miss
    whole, at_part = want[0] - plain[0], want[1] - plain[1]
    a, c = np.linalg.solve([[0.8**4, 0.8**5], [1.0, 1.0]], [at_part, whole])
    if 0 < at_part / whole < 1:  # a power law through both
        a, c = whole * 0.6 ** (np.log(at_part / whole) / np.log(0.8) - 4), 0.0
    added = got.prediction[:, 0] - plain
    np.testing.assert_allclose(added[2:4], [a * 0.6**4 + c * 0.6**5, whole], rtol=1e-9)
    assert added[4] == 0.0 and (got.stderr[2:4, 0] > 0.0).all()


def test_the_remainder_falls_off_as_the_part_shows():
    """A power law through both anchors where the part's remainder is a smaller one of
    the same sign, else orders 4 and 5 through both; nothing at a share of 0."""
    whole, part = np.array([0.2, -0.3, 0.2, 0.2]), np.array([0.2 * 0.8**6, -0.3 * 0.8**2.5,
                                                            -0.1, 0.3])  # fmt: skip
    share, t = np.full(4, 0.8), np.array([[0.0, 0.5, 0.8, 1.0]] * 4)
    got = gt.remainders_at(whole, part, share, t)
    np.testing.assert_allclose(got[0], 0.2 * t[0] ** 6, rtol=1e-12)
    np.testing.assert_allclose(got[1], -0.3 * t[0] ** 2.5, rtol=1e-12)
    for k in (2, 3):  # a t^4 + c t^5 through (0.8, part) and (1, whole)
        a, c = np.linalg.solve([[0.8**4, 0.8**5], [1.0, 1.0]], [part[k], whole[k]])
        np.testing.assert_allclose(got[k], a * t[0] ** 4 + c * t[0] ** 5, rtol=1e-12,
                                   atol=1e-15)  # fmt: skip
    single = gt.remainders_at(np.array([0.2]), np.array([0.2]), np.array([1.0]), t[:1])
    np.testing.assert_allclose(single[0], 0.2 * t[0] ** 4, rtol=1e-12)


def test_auto_takes_the_groups_for_a_set_concentrated_in_one(poly_sketch_copy, groups_file,
                                                             monkeypatch):
    """With group terms stored, a set far richer in a group than random sets of its size
    are (the threshold lowered: 12 documents cannot reach 6) is answered from them."""
    monkeypatch.setattr(gt, "CONCENTRATED", 3.0)  # group 2 whole: z 3.3
    sk = rt.open_sketch(poly_sketch_copy, program=PROGRAM)
    sk.second_order([TEST], diagonal="windowed", window=1, sample=pp.N)
    sk.metagradient([TEST])
    sets = [[4, 5, 6, 10, 11], [1, 2, 7, 4], [0, 1, 2, 4, 8]]  # the others: < 4 inside one
    picks = sk.query(sets, [TEST], estimator="auto").estimator[:, 0]
    assert list(picks) == ["first-order"] * 3  # no group terms stored
    sk.group_terms([TEST], doc_groups=str(groups_file))
    picks = sk.query(sets, [TEST], estimator="auto").estimator[:, 0]
    assert list(picks) == ["third-order-groups", "first-order", "first-order"]


def test_groups_are_read_and_refused_by_name(tmp_path):
    g = gt.letter_groups(["ab", "b", "ca", "ab"])
    assert g.names == ["holding 'a'", "holding 'b'", "holding 'c'"]
    np.testing.assert_array_equal(g.members, [[1, 0, 1, 1], [1, 1, 0, 1], [0, 0, 1, 0]])
    assert gt.letter_groups(["ab", "ab"]).names == ["holding 'a'"]  # 'b': the same group
    with pytest.raises(ValueError, match=r"--doc-groups letters needs text documents"):
        gt.read_groups("letters", object(), 4)
    bad = tmp_path / "g.jsonl"
    bad.write_text('{"delete": [7]}\n')
    with pytest.raises(ValueError, match=r"--doc-groups .*g.jsonl.* line 1"):
        gt.read_groups(str(bad), object(), 4)


def test_an_interrupted_call_resumes_at_the_groups_left(poly_sketch_copy, groups_file,
                                                        monkeypatch):
    """Each group's metagradients are stored as they arrive: a call stopped after the first
    group computes only the others when run again, with the same data as one call."""
    sk = rt.open_sketch(poly_sketch_copy, program=PROGRAM)
    whole = sk.group_terms([TEST], doc_groups=str(groups_file))
    for f in (poly_sketch_copy / gt.STORE_DIR).glob("*"):
        f.unlink()
    job, ran = gt.group_job, []

    def stop_after_one(j):
        if ran:
            raise KeyboardInterrupt
        ran.append(j.group)
        return job(j)

    monkeypatch.setattr(gt, "group_job", stop_after_one)
    with pytest.raises(KeyboardInterrupt):
        sk.group_terms([TEST], doc_groups=str(groups_file))
    ran.clear()
    monkeypatch.setattr(gt, "group_job", lambda j: ran.append(j.group) or job(j))
    again = sk.group_terms([TEST], doc_groups=str(groups_file))
    assert ran == [1, 2]  # group 0 was stored
    assert all(np.array_equal(a, b) for a, b in zip(again, whole, strict=True))
    assert not list((poly_sketch_copy / gt.TASKS_DIR).glob("*.npy"))  # removed when done


def test_terms_stored_before_anchors_get_them_one_run_a_group_resumably(
        poly_sketch_copy, groups_file, monkeypatch):
    """Group terms stored without anchors (an earlier version) get them on the next call
    that computes: two training runs a group, each stored as it arrives, so a call stopped
    after the first run does only the others when run again."""
    from runtime import batch_retrain
    from runtime.metagrad import run_results

    sk = rt.open_sketch(poly_sketch_copy, program=PROGRAM)
    whole = sk.group_terms([TEST], doc_groups=str(groups_file))
    store = run_results(sk.store, gt.STORE_DIR, "stored group terms")
    store.remove(f"{sk.tests([TEST])[0].key} anchors")
    assert np.isnan(sk.group_terms([TEST], str(groups_file), compute=False)[3]).all()
    job, ran = batch_retrain.retrain_job, []

    def stop_after_one(j):
        if ran:
            raise KeyboardInterrupt
        ran.append(j.rows[0])
        return job(j)

    monkeypatch.setattr(batch_retrain, "retrain_job", stop_after_one)
    with pytest.raises(KeyboardInterrupt):
        sk.group_terms([TEST], doc_groups=str(groups_file))
    ran.clear()
    monkeypatch.setattr(batch_retrain, "retrain_job", lambda j: ran.append(j.rows[0]) or job(j))
    again = sk.group_terms([TEST], doc_groups=str(groups_file))
    assert ran == [1, 2, 3, 4, 5]  # the first run (group 0) was stored
    assert all(np.array_equal(a, b) for a, b in zip(again, whole, strict=True))
    assert not list((poly_sketch_copy / gt.TASKS_DIR).glob("*.npy"))


def test_the_cli_computes_the_groups_and_refuses_letters_without_text(poly_sketch_copy,
                                                                     groups_file, capsys):
    from tests.cli_helpers import one_line_error, run_json

    args = ["hessian", poly_sketch_copy, "--program", PROGRAM, "--test-index", 0,
            "--diagonal", "windowed", "--workers", 1]
    err = one_line_error(capsys, *args, "--doc-groups", "letters")
    assert err.startswith("error: --doc-groups letters needs text documents"), err
    groups = run_json(capsys, *args, "--doc-groups", groups_file)["groups"]
    assert groups["count"] == 3 and groups["retrained"] is True
