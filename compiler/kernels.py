"""Numba kernels that generated code calls, one per op rule.

Calling convention.  Every buffer is a flat array; a kernel receives the
arrays its operands live in, the instruction table ``code`` and a row number
``r``.  Row r holds the operands' offsets and the sizes (see ``emit.ROW``):
offsets and sizes are run-time values, never literals, so each kernel is
compiled once for all circuits and call sites (literal arguments would make
Numba compile a new version per call site).

Order 0 ("r0") is a real float64 value shared by all directions.  Orders
1..K ("hi") of a node of size n with hi offset h live at
``H[B*K*h + (b*K + k)*n + i]`` for direction b, order k+1, element i.  The
recurrences are those of ``circuitsketch/series_math.py`` with the real
order-0 term kept apart, so no complex arithmetic is spent on it.  Index maps
express data movement: out[i] = src[map[i]], with -1 meaning zero.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from compiler.layout import BB, E0, E1, E2, E3, HA, HB, HO, OUT, A, C, N

TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)
jit = njit(cache=True, nogil=True, error_model="numpy")


# ============================================================== order 0 (real)
@jit
def add(X, Y, Z, code, r):
    a, b, o = code[r, A], code[r, BB], code[r, OUT]
    for i in range(code[r, N]):
        Z[o + i] = X[a + i] + Y[b + i]


@jit
def sub(X, Y, Z, code, r):
    a, b, o = code[r, A], code[r, BB], code[r, OUT]
    for i in range(code[r, N]):
        Z[o + i] = X[a + i] - Y[b + i]


@jit
def mul(X, Y, Z, code, r):
    a, b, o = code[r, A], code[r, BB], code[r, OUT]
    for i in range(code[r, N]):
        Z[o + i] = X[a + i] * Y[b + i]


@jit
def div(X, Y, Z, code, r):
    a, b, o = code[r, A], code[r, BB], code[r, OUT]
    for i in range(code[r, N]):
        Z[o + i] = X[a + i] / Y[b + i]


@jit
def neg(X, Z, code, r):
    a, o = code[r, A], code[r, OUT]
    for i in range(code[r, N]):
        Z[o + i] = -X[a + i]


@jit
def exp(X, Z, code, r):
    a, o = code[r, A], code[r, OUT]
    for i in range(code[r, N]):
        Z[o + i] = math.exp(X[a + i])


@jit
def log(X, Z, code, r):
    a, o = code[r, A], code[r, OUT]
    for i in range(code[r, N]):
        Z[o + i] = math.log(X[a + i])


@jit
def powc(X, Z, code, r, cst):
    """x ** p, p = cst[E0]; square roots get their exact libm forms."""
    a, o = code[r, A], code[r, OUT]
    p = cst[code[r, E0]]
    if p == 0.5:
        for i in range(code[r, N]):
            Z[o + i] = math.sqrt(X[a + i])
    elif p == -0.5:
        for i in range(code[r, N]):
            Z[o + i] = 1.0 / math.sqrt(X[a + i])
    elif p == 2.0:
        for i in range(code[r, N]):
            Z[o + i] = X[a + i] * X[a + i]
    else:
        for i in range(code[r, N]):
            Z[o + i] = X[a + i] ** p


@jit
def erf(X, Z, code, r):
    a, o = code[r, A], code[r, OUT]
    for i in range(code[r, N]):
        Z[o + i] = math.erf(X[a + i])


@jit
def copy(X, Z, code, r):
    a, o = code[r, A], code[r, OUT]
    for i in range(code[r, N]):
        Z[o + i] = X[a + i]


@jit
def set_scalar(Z, code, r, value):
    Z[code[r, OUT]] = value


@jit
def take(X, Z, code, r, tab):
    """Data movement by index map tab[E0 : E0+n] (-1: zero)."""
    a, o, m = code[r, A], code[r, OUT], code[r, E0]
    for i in range(code[r, N]):
        j = tab[m + i]
        Z[o + i] = X[a + j] if j >= 0 else 0.0


@jit
def reduce_sum(X, Z, code, r, tab):
    """out[i] = sum_j x[map[i*E1 + j]]: a reduction of E1 elements per output."""
    a, o, m, w = code[r, A], code[r, OUT], code[r, E0], code[r, E1]
    for i in range(code[r, N]):
        acc = 0.0
        for j in range(w):
            acc += X[a + tab[m + i * w + j]]
        Z[o + i] = acc


@jit
def reduce_max(X, Z, code, r, tab):
    a, o, m, w = code[r, A], code[r, OUT], code[r, E0], code[r, E1]
    for i in range(code[r, N]):
        acc = -np.inf
        for j in range(w):
            acc = max(acc, X[a + tab[m + i * w + j]])
        Z[o + i] = acc


@jit
def matmul(X, Y, Z, code, r):
    """(P, M, Kd) @ (P, Kd, Nn): E0..E3 = P, M, Kd, Nn."""
    a, b, o = code[r, A], code[r, BB], code[r, OUT]
    P, M, Kd, Nn = code[r, E0], code[r, E1], code[r, E2], code[r, E3]
    for p in range(P):
        for i in range(M):
            row = o + (p * M + i) * Nn
            for j in range(Nn):
                Z[row + j] = 0.0
            for q in range(Kd):
                x = X[a + (p * M + i) * Kd + q]
                brow = b + (p * Kd + q) * Nn
                for j in range(Nn):
                    Z[row + j] += x * Y[brow + j]


@jit
def gather(X, IDX, Z, code, r):
    """Rows of a table: E0 = row length; indices at IDX[BB : BB + rows]."""
    a, ix, o, w = code[r, A], code[r, BB], code[r, OUT], code[r, E0]
    rows = code[r, N] // w
    for q in range(rows):
        src = a + IDX[ix + q] * w
        for c in range(w):
            Z[o + q * w + c] = X[src + c]


@jit
def scatter_add(X, IDX, Z, code, r):
    """out[idx[q]] += x[q]; E0 = row length, E1 = number of rows scattered."""
    a, ix, o, w, rows = code[r, A], code[r, BB], code[r, OUT], code[r, E0], code[r, E1]
    for i in range(code[r, N]):
        Z[o + i] = 0.0
    for q in range(rows):
        dst = o + IDX[ix + q] * w
        for c in range(w):
            Z[dst + c] += X[a + q * w + c]


@jit
def where(MASK, X, Y, Z, code, r):
    m, a, b, o = code[r, C], code[r, A], code[r, BB], code[r, OUT]
    for i in range(code[r, N]):
        Z[o + i] = X[a + i] if MASK[m + i] else Y[b + i]


@jit
def one_hot(IDX, Z, code, r):
    """E0 = depth; an index outside 0..depth-1 gives a zero row."""
    ix, o, depth = code[r, A], code[r, OUT], code[r, E0]
    for i in range(code[r, N]):
        Z[o + i] = 0.0
    for q in range(code[r, N] // depth):
        t = IDX[ix + q]
        if 0 <= t < depth:
            Z[o + q * depth + t] = 1.0


@jit
def all_finite(X):
    for i in range(X.size):  # noqa: SIM110 - Numba cannot compile all() over a generator
        if not math.isfinite(X[i]):
            return False
    return True


@jit
def all_finite_c(X):
    for i in range(X.size):  # noqa: SIM110 - Numba cannot compile all() over a generator
        if not (math.isfinite(X[i].real) and math.isfinite(X[i].imag)):
            return False
    return True


# ============================================================== higher orders
# Offsets: hi block of operand at h with size n -> base B*K*h; (b, k, i) at base + (b*K+k)*n + i.
@jit
def h_zero(HZ, code, r, B, K):
    n = code[r, N]
    base = B * K * code[r, HO]
    for t in range(B * K * n):
        HZ[base + t] = 0.0


@jit
def h_copy(HX, HZ, code, r, B, K):
    n = code[r, N]
    ha, ho = B * K * code[r, HA], B * K * code[r, HO]
    for t in range(B * K * n):
        HZ[ho + t] = HX[ha + t]


@jit
def h_add(HX, HY, HZ, code, r, B, K):
    n = code[r, N]
    ha, hb, ho = B * K * code[r, HA], B * K * code[r, HB], B * K * code[r, HO]
    for t in range(B * K * n):
        HZ[ho + t] = HX[ha + t] + HY[hb + t]


@jit
def h_sub(HX, HY, HZ, code, r, B, K):
    n = code[r, N]
    ha, hb, ho = B * K * code[r, HA], B * K * code[r, HB], B * K * code[r, HO]
    for t in range(B * K * n):
        HZ[ho + t] = HX[ha + t] - HY[hb + t]


@jit
def h_neg(HX, HZ, code, r, B, K):
    n = code[r, N]
    hx, ho = B * K * code[r, HA], B * K * code[r, HO]
    for t in range(B * K * n):
        HZ[ho + t] = -HX[hx + t]


@jit
def h_scale(HX, Y, HZ, code, r, B, K):
    """Series times a real vector: (HA, BB), or (HB, A) when the left factor is real."""
    n = code[r, N]
    if code[r, HA] >= 0:
        hx, b = B * K * code[r, HA], code[r, BB]
    else:
        hx, b = B * K * code[r, HB], code[r, A]
    ho = B * K * code[r, HO]
    for bk in range(B * K):
        for i in range(n):
            HZ[ho + bk * n + i] = HX[hx + bk * n + i] * Y[b + i]


@jit
def h_div_const(HX, Y, HZ, code, r, B, K):
    n = code[r, N]
    hx, b, ho = B * K * code[r, HA], code[r, BB], B * K * code[r, HO]
    for bk in range(B * K):
        for i in range(n):
            HZ[ho + bk * n + i] = HX[hx + bk * n + i] / Y[b + i]


@jit
def h_mul(X, HX, Y, HY, HZ, code, r, B, K):
    """Cauchy product with the real order-0 terms kept apart."""
    n = code[r, N]
    a, b = code[r, A], code[r, BB]
    ha, hb, ho = B * K * code[r, HA], B * K * code[r, HB], B * K * code[r, HO]
    for bb in range(B):
        for k in range(K):
            z = ho + (bb * K + k) * n
            xk = ha + (bb * K + k) * n
            yk = hb + (bb * K + k) * n
            for i in range(n):
                HZ[z + i] = X[a + i] * HY[yk + i] + Y[b + i] * HX[xk + i]
            for j in range(k):
                xj = ha + (bb * K + j) * n
                yj = hb + (bb * K + k - 1 - j) * n
                for i in range(n):
                    HZ[z + i] += HX[xj + i] * HY[yj + i]


@jit
def h_div(HX, Y, HY, Q, HZ, code, r, B, K):
    """q = x / y: q_r = (x_r - sum_{j=1..r} y_j q_{r-j}) / y_0; Q holds q_0 at slot O.

    HA < 0 means x is a constant (x_r = 0 for r >= 1).
    """
    n = code[r, N]
    b, q0 = code[r, BB], code[r, OUT]
    has_x = code[r, HA] >= 0
    ha, hb, ho = B * K * code[r, HA], B * K * code[r, HB], B * K * code[r, HO]
    for bb in range(B):
        for k in range(K):
            z = ho + (bb * K + k) * n
            yk = hb + (bb * K + k) * n
            for i in range(n):
                HZ[z + i] = -HY[yk + i] * Q[q0 + i]
            if has_x:
                xk = ha + (bb * K + k) * n
                for i in range(n):
                    HZ[z + i] += HX[xk + i]
            for j in range(k):
                yj = hb + (bb * K + j) * n
                qj = ho + (bb * K + k - 1 - j) * n
                for i in range(n):
                    HZ[z + i] -= HY[yj + i] * HZ[qj + i]
            for i in range(n):
                HZ[z + i] /= Y[b + i]


@jit
def h_exp(HX, Q, HZ, code, r, B, K):
    """q = exp(x): m q_m = sum_{j=1..m} j x_j q_{m-j}; Q holds q_0 at slot O."""
    n = code[r, N]
    q0 = code[r, OUT]
    ha, ho = B * K * code[r, HA], B * K * code[r, HO]
    for bb in range(B):
        for k in range(K):
            m = k + 1
            z = ho + (bb * K + k) * n
            xk = ha + (bb * K + k) * n
            for i in range(n):
                HZ[z + i] = m * HX[xk + i] * Q[q0 + i]
            for j in range(1, m):
                xj = ha + (bb * K + j - 1) * n
                qj = ho + (bb * K + m - j - 1) * n
                for i in range(n):
                    HZ[z + i] += j * HX[xj + i] * HZ[qj + i]
            for i in range(n):
                HZ[z + i] /= m


@jit
def h_log(X, HX, HZ, code, r, B, K):
    """q = log(x): q_m = (x_m - (1/m) sum_{j=1..m-1} j q_j x_{m-j}) / x_0."""
    n = code[r, N]
    a = code[r, A]
    ha, ho = B * K * code[r, HA], B * K * code[r, HO]
    for bb in range(B):
        for k in range(K):
            m = k + 1
            z = ho + (bb * K + k) * n
            for i in range(n):
                HZ[z + i] = 0.0
            for j in range(1, m):
                qj = ho + (bb * K + j - 1) * n
                xj = ha + (bb * K + m - j - 1) * n
                for i in range(n):
                    HZ[z + i] += j * HZ[qj + i] * HX[xj + i]
            xk = ha + (bb * K + k) * n
            for i in range(n):
                HZ[z + i] = (HX[xk + i] - HZ[z + i] / m) / X[a + i]


@jit
def h_pow(X, HX, Q, HZ, code, r, B, K, cst):
    """q = x^p: m x_0 q_m = sum_{j=1..m} ((p+1) j - m) x_j q_{m-j}; p = cst[E0]."""
    n = code[r, N]
    a, q0 = code[r, A], code[r, OUT]
    p = cst[code[r, E0]]
    ha, ho = B * K * code[r, HA], B * K * code[r, HO]
    for bb in range(B):
        for k in range(K):
            m = k + 1
            z = ho + (bb * K + k) * n
            xk = ha + (bb * K + k) * n
            for i in range(n):
                HZ[z + i] = (p * m) * HX[xk + i] * Q[q0 + i]
            for j in range(1, m):
                c = (p + 1.0) * j - m
                xj = ha + (bb * K + j - 1) * n
                qj = ho + (bb * K + m - j - 1) * n
                for i in range(n):
                    HZ[z + i] += c * HX[xj + i] * HZ[qj + i]
            for i in range(n):
                HZ[z + i] /= m * X[a + i]


@jit
def h_erf(X, HX, HZ, code, r, B, K):
    """q = erf(x): q' = 2/sqrt(pi) e x' with e = exp(-x^2), element by element."""
    n = code[r, N]
    a = code[r, A]
    ha, ho = B * K * code[r, HA], B * K * code[r, HO]
    s = np.empty(K + 1, dtype=np.complex128)
    e = np.empty(K + 1, dtype=np.complex128)
    x = np.empty(K + 1, dtype=np.complex128)
    for bb in range(B):
        for i in range(n):
            x[0] = X[a + i]
            for k in range(K):
                x[k + 1] = HX[ha + (bb * K + k) * n + i]
            for m in range(K + 1):
                acc = 0.0j
                for j in range(m + 1):
                    acc += x[j] * x[m - j]
                s[m] = -acc
            e[0] = math.exp(-X[a + i] * X[a + i])
            for m in range(1, K + 1):
                acc = 0.0j
                for j in range(1, m + 1):
                    acc += j * s[j] * e[m - j]
                e[m] = acc / m
            for m in range(1, K + 1):
                acc = 0.0j
                for j in range(1, m + 1):
                    acc += j * x[j] * e[m - j]
                HZ[ho + (bb * K + m - 1) * n + i] = TWO_OVER_SQRT_PI * acc / m


@jit
def h_take(HX, HZ, code, r, B, K, tab):
    """E0 = map offset, E1 = operand size."""
    n, m, nx = code[r, N], code[r, E0], code[r, E1]
    ha, ho = B * K * code[r, HA], B * K * code[r, HO]
    for bk in range(B * K):
        for i in range(n):
            j = tab[m + i]
            HZ[ho + bk * n + i] = HX[ha + bk * nx + j] if j >= 0 else 0.0


@jit
def h_reduce_sum(HX, HZ, code, r, B, K, tab):
    """E0 = map offset, E1 = elements per output, E2 = operand size."""
    n, m, w, nx = code[r, N], code[r, E0], code[r, E1], code[r, E2]
    ha, ho = B * K * code[r, HA], B * K * code[r, HO]
    for bk in range(B * K):
        for i in range(n):
            acc = 0.0j
            for j in range(w):
                acc += HX[ha + bk * nx + tab[m + i * w + j]]
            HZ[ho + bk * n + i] = acc


@jit
def h_matmul(X, HX, Y, HY, HZ, code, r, B, K):
    """Matrix Cauchy product out_m = x_0 y_m + x_m y_0 + sum_{j=1..m-1} x_j y_{m-j}.

    HA < 0 or HB < 0: that factor is a constant.
    """
    a, b = code[r, A], code[r, BB]
    P, M, Kd, Nn = code[r, E0], code[r, E1], code[r, E2], code[r, E3]
    nx, ny, n = P * M * Kd, P * Kd * Nn, P * M * Nn
    has_x, has_y = code[r, HA] >= 0, code[r, HB] >= 0
    ha, hb, ho = B * K * code[r, HA], B * K * code[r, HB], B * K * code[r, HO]
    for bb in range(B):
        for k in range(K):
            z = ho + (bb * K + k) * n
            for t in range(n):
                HZ[z + t] = 0.0
            for p in range(P):
                for i in range(M):
                    row = z + (p * M + i) * Nn
                    for q in range(Kd):
                        ai = (p * M + i) * Kd + q
                        brow = (p * Kd + q) * Nn
                        if has_y:
                            x0 = X[a + ai]
                            yk = hb + (bb * K + k) * ny + brow
                            for j in range(Nn):
                                HZ[row + j] += x0 * HY[yk + j]
                        if has_x:
                            xk = HX[ha + (bb * K + k) * nx + ai]
                            for j in range(Nn):
                                HZ[row + j] += xk * Y[b + brow + j]
                        if has_x and has_y:
                            for t in range(k):
                                xt = HX[ha + (bb * K + t) * nx + ai]
                                yt = hb + (bb * K + k - 1 - t) * ny + brow
                                for j in range(Nn):
                                    HZ[row + j] += xt * HY[yt + j]


@jit
def h_gather(HX, IDX, HZ, code, r, B, K):
    """E0 = row length, E1 = table size."""
    n, ix, w, nx = code[r, N], code[r, BB], code[r, E0], code[r, E1]
    ha, ho = B * K * code[r, HA], B * K * code[r, HO]
    rows = n // w
    for bk in range(B * K):
        for q in range(rows):
            src = ha + bk * nx + IDX[ix + q] * w
            dst = ho + bk * n + q * w
            for c in range(w):
                HZ[dst + c] = HX[src + c]


@jit
def h_scatter_add(HX, IDX, HZ, code, r, B, K):
    """E0 = row length, E1 = rows scattered (operand size = E0 * E1)."""
    n, ix, w, rows = code[r, N], code[r, BB], code[r, E0], code[r, E1]
    ha, ho = B * K * code[r, HA], B * K * code[r, HO]
    for bk in range(B * K):
        for i in range(n):
            HZ[ho + bk * n + i] = 0.0
        for q in range(rows):
            dst = ho + bk * n + IDX[ix + q] * w
            src = ha + bk * rows * w + q * w
            for c in range(w):
                HZ[dst + c] += HX[src + c]


@jit
def h_where(MASK, HX, HY, HZ, code, r, B, K):
    """HA < 0 or HB < 0: that branch is a constant (orders >= 1 are zero)."""
    n, m = code[r, N], code[r, C]
    has_x, has_y = code[r, HA] >= 0, code[r, HB] >= 0
    ha, hb, ho = B * K * code[r, HA], B * K * code[r, HB], B * K * code[r, HO]
    for bk in range(B * K):
        for i in range(n):
            if MASK[m + i]:
                HZ[ho + bk * n + i] = HX[ha + bk * n + i] if has_x else 0.0
            else:
                HZ[ho + bk * n + i] = HY[hb + bk * n + i] if has_y else 0.0


@jit
def h_set_weight(HZ, code, r, B, K, psi):
    """The data weight w = w0 + z psi: order 1 is psi, higher orders 0 (size 1)."""
    ho = B * K * code[r, HO]
    for bb in range(B):
        HZ[ho + bb * K] = psi[bb]
        for k in range(1, K):
            HZ[ho + bb * K + k] = 0.0
