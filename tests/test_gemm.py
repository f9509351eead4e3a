"""compiler.gemm: register-tile products against numpy, bit for bit.

The tiles sum each result element over segments and the inner index in order,
one multiply and one add per term, so numpy's elementwise arithmetic in the
same order is an exact reference: any fused multiply-add, reordering, wrong
mask or misplaced tile changes bits.  REAL_FMA's reference is exact rational
arithmetic rounded once per term.  Blocks sit inside larger arrays with
wider rows, so writes outside them are caught too.
"""

from __future__ import annotations

import numpy as np
import pytest

from compiler.gemm import COMPLEX, LANES, PAIR, REAL, REAL_FMA, ROWS, gemm, gemm_batch


def _block(arr, off, ld, rows, cols):
    return arr[off : off + rows * ld].reshape(rows, ld)[:, :cols]


def _reference(kind, start, A, a0, lda, Bm, b0, ldb, m, n, kd, nseg, aseg, bseg):
    """The same sums as gemm, in the same order, in numpy."""
    out = start.copy()
    step = 1 if kind == REAL else 2
    for s in range(nseg):
        for q in range(kd):
            b = Bm[b0 + s * bseg + q * ldb :][:n]
            a = np.array([A[a0 + s * aseg + i * lda + q * step :][:step] for i in range(m)])
            if kind == REAL:
                out = out + a[:, :1] * b
            elif kind == PAIR:
                out = out + np.tile(a, n // 2) * b
            else:
                swapped = b.reshape(-1, 2)[:, ::-1].ravel() * np.tile([-1.0, 1.0], n // 2)
                out = out + a[:, :1] * b
                out = out + a[:, 1:] * swapped
    return out


# LANES + 2 and 3 LANES + 6 end in a tile of a vector and a masked one (9 to 15 doubles)
WIDTHS = (2, LANES - 2, LANES, LANES + 2, 2 * LANES, 2 * LANES + 6, 3 * LANES + 6, 4 * LANES + 6,
          5 * LANES)
SHAPES = [
    (kind, m, n, kd)
    for kind in (REAL, PAIR, COMPLEX)
    for m in (1, ROWS - 1, ROWS, 2 * ROWS + 3)
    for n in WIDTHS
    for kd in (0, 1, 7)
]


@pytest.mark.parametrize(("kind", "m", "n", "kd"), SHAPES)
def test_gemm_equals_ordered_sums(kind, m, n, kd):
    rng = np.random.default_rng(m * 1000 + n * 10 + kd + 7 * kind)
    nseg = 3 if kind == COMPLEX else 1
    step = 1 if kind == REAL else 2
    ldc, lda, ldb = n + 4, kd * step + 4, n + 6  # blocks inside wider rows
    c0, a0 = 4, 2
    aseg, bseg = m * lda + 2, -(max(kd, 1) * ldb + 2)  # B's segments run backwards
    b0 = -bseg * (nseg - 1) + 6
    C = rng.standard_normal(c0 + m * ldc + 7)
    A = rng.standard_normal(a0 + nseg * aseg + 1)
    Bm = rng.standard_normal(b0 + max(kd, 1) * ldb + 2)
    before = C.copy()
    gemm(kind, C, c0, ldc, A, a0, lda, Bm, b0, ldb, m, n, kd, nseg, aseg, bseg)
    start = np.zeros((m, n)) if kind == REAL else _block(before, c0, ldc, m, n)
    want = _reference(kind, start, A, a0, lda, Bm, b0, ldb, m, n, kd, nseg, aseg, bseg)
    assert np.array_equal(_block(C, c0, ldc, m, n), want)
    outside = np.ones(C.size, bool)
    for i in range(m):
        outside[c0 + i * ldc : c0 + i * ldc + n] = False
    assert np.array_equal(C[outside], before[outside]), "gemm wrote outside its block"


@pytest.mark.parametrize(("m", "n", "kd"), [(1, 8, 3), (ROWS, 2 * LANES, 7), (2 * ROWS + 3, 21, 5)])
def test_a_left_operand_lying_transposed_is_read_with_its_entry_step(m, n, kd):
    """REAL with lda = 1 and astep = the transposed block's row length (here m + 3,
    rows padded): the same ordered sums as A as rows."""
    rng = np.random.default_rng(m + n + kd)
    a = rng.standard_normal((m, kd))
    at = np.zeros((kd, m + 3))
    at[:, :m] = a.T
    Bm = rng.standard_normal(kd * n)
    C = np.full(m * n, np.nan)
    gemm(REAL, C, 0, n, at.ravel(), 0, 1, Bm, 0, n, m, n, kd, 1, 0, 0, m + 3)
    want = _reference(REAL, np.zeros((m, n)), a.ravel(), 0, kd, Bm, 0, n, m, n, kd, 1, 0, 0)
    assert np.array_equal(C.reshape(m, n), want)
    with pytest.raises(IndexError, match="C or A"):  # a step that runs past the block
        gemm(REAL, C, 0, n, at.ravel(), 0, 1, Bm, 0, n, m, n, kd, 1, 0, 0, at.size)
    with pytest.raises(ValueError, match="entry step"):
        gemm(REAL, C, 0, n, at.ravel(), 0, 1, Bm, 0, n, m, n, kd, 1, 0, 0, -1)


def test_complex_product_is_the_complex_product():
    """COMPLEX on interleaved parts is x @ y of complex matrices (to rounding)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 6)) + 1j * rng.standard_normal((5, 6))
    y = rng.standard_normal((6, 7)) + 1j * rng.standard_normal((6, 7))
    z = np.zeros((5, 7), complex)
    zf, xf, yf = z.view(np.float64).ravel(), x.view(np.float64).ravel(), y.view(np.float64).ravel()
    gemm(COMPLEX, zf, 0, 14, xf, 0, 12, yf, 0, 14, 5, 14, 6)
    np.testing.assert_allclose(z, x @ y, rtol=1e-13, atol=1e-13)
    w = rng.standard_normal((6, 7))
    wd = np.repeat(w, 2, axis=1).ravel()
    z[:] = 0
    gemm(PAIR, zf, 0, 14, xf, 0, 12, wd, 0, 14, 5, 14, 6)
    np.testing.assert_allclose(z, x @ w, rtol=1e-13, atol=1e-13)


def test_gemm_rejects_bad_blocks():
    C, A, Bm = np.zeros(64), np.zeros(64), np.zeros(64)
    with pytest.raises(ValueError, match="odd complex width"):
        gemm(PAIR, C, 0, 12, A, 0, 4, Bm, 0, 12, 2, 7, 2)
    with pytest.raises(ValueError, match="bad kind"):
        gemm(3, C, 0, 12, A, 0, 4, Bm, 0, 12, 2, 8, 2)
    for strides in ((-8, 2, 8), (8, -2, 8), (8, 2, -8)):  # row 1 would lie before row 0
        ldc, lda, ldb = strides
        with pytest.raises(ValueError, match="negative row stride"):
            gemm(REAL, C, 32, ldc, A, 32, lda, Bm, 32, ldb, 2, 8, 2)
    with pytest.raises(IndexError, match="C or A"):
        gemm(REAL, C, 0, 40, A, 0, 2, Bm, 0, 8, 2, 32, 2)  # second row of C ends at 72
    with pytest.raises(IndexError, match="C or A"):
        gemm(REAL, C, 0, 8, A, 61, 2, Bm, 0, 8, 2, 8, 2)  # A ends at 65
    with pytest.raises(IndexError, match="C or A"):
        gemm(COMPLEX, C, 0, 8, A, 0, 4, Bm, 0, 8, 2, 8, 2, 3, 30, 8)  # third segment of A
    with pytest.raises(IndexError, match="Bm"):
        gemm(REAL, C, 0, 8, A, 0, 2, Bm, 0, 60, 2, 8, 2)
    with pytest.raises(IndexError, match="Bm"):
        gemm(COMPLEX, C, 0, 8, A, 0, 4, Bm, 8, 8, 2, 8, 2, 2, 4, -16)  # second segment at -8
    with pytest.raises(IndexError, match="C or A"):
        gemm(REAL, C, -1, 8, A, 0, 2, Bm, 0, 8, 2, 8, 2)


@pytest.mark.parametrize("kind", [REAL, PAIR, COMPLEX])
def test_a_batch_of_products_is_each_product(kind):
    """gemm_batch(..., batches, cb, ab, bb) is one gemm per product at the moved offsets,
    bit for bit; the bounds are those of the last product."""
    rng = np.random.default_rng(kind)
    P, m, n, kd = 5, ROWS + 3, LANES + 2, 3
    step = 1 if kind == REAL else 2
    lda, ldb, ldc = kd * step, n, n
    ab, bb, cb = m * lda + 1, kd * ldb + 3, m * ldc + 2  # gaps between products
    A, Bm = rng.standard_normal(P * ab), rng.standard_normal(P * bb)
    C = rng.standard_normal(P * cb)
    one_by_one = C.copy()
    for p in range(P):
        gemm(kind, one_by_one, p * cb, ldc, A, p * ab, lda, Bm, p * bb, ldb, m, n, kd)
    gemm_batch(kind, C, 0, ldc, A, 0, lda, Bm, 0, ldb, m, n, kd, 1, P, cb, ab, bb)
    assert np.array_equal(C, one_by_one)
    with pytest.raises(IndexError, match="C or A"):
        gemm_batch(kind, C, 0, ldc, A, 0, lda, Bm, 0, ldb, m, n, kd, 1, P, cb + 1, ab, bb)
    with pytest.raises(IndexError, match="Bm"):
        gemm_batch(kind, C, 0, ldc, A, 0, lda, Bm, 0, ldb, m, n, kd, 1, P, cb, ab, bb + 1)
    with pytest.raises(ValueError, match="batch step"):
        gemm_batch(kind, C, 0, ldc, A, 0, lda, Bm, 0, ldb, m, n, kd, 1, P, -cb, ab, bb)


@pytest.mark.parametrize(("m", "n", "kd"), [(ROWS + 1, 2 * LANES + 6, 9), (2, 4 * LANES + 3, 1)])
@pytest.mark.parametrize("transposed", [False, True])
def test_fused_products_round_once_per_term(m, n, kd, transposed):
    """REAL_FMA: each term a * b + acc rounded once, in order (exact fractions as the
    reference), which differs from REAL's two roundings; blocks inside wider rows."""
    from fractions import Fraction

    rng = np.random.default_rng(m + n + kd)
    ldc, ldb, c0, a0, b0 = n + 3, n + 5, 2, 1, 3
    C = np.full(c0 + m * ldc + 4, 7.0)
    lda, astep = (1, m) if transposed else (kd + 2, 1)  # A lying transposed: entry step m
    A, Bm = rng.normal(size=a0 + m * kd + 2 * m + 8), rng.normal(size=b0 + kd * ldb + 4)
    gemm(REAL_FMA, C, c0, ldc, A, a0, lda, Bm, b0, ldb, m, n, kd, 1, 0, 0, astep)
    want = np.empty((m, n))
    for i in range(m):
        for j in range(n):
            acc = 0.0
            for q in range(kd):
                a, b = A[a0 + i * lda + q * astep], Bm[b0 + q * ldb + j]
                acc = float(Fraction(a) * Fraction(b) + Fraction(acc))
            want[i, j] = acc
    got = _block(C, c0, ldc, m, n)
    np.testing.assert_array_equal(got, want)
    outside = np.ones(C.size, bool)
    for i in range(m):
        outside[c0 + i * ldc : c0 + i * ldc + n] = False
    assert np.all(C[outside] == 7.0), "a write outside the block"
    plain = np.full_like(C, 7.0)
    gemm(REAL, plain, c0, ldc, A, a0, lda, Bm, b0, ldb, m, n, kd, 1, 0, 0, astep)
    if kd > 1:
        assert not np.array_equal(_block(plain, c0, ldc, m, n), got)  # fused: other bits
