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

Inside a kernel every operand is first cut out as its own slice view: LLVM
then sees separate arrays and vectorises the loops (several times faster than
indexing one shared workspace with offsets), with the same arithmetic in the
same order.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core.extending import intrinsic

# erf, data movement and matrix products: kernels that generated code reaches as k.<name>
from compiler.erf import erf  # noqa: F401
from compiler.layout import BB, E0, HA, HB, HO, OUT, A, N
from compiler.movement import (  # noqa: F401
    gather,
    h_gather,
    h_reduce_sum,
    h_scatter_add,
    h_take,
    h_where,
    one_hot,
    reduce_max,
    reduce_sum,
    scatter_add,
    take,
    where,
)
from compiler.products import h_matmul, matmul  # noqa: F401
from compiler.views import hblock, hflat, hview, jit, rmul  # noqa: F401 (hblock: k.hblock)

TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)
EXPONENT_BITS = 0x7FF0000000000000  # of an IEEE double: all ones for inf and NaN


# ====================================================== exp that vectorises
# Numba calls the C library's exp once per element, and the loops of softmax
# and GELU's derivative spend more time in it than in their arithmetic.  vexp
# is straight-line arithmetic that LLVM vectorises, about 3x faster:
# exp(x) = 2^k exp(r), x = k ln2 + r, |r| <= ln2 / 2, exp(r) by its Taylor
# series to r^13 (truncation below 1e-17), 2^k built in the exponent bits in two
# halves so that results in the subnormal range round once.  Over 1.1 million
# inputs on [-750, 712] it is within 1 ulp of the C library's exp (which is
# itself not correctly rounded); inf, -inf, NaN, overflow and underflow match it.
@intrinsic
def float_of_bits(typingctx, bits):
    if bits != types.int64:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


@intrinsic
def bits_of_float(typingctx, x):
    if x != types.float64:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(types.float64), codegen


INV_LN2 = 1.4426950408889634
LN2_HI = 6.93147180369123816490e-01  # ln 2 = LN2_HI + LN2_LO, k * LN2_HI exact for |k| < 2^11
LN2_LO = 1.90821492927058770002e-10
ROUNDER = 6755399441055744.0  # 1.5 * 2^52: x + ROUNDER holds round(x) in its low bits


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def vexp(x):
    xc = min(max(x, -746.0), 710.0)  # beyond these, 2^k alone under- or overflows
    t = xc * INV_LN2 + ROUNDER
    kf = t - ROUNDER
    k = bits_of_float(t) - bits_of_float(ROUNDER)
    r = (xc - kf * LN2_HI) - kf * LN2_LO
    q = 1.0 / 6227020800.0  # 1/13!, then Horner down to 1/2
    q = q * r + 1.0 / 479001600.0
    q = q * r + 1.0 / 39916800.0
    q = q * r + 1.0 / 3628800.0
    q = q * r + 1.0 / 362880.0
    q = q * r + 1.0 / 40320.0
    q = q * r + 1.0 / 5040.0
    q = q * r + 1.0 / 720.0
    q = q * r + 1.0 / 120.0
    q = q * r + 1.0 / 24.0
    q = q * r + 1.0 / 6.0
    q = q * r + 0.5
    p = 1.0 + (r + (r * r) * q)
    k1 = k >> 1
    k2 = k - k1
    y = p * float_of_bits((k1 + 1023) << 52) * float_of_bits((k2 + 1023) << 52)
    return y if x == x else x


# ============================================================== order 0 (real)
@jit
def add(X, Y, Z, code, r):
    n = code[r, N]
    x, y, z = X[code[r, A] :][:n], Y[code[r, BB] :][:n], Z[code[r, OUT] :][:n]
    for i in range(n):
        z[i] = x[i] + y[i]


@jit
def sub(X, Y, Z, code, r):
    n = code[r, N]
    x, y, z = X[code[r, A] :][:n], Y[code[r, BB] :][:n], Z[code[r, OUT] :][:n]
    for i in range(n):
        z[i] = x[i] - y[i]


