"""Kernels that move data: index maps, reductions, gathers and scatters, selections.

Each is linear in its float operand, so its higher orders (``h_*``) move every
order the way order 0 moves: out[i] = src[map[i]] (-1 meaning zero) for the
index maps of transpose, slice, pad and broadcast (``take``), sums over a
reduction map, rows by index for gather and scatter_add, a mask for where.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from compiler.layout import BB, E0, E1, E2, E3, HA, HB, HC, HO, OUT, A, C, N
from compiler.views import hview, jit


@jit
def take(X, Z, code, r, tab):
    """Data movement by index map tab[E0 : E0+n] (-1: zero); E1 = operand size."""
    n = code[r, N]
    x, z, m = X[code[r, A] :][: code[r, E1]], Z[code[r, OUT] :][:n], tab[code[r, E0] :][:n]
    for i in range(n):
        j = m[i]
        z[i] = x[j] if j >= 0 else 0.0


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _reduce(X, Z, code, r, tab, start, is_max):
    """out[i] = x[map[i*E1]] + ... + x[map[i*E1 + E1-1]] (or max), in that order, from
    `start`.  Rows that lie in one piece (E3) go four at a time: four chains, each in
    its row's order (the same bits), where one chain waits on every addition."""
    n, w = code[r, N], code[r, E1]
    x, z, m = X[code[r, A] :][: code[r, E2]], Z[code[r, OUT] :][:n], tab[code[r, E0] :][: n * w]
    first = 0
    if code[r, E3] == 1:  # (-1: a row that does not say)
        for i in range(0, n - 3, 4):
            r0, r1 = x[i * w :][:w], x[(i + 1) * w :][:w]
            r2, r3 = x[(i + 2) * w :][:w], x[(i + 3) * w :][:w]
            a0 = a1 = a2 = a3 = start
            for j in range(w):
                a0 = max(a0, r0[j]) if is_max else a0 + r0[j]
                a1 = max(a1, r1[j]) if is_max else a1 + r1[j]
                a2 = max(a2, r2[j]) if is_max else a2 + r2[j]
                a3 = max(a3, r3[j]) if is_max else a3 + r3[j]
            z[i], z[i + 1], z[i + 2], z[i + 3] = a0, a1, a2, a3
        first = n - n % 4
    for i in range(first, n):
        acc = start
        for j in range(w):
            acc = max(acc, x[m[i * w + j]]) if is_max else acc + x[m[i * w + j]]
        z[i] = acc


@jit
def reduce_sum(X, Z, code, r, tab):
    """A sum of E1 elements per output, along the reduction map at E0."""
    _reduce(X, Z, code, r, tab, 0.0, False)


@jit
def reduce_max(X, Z, code, r, tab):
    _reduce(X, Z, code, r, tab, -np.inf, True)


