"""Kernels of matrix products, order 0 and the matrix Cauchy product of higher orders.

Both run on the register tiles of ``compiler/gemm.py`` over the blocks where
they lie (float64 views, real and imaginary parts interleaved), so nothing is
packed per direction.
"""

from __future__ import annotations

import numpy as np

from compiler.gemm import COMPLEX, LANES, PAIR, REAL, REAL_FMA, gemm, gemm_batch
from compiler.layout import BB, E0, E1, E2, E3, HA, HB, HO, OUT, A, C
from compiler.views import hflat, jit

TRANSPOSED = 1
"""Column C of a product's row, bit 0: its right operand lies transposed at BB (see matmul)."""
LEFT_TRANSPOSED = 2
"""Column C of a product's row, bit 1: its left operand lies transposed at A (see matmul)."""
FUSED = 4
"""Column C of a product's row, bit 2: each term is added by a fused multiply-add."""

PANEL = 4 * LANES  # columns of the right operand packed at a time (one widest tile)


@jit
def matmul(X, Y, Z, code, r):
    """(P, M, Kd) @ (P, Kd, Nn): E0..E3 = P, M, Kd, Nn, on register tiles (compiler/gemm.py).

    C & TRANSPOSED: the right operand is given as its transpose (P, Nn, Kd), where it
    lies (a weight read as x @ W.T): PANEL of its columns at a time are packed into a
    block that stays in cache, instead of the whole transpose being written out and read
    back.  C & LEFT_TRANSPOSED: the left operand is given as its transpose (P, Kd, M)
    (dW = dY.T @ x): the tiles read its entries one at a time anyway, so they read them
    where they lie, with no packing.  Each result is the same sum in the same order
    either way, so the same bits.  C & FUSED: each term is added by a fused
    multiply-add (``gemm.REAL_FMA``)."""
    P, M, Kd, Nn = code[r, E0], code[r, E1], code[r, E2], code[r, E3]
    x = X[code[r, A] :][: P * M * Kd]
    flags = max(code[r, C], 0)  # -1: a plain product
    kind = REAL_FMA if flags & FUSED else REAL
    lda, astep = (1, M) if flags & LEFT_TRANSPOSED else (Kd, 1)
    z = Z[code[r, OUT] :][: P * M * Nn]
    if flags & TRANSPOSED:
        _matmul_transposed(kind, x, lda, astep, Y[code[r, BB] :][: P * Nn * Kd], z, P, M, Kd,
                           Nn)  # fmt: skip
        return
    y = Y[code[r, BB] :][: P * Kd * Nn]
    gemm_batch(kind, z, 0, Nn, x, 0, lda, y, 0, Nn, M, Nn, Kd, astep, P, M * Nn, M * Kd, Kd * Nn)


@jit
def _matmul_transposed(kind, x, lda, astep, yt, z, P, M, Kd, Nn):
    room = np.empty(Kd * PANEL + LANES)  # the panel from a cache line's start: its vector
    panel = room[(-(room.ctypes.data // 8)) % LANES :]  # loads then never straddle two
    for p in range(P):
        for j0 in range(0, Nn, PANEL):
            w = min(PANEL, Nn - j0)
            rows = yt[p * Nn * Kd + j0 * Kd :][: w * Kd]
            # panel[q, j] = yt[p, j0 + j, q], written in order: the w rows of yt read a
            # column at a time stay in L1; a panel written a column at a time (Kd lines
            # apart) did not (bench/RESULTS.md, run 14)
            for q in range(Kd):
                line = panel[q * PANEL :][:w]
                for j in range(w):
                    line[j] = rows[j * Kd + q]
            gemm(kind, z, p * M * Nn + j0, Nn, x, p * M * Kd, lda, panel, 0, PANEL, M, w, Kd, 1,
                 0, 0, astep)  # fmt: skip


@jit
def h_matmul(X, HX, Y, HY, HZ, code, r, B, K):
    """Matrix Cauchy product out_m = x_0 y_m + x_m y_0 + sum_{t=1..m-1} x_t y_{m-t}.

    HA < 0 or HB < 0: that factor is a constant.  Each term is a product on register
    tiles (``compiler/gemm.py``) over the series blocks where they lie, as float64
    runs with real and imaginary parts interleaved: x_0 y_m real times complex,
    x_m y_0 complex times a copy of y_0 with doubled entries (made once per call),
    and all Cauchy terms of order m in one call.  Nothing is packed per direction
    (packing into real and imaginary planes cost a third of the products' time).
    """
    P, M, Kd, Nn = code[r, E0], code[r, E1], code[r, E2], code[r, E3]
    nx, ny, n = P * M * Kd, P * Kd * Nn, P * M * Nn
    has_x, has_y = code[r, HA] >= 0, code[r, HB] >= 0
    x0, y0 = X[code[r, A] :][:nx], Y[code[r, BB] :][:ny]
    # orders 1..K of every direction, in doubles; order k of direction b at 2 (b K + k) n
    x = hflat(HX, max(code[r, HA], 0), B, K, nx if has_x else 0)
    y = hflat(HY, max(code[r, HB], 0), B, K, ny if has_y else 0)
    z = hflat(HZ, code[r, HO], B, K, n)
    y0d = np.empty(2 * ny if has_x else 0)
    for i in range(y0d.size):
        y0d[i] = y0[i // 2]
    if not has_y:
        z[:] = 0.0
    for b in range(B):
        for p in range(P):
            for k in range(K):
                zo = 2 * ((b * K + k) * n + p * M * Nn)
                xo = 2 * ((b * K + k) * nx + p * M * Kd)
                if has_y:  # x_0 y_k sets the block
                    yo = 2 * ((b * K + k) * ny + p * Kd * Nn)
                    gemm(REAL, z, zo, 2 * Nn, x0, p * M * Kd, Kd, y, yo, 2 * Nn, M, 2 * Nn, Kd)
                if has_x:  # x_k y_0
                    y0o = 2 * p * Kd * Nn
                    gemm(PAIR, z, zo, 2 * Nn, x, xo, 2 * Kd, y0d, y0o, 2 * Nn, M, 2 * Nn, Kd)
                if has_x and has_y and k > 0:  # x_t y_{k+1-t}, t = 1..k
                    x1 = 2 * (b * K * nx + p * M * Kd)  # order 1
                    yk = 2 * ((b * K + k - 1) * ny + p * Kd * Nn)  # order k
                    gemm(
                        COMPLEX, z, zo, 2 * Nn, x, x1, 2 * Kd, y, yk, 2 * Nn, M, 2 * Nn, Kd,
                        k, 2 * nx, -2 * ny,
                    )  # fmt: skip