@jit
def mul(X, Y, Z, code, r):
    n = code[r, N]
    x, y, z = X[code[r, A] :][:n], Y[code[r, BB] :][:n], Z[code[r, OUT] :][:n]
    for i in range(n):
        z[i] = x[i] * y[i]


@jit
def div(X, Y, Z, code, r):
    n = code[r, N]
    x, y, z = X[code[r, A] :][:n], Y[code[r, BB] :][:n], Z[code[r, OUT] :][:n]
    for i in range(n):
        z[i] = x[i] / y[i]


@jit
def neg(X, Z, code, r):
    n = code[r, N]
    x, z = X[code[r, A] :][:n], Z[code[r, OUT] :][:n]
    for i in range(n):
        z[i] = -x[i]


@jit
def exp(X, Z, code, r):
    n = code[r, N]
    x, z = X[code[r, A] :][:n], Z[code[r, OUT] :][:n]
    for i in range(n):
        z[i] = vexp(x[i])


@jit
def log(X, Z, code, r):
    n = code[r, N]
    x, z = X[code[r, A] :][:n], Z[code[r, OUT] :][:n]
    for i in range(n):
        z[i] = math.log(x[i])


@jit
def powc(X, Z, code, r, cst):
    """x ** p, p = cst[E0]; square roots get their exact libm forms."""
    n = code[r, N]
    x, z = X[code[r, A] :][:n], Z[code[r, OUT] :][:n]
    p = cst[code[r, E0]]
    if p == 0.5:
        for i in range(n):
            z[i] = math.sqrt(x[i])
    elif p == -0.5:
        for i in range(n):
            z[i] = 1.0 / math.sqrt(x[i])
    elif p == 2.0:
        for i in range(n):
            z[i] = x[i] * x[i]
    else:
        for i in range(n):
            z[i] = x[i] ** p


@jit
def copy(X, Z, code, r):
    n = code[r, N]
    x, z = X[code[r, A] :][:n], Z[code[r, OUT] :][:n]
    for i in range(n):
        z[i] = x[i]


@jit
def set_weight(Z, code, r, w):
    """The data weight's order 0: the weights w[0 : n] of the step's n documents."""
    n = code[r, N]
    z = Z[code[r, OUT] :][:n]
    for i in range(n):
        z[i] = w[i]


@jit
def all_finite(X):
    """No infinity or NaN in X: the largest exponent field must not be all ones.  An
    integer max vectorises (a float test with an early exit did not), so the check
    after every step costs a quarter of the float test's time."""
    bits = X.view(np.int64)
    worst = 0
    for i in range(bits.size):
        worst = max(worst, bits[i] & EXPONENT_BITS)
    return worst < EXPONENT_BITS


@jit
def all_finite_c(X):
    return all_finite(X.view(np.float64))


# ============================================================== higher orders
@jit
def h_zero(HZ, code, r, B, K):
    hflat(HZ, code[r, HO], B, K, code[r, N])[:] = 0.0


@jit
def h_copy(HX, HZ, code, r, B, K):
    n = code[r, N]
    x, z = hflat(HX, code[r, HA], B, K, n), hflat(HZ, code[r, HO], B, K, n)
    for i in range(z.size):
        z[i] = x[i]


@jit
def h_add(HX, HY, HZ, code, r, B, K):
    n = code[r, N]
    x, y = hflat(HX, code[r, HA], B, K, n), hflat(HY, code[r, HB], B, K, n)
    z = hflat(HZ, code[r, HO], B, K, n)
    for i in range(z.size):
        z[i] = x[i] + y[i]


@jit
def h_sub(HX, HY, HZ, code, r, B, K):
    n = code[r, N]
    x, y = hflat(HX, code[r, HA], B, K, n), hflat(HY, code[r, HB], B, K, n)
    z = hflat(HZ, code[r, HO], B, K, n)
    for i in range(z.size):
        z[i] = x[i] - y[i]


