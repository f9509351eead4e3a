"""compiler.gemm: register-tile products against numpy, bit for bit.

The tiles sum each result element over the inner index in order, one multiply
and one add per term, so numpy's elementwise arithmetic in the same order is an
exact reference: any fused multiply-add, reordering or misplaced tile changes
bits.  Blocks sit inside larger arrays, so writes outside them are caught too.
"""

from __future__ import annotations

import numpy as np
import pytest

from compiler.gemm import LANES, ROWS, gemm


def _sequential(c, a, b):
    """c + sum_q a[:, q] b[q, :], summed in order q = 0, 1, ..."""
    out = c.copy()
    for q in range(a.shape[1]):
        out = out + a[:, q : q + 1] * b[q : q + 1, :]
    return out


SHAPES = [
    (m, n, kd)
    for m in (1, ROWS - 1, ROWS, ROWS + 1, 2 * ROWS + 3)
    for n in (LANES, 2 * LANES, 3 * LANES, 5 * LANES)
    for kd in (0, 1, 7, 16)
]


@pytest.mark.parametrize("accumulate", [True, False])
@pytest.mark.parametrize(("m", "n", "kd"), SHAPES)
def test_gemm_equals_sequential_sums(m, n, kd, accumulate):
    rng = np.random.default_rng(m * 1000 + n * 10 + kd)
    ldc, lda, ldb = n + 3, kd + 2, n + 5  # blocks inside wider rows
    c0, a0, b0 = 4, 3, 6
    C = rng.standard_normal(c0 + m * ldc + 7)
    A = rng.standard_normal(a0 + m * lda + 1)
    Bm = rng.standard_normal(b0 + max(kd, 1) * ldb + 2)
    before = C.copy()
    gemm(C, c0, ldc, A, a0, lda, Bm, b0, ldb, m, n, kd, accumulate)

    def block(arr, off, ld, rows, cols):
        return arr[off : off + rows * ld].reshape(rows, ld)[:, :cols]

    start = block(before, c0, ldc, m, n) if accumulate else np.zeros((m, n))
    want = _sequential(start, block(A, a0, lda, m, kd), block(Bm, b0, ldb, kd, n))
    assert np.array_equal(block(C, c0, ldc, m, n), want)
    mask = np.ones(C.size, bool)
    for i in range(m):
        mask[c0 + i * ldc : c0 + i * ldc + n] = False
    assert np.array_equal(C[mask], before[mask]), "gemm wrote outside its block"


def test_gemm_rejects_bad_blocks():
    C, A, Bm = np.zeros(64), np.zeros(64), np.zeros(64)
    with pytest.raises(ValueError, match="multiple of LANES"):
        gemm(C, 0, 12, A, 0, 2, Bm, 0, 12, 2, 12, 2, True)
    with pytest.raises(IndexError, match="C or A"):
        gemm(C, 0, 40, A, 0, 2, Bm, 0, 8, 2, 32, 2, True)  # second row of C ends at 72
    with pytest.raises(IndexError, match="C or A"):
        gemm(C, 0, 8, A, 61, 2, Bm, 0, 8, 2, 8, 2, True)  # A ends at 65
    with pytest.raises(IndexError, match="Bm"):
        gemm(C, 0, 8, A, 0, 2, Bm, 0, 60, 2, 8, 2, True)
    with pytest.raises(IndexError, match="C or A"):
        gemm(C, -1, 8, A, 0, 2, Bm, 0, 8, 2, 8, 2, True)