@jit
def gather(X, IDX, Z, code, r):
    """Rows of a table: E0 = row length, E1 = table size; indices at IDX[BB : BB + rows]."""
    n, w = code[r, N], code[r, E0]
    x, z = X[code[r, A] :][: code[r, E1]], Z[code[r, OUT] :][:n]
    idx = IDX[code[r, BB] :][: n // w]
    for q in range(n // w):
        src = idx[q] * w
        for c in range(w):
            z[q * w + c] = x[src + c]


@jit
def scatter_add(X, IDX, Z, code, r):
    """out[idx[q]] += x[q]; E0 = row length, E1 = number of rows scattered."""
    n, w, rows = code[r, N], code[r, E0], code[r, E1]
    x, z = X[code[r, A] :][: rows * w], Z[code[r, OUT] :][:n]
    idx = IDX[code[r, BB] :][:rows]
    z[:] = 0.0
    for q in range(rows):
        dst = idx[q] * w
        for c in range(w):
            z[dst + c] += x[q * w + c]


@jit
def where(MASK, X, Y, Z, code, r):
    """The mask (a constant's ints or a comparison's 0.0/1.0) at A, the branches at BB, C."""
    n = code[r, N]
    m, x, y = MASK[code[r, A] :][:n], X[code[r, BB] :][:n], Y[code[r, C] :][:n]
    z = Z[code[r, OUT] :][:n]
    for i in range(n):
        z[i] = x[i] if m[i] else y[i]


@jit
def one_hot(IDX, Z, code, r):
    """E0 = depth; an index outside 0..depth-1 gives a zero row."""
    n, depth = code[r, N], code[r, E0]
    idx, z = IDX[code[r, A] :][: n // depth], Z[code[r, OUT] :][:n]
    z[:] = 0.0
    for q in range(n // depth):
        t = idx[q]
        if 0 <= t < depth:
            z[q * depth + t] = 1.0


@jit
def h_take(HX, HZ, code, r, B, K, tab):
    """E0 = map offset, E1 = operand size."""
    n = code[r, N]
    m = tab[code[r, E0] :][:n]
    x, z = hview(HX, code[r, HA], B, K, code[r, E1]), hview(HZ, code[r, HO], B, K, n)
    for b in range(B):
        for k in range(K):
            xr, zr = x[b, k], z[b, k]
            for i in range(n):
                j = m[i]
                zr[i] = xr[j] if j >= 0 else 0.0


@jit
def h_reduce_sum(HX, HZ, code, r, B, K, tab):
    """E0 = map offset, E1 = elements per output, E2 = operand size."""
    n, w = code[r, N], code[r, E1]
    m = tab[code[r, E0] :][: n * w]
    x, z = hview(HX, code[r, HA], B, K, code[r, E2]), hview(HZ, code[r, HO], B, K, n)
    for b in range(B):
        for k in range(K):
            xr, zr = x[b, k], z[b, k]
            for i in range(n):
                acc = 0.0j
                for j in range(w):
                    acc += xr[m[i * w + j]]
                zr[i] = acc


@jit
def h_gather(HX, IDX, HZ, code, r, B, K):
    """E0 = row length, E1 = table size."""
    n, w = code[r, N], code[r, E0]
    idx = IDX[code[r, BB] :][: n // w]
    x, z = hview(HX, code[r, HA], B, K, code[r, E1]), hview(HZ, code[r, HO], B, K, n)
    for b in range(B):
        for k in range(K):
            xr, zr = x[b, k], z[b, k]
            for q in range(n // w):
                src = idx[q] * w
                for c in range(w):
                    zr[q * w + c] = xr[src + c]


@jit
def h_scatter_add(HX, IDX, HZ, code, r, B, K):
    """E0 = row length, E1 = rows scattered (operand size = E0 * E1)."""
    n, w, rows = code[r, N], code[r, E0], code[r, E1]
    idx = IDX[code[r, BB] :][:rows]
    x, z = hview(HX, code[r, HA], B, K, rows * w), hview(HZ, code[r, HO], B, K, n)
    for b in range(B):
        for k in range(K):
            xr, zr = x[b, k], z[b, k]
            zr[:] = 0.0
            for q in range(rows):
                dst = idx[q] * w
                for c in range(w):
                    zr[dst + c] += xr[q * w + c]


@jit
def h_where(MASK, HX, HY, HZ, code, r, B, K):
    """HB < 0 or HC < 0: that branch is a constant (orders >= 1 are zero)."""
    n = code[r, N]
    mask = MASK[code[r, A] :][:n]
    has_x, has_y = code[r, HB] >= 0, code[r, HC] >= 0
    x = hview(HX, max(code[r, HB], 0), B, K, n if has_x else 0)
    y = hview(HY, max(code[r, HC], 0), B, K, n if has_y else 0)
    z = hview(HZ, code[r, HO], B, K, n)
    for b in range(B):
        for k in range(K):
            xr, yr, zr = x[b, k], y[b, k], z[b, k]
            for i in range(n):
                if mask[i]:
                    zr[i] = xr[i] if has_x else 0.0
                else:
                    zr[i] = yr[i] if has_y else 0.0