@jit
def h_neg(HX, HZ, code, r, B, K):
    n = code[r, N]
    x, z = hflat(HX, code[r, HA], B, K, n), hflat(HZ, code[r, HO], B, K, n)
    for i in range(z.size):
        z[i] = -x[i]


@jit
def h_scale(HX, Y, HZ, code, r, B, K):
    """Series times a real vector: (HA, BB), or (HB, A) when the left factor is real."""
    n = code[r, N]
    if code[r, HA] >= 0:
        x, y = hflat(HX, code[r, HA], B, K, n), Y[code[r, BB] :][:n]
    else:
        x, y = hflat(HX, code[r, HB], B, K, n), Y[code[r, A] :][:n]
    z = hflat(HZ, code[r, HO], B, K, n)
    for bk in range(B * K):
        xr, zr = x[2 * n * bk :][: 2 * n], z[2 * n * bk :][: 2 * n]
        for i in range(n):
            zr[2 * i] = y[i] * xr[2 * i]
            zr[2 * i + 1] = y[i] * xr[2 * i + 1]


@jit
def reciprocals(y):
    """1 / y once per element: the higher orders then multiply by it, since a divide
    costs several multiplies and would otherwise be repeated for every direction and
    order (the extra rounding is one ulp, in orders >= 1 only)."""
    inv = np.empty(y.size)
    for i in range(y.size):
        inv[i] = 1.0 / y[i]
    return inv


@jit
def h_div_const(HX, Y, HZ, code, r, B, K):
    n = code[r, N]
    x, inv = hflat(HX, code[r, HA], B, K, n), reciprocals(Y[code[r, BB] :][:n])
    z = hflat(HZ, code[r, HO], B, K, n)
    for bk in range(B * K):
        xr, zr = x[2 * n * bk :][: 2 * n], z[2 * n * bk :][: 2 * n]
        for i in range(n):
            zr[2 * i] = xr[2 * i] * inv[i]
            zr[2 * i + 1] = xr[2 * i + 1] * inv[i]


@jit
def h_mul(X, HX, Y, HY, HZ, code, r, B, K):
    """Cauchy product with the real order-0 terms kept apart."""
    n = code[r, N]
    x0, y0 = X[code[r, A] :][:n], Y[code[r, BB] :][:n]
    x, y = hview(HX, code[r, HA], B, K, n), hview(HY, code[r, HB], B, K, n)
    z = hview(HZ, code[r, HO], B, K, n)
    for b in range(B):
        for k in range(K):
            zr, xk, yk = z[b, k], x[b, k], y[b, k]
            for i in range(n):
                zr[i] = rmul(x0[i], yk[i]) + rmul(y0[i], xk[i])
            for j in range(k):
                xj, yj = x[b, j], y[b, k - 1 - j]
                for i in range(n):
                    zr[i] += xj[i] * yj[i]


@jit
def h_div(HX, Y, HY, Q, HZ, code, r, B, K):
    """q = x / y: q_r = (x_r - sum_{j=1..r} y_j q_{r-j}) / y_0; Q holds q_0 at slot OUT.

    HA < 0 means x is a constant (x_r = 0 for r >= 1).
    """
    n = code[r, N]
    inv, q0 = reciprocals(Y[code[r, BB] :][:n]), Q[code[r, OUT] :][:n]
    has_x = code[r, HA] >= 0
    x = hview(HX, max(code[r, HA], 0), B, K, n if has_x else 0)
    y, z = hview(HY, code[r, HB], B, K, n), hview(HZ, code[r, HO], B, K, n)
    for b in range(B):
        for k in range(K):
            zr, yk = z[b, k], y[b, k]
            for i in range(n):
                zr[i] = -rmul(q0[i], yk[i])
            if has_x:
                xk = x[b, k]
                for i in range(n):
                    zr[i] += xk[i]
            for j in range(k):
                yj, qj = y[b, j], z[b, k - 1 - j]
                for i in range(n):
                    zr[i] -= yj[i] * qj[i]
            for i in range(n):
                zr[i] = rmul(inv[i], zr[i])


@jit
def h_exp(HX, Q, HZ, code, r, B, K):
    """q = exp(x): m q_m = sum_{j=1..m} j x_j q_{m-j}; Q holds q_0 at slot OUT."""
    n = code[r, N]
    q0 = Q[code[r, OUT] :][:n]
    x, z = hview(HX, code[r, HA], B, K, n), hview(HZ, code[r, HO], B, K, n)
    for b in range(B):
        for k in range(K):
            m = k + 1
            zr, xk = z[b, k], x[b, k]
            for i in range(n):
                zr[i] = rmul(m * q0[i], xk[i])
            for j in range(1, m):
                xj, qj = x[b, j - 1], z[b, m - j - 1]
                for i in range(n):
                    zr[i] += rmul(j, xj[i]) * qj[i]
            inv_m = 1.0 / m
            for i in range(n):
                zr[i] = rmul(inv_m, zr[i])


@jit
def h_log(X, HX, HZ, code, r, B, K):
    """q = log(x): q_m = (x_m - (1/m) sum_{j=1..m-1} j q_j x_{m-j}) / x_0."""
    n = code[r, N]
    inv = reciprocals(X[code[r, A] :][:n])
    x, z = hview(HX, code[r, HA], B, K, n), hview(HZ, code[r, HO], B, K, n)
    for b in range(B):
        for k in range(K):
            m = k + 1
            inv_m = 1.0 / m
            zr = z[b, k]
            zr[:] = 0.0
            for j in range(1, m):
                qj, xj = z[b, j - 1], x[b, m - j - 1]
                for i in range(n):
                    zr[i] += rmul(j, qj[i]) * xj[i]
            xk = x[b, k]
            for i in range(n):
                zr[i] = rmul(inv[i], xk[i] - rmul(inv_m, zr[i]))


@jit
def h_pow(X, HX, Q, HZ, code, r, B, K, cst):
    """q = x^p: m x_0 q_m = sum_{j=1..m} ((p+1) j - m) x_j q_{m-j}; p = cst[E0]."""
    n = code[r, N]
    inv, q0 = reciprocals(X[code[r, A] :][:n]), Q[code[r, OUT] :][:n]
    p = cst[code[r, E0]]
    x, z = hview(HX, code[r, HA], B, K, n), hview(HZ, code[r, HO], B, K, n)
    for b in range(B):
        for k in range(K):
            m = k + 1
            zr, xk = z[b, k], x[b, k]
            for i in range(n):
                zr[i] = rmul((p * m) * q0[i], xk[i])
            for j in range(1, m):
                c = (p + 1.0) * j - m
                xj, qj = x[b, j - 1], z[b, m - j - 1]
                for i in range(n):
                    zr[i] += rmul(c, xj[i]) * qj[i]
            inv_m = 1.0 / m
            for i in range(n):
                zr[i] = rmul(inv_m * inv[i], zr[i])


@jit
def h_erf(X, HX, HZ, code, r, B, K):
    """q = erf(x): q' = 2/sqrt(pi) e x' with e = exp(s), s = -x^2.

    s and e are carried as rows over all elements (one loop per order pair runs
    along the n elements, not K^2 scalar steps per element).
    """
    n = code[r, N]
    x0 = X[code[r, A] :][:n]
    x, z = hview(HX, code[r, HA], B, K, n), hview(HZ, code[r, HO], B, K, n)
    S = np.empty((K + 1, n), np.complex128)  # orders 1..K of s (row 0 unused)
    E = np.empty((K + 1, n), np.complex128)  # orders 0..K of e
    for i in range(n):
        E[0, i] = math.exp(-x0[i] * x0[i])
    for b in range(B):
        for m in range(1, K + 1):
            sm, xm = S[m], x[b, m - 1]
            for i in range(n):  # x_0 x_m + ... + x_m x_0, in that order
                sm[i] = rmul(x0[i], xm[i])
            for j in range(1, m):
                xj, xr = x[b, j - 1], x[b, m - j - 1]
                for i in range(n):
                    sm[i] += xj[i] * xr[i]
            for i in range(n):
                sm[i] = -(sm[i] + rmul(x0[i], xm[i]))
        for m in range(1, K + 1):
            em = E[m]
            em[:] = 0.0
            for j in range(1, m + 1):
                sj, er = S[j], E[m - j]
                for i in range(n):
                    em[i] += rmul(j, sj[i]) * er[i]
            inv_m = 1.0 / m
            for i in range(n):
                em[i] = rmul(inv_m, em[i])
        for m in range(1, K + 1):
            zm = z[b, m - 1]
            zm[:] = 0.0
            for j in range(1, m + 1):
                xj, er = x[b, j - 1], E[m - j]
                for i in range(n):
                    zm[i] += rmul(j, xj[i]) * er[i]
            c = TWO_OVER_SQRT_PI / m
            for i in range(n):
                zm[i] = rmul(c, zm[i])


@jit
def h_ode(HX, Q, HZ, code, r, B, K, cst):
    """q = f(x) with f' = P(f), P(y) = c0 + c1 y + c2 y^2 (c at cst[E0 : E0 + 3]):
    m q_m = sum_{j=1..m} j x_j p_{m-j} with p = P(q), and p_m (m >= 1) = c1 q_m
    + c2 (q q)_m from q_0..q_m; Q holds q_0 at slot OUT.  Every op whose registry
    entry names the ``ode`` rule is such an f (``circuitsketch/ops/elementwise.py``)."""
    n = code[r, N]
    q0 = Q[code[r, OUT] :][:n]
    e = code[r, E0]
    c0, c1, c2 = cst[e], cst[e + 1], cst[e + 2]
    x, z = hview(HX, code[r, HA], B, K, n), hview(HZ, code[r, HO], B, K, n)
    p0 = np.empty(n)
    for i in range(n):
        p0[i] = (c2 * q0[i] + c1) * q0[i] + c0
    P = np.empty((K, n), np.complex128)  # row m: order m of p, for m = 1..K-1
    for b in range(B):
        for k in range(K):
            m = k + 1
            zr, xk = z[b, k], x[b, k]
            for i in range(n):
                zr[i] = rmul(m * p0[i], xk[i])
            for j in range(1, m):
                xj, pj = x[b, j - 1], P[m - j]
                for i in range(n):
                    zr[i] += rmul(j, xj[i]) * pj[i]
            inv_m = 1.0 / m
            for i in range(n):
                zr[i] = rmul(inv_m, zr[i])
            if m < K:
                pm = P[m]
                for i in range(n):
                    sq = rmul(q0[i], zr[i])
                    for t in range(1, m):
                        sq += z[b, t - 1, i] * z[b, m - t - 1, i]
                    sq += rmul(q0[i], zr[i])
                    if c1 != 0.0 and c2 != 0.0:
                        pm[i] = rmul(c1, zr[i]) + rmul(c2, sq)
                    elif c2 != 0.0:
                        pm[i] = rmul(c2, sq)
                    elif c1 != 0.0:
                        pm[i] = rmul(c1, zr[i])
                    else:
                        pm[i] = 0.0


@jit
def h_set_weight(HZ, code, r, B, K, psi):
    """The data weight w = w0 + z psi of the step's n documents: order 1 of document i
    along direction b is psi[i, b], higher orders 0."""
    n = code[r, N]
    z = hview(HZ, code[r, HO], B, K, n)
    for b in range(B):
        for i in range(n):
            z[b, 0, i] = psi[i, b]
            for k in range(1, K):
                z[b, k, i] = 0.0
