"""erf at order 0 that vectorises where GELU's arguments lie, with the C library's bits.

Numba calls the C library's erf once per element (there is no vector version), and
GELU's erf was one of the costliest elementwise loops of a minibatch step
(bench/RESULTS.md, run 10).  The library's erf (fdlibm's algorithm, as in glibc)
computes |x| < 1.25 as rational functions: x + x r(z)/s(z), z = x^2, below
0.84375, and erx + P(s)/Q(s), s = |x| - 1, above; straight-line arithmetic that
LLVM vectorises.  So ``erf`` runs that range as one vector loop, with the
polynomials grouped as glibc groups them (its bits, element for element:
tests/test_compiled_ops.py), and hands every other element (|x| >= 1.25, NaN,
the tiniest subnormals; few of GELU's arguments lie there) to ``math.erf`` in
a second pass.
The coefficients are fdlibm's (s_erf.c: "Copyright (C) 1993 by Sun Microsystems,
Inc.  Developed at SunPro, a Sun Microsystems, Inc. business.  Permission to use,
copy, modify, and distribute this software is freely granted, provided that this
notice is preserved.").
"""

from __future__ import annotations

import math

from numba import njit

from compiler.layout import OUT, A, N
from compiler.views import jit

inline = njit(cache=True, nogil=True, error_model="numpy", inline="always")

EFX = 1.28379167095512586316e-01  # 2/sqrt(pi) - 1: the slope of erf(x) - x at 0
ERX = 8.45062911510467529297e-01  # fdlibm's c = (float)0.84506291151: erf(1 + t) = c + p/q
PP0, PP1, PP2 = 1.28379167095512558561e-01, -3.25042107247001499370e-01, -2.84817495755985104766e-02
PP3, PP4 = -5.77027029648944159157e-03, -2.37630166566501626084e-05
QQ1, QQ2, QQ3 = 3.97917223959155352819e-01, 6.50222499887672944485e-02, 5.08130628187576562776e-03
QQ4, QQ5 = 1.32494738004321644526e-04, -3.96022827877536812320e-06
PA0, PA1, PA2 = -2.36211856075265944077e-03, 4.14856118683748331666e-01, -3.72207876035701323847e-01
PA3, PA4, PA5 = 3.18346619901161753674e-01, -1.10894694282396677476e-01, 3.54783043256182359371e-02
PA6 = -2.16637559486879084300e-03
QA1, QA2, QA3 = 1.06420880400844228286e-01, 5.40397917702171048937e-01, 7.18286544141962662868e-02
QA4, QA5, QA6 = 1.26171219808761642112e-01, 1.36370839120290507362e-02, 1.19844998467991074170e-02
SMALL = 0.84375  # |x| below: x + x r(z)/s(z)
OWN = 1.25  # |x| below: vector code (|erf(x)| < 0.923 there); above: the library
TINY = 2.0**-28  # |x| below: x + EFX x
SUBNORMAL_EDGE = 2.0**-1015  # |x| below (but not 0): the library's own underflow care


@inline
def _own(x: float) -> float:
    """erf(x) for |x| < OWN: both ranges' polynomials, then one division, of the numerator
    by the denominator of x's range."""
    a = abs(x)
    z = x * x  # below SMALL: x + x r(z)/s(z)
    r1 = PP0 + z * PP1
    z2 = z * z
    r2 = PP2 + z * PP3
    z4 = z2 * z2
    s1 = 1.0 + z * QQ1
    s2 = QQ2 + z * QQ3
    s3 = QQ4 + z * QQ5
    r = r1 + z2 * r2 + z4 * PP4
    s = s1 + z2 * s2 + z4 * s3
    t = a - 1.0  # from SMALL: +-(erx + p(t)/q(t))
    p1 = PA0 + t * PA1
    t2 = t * t
    q1 = 1.0 + t * QA1
    t4 = t2 * t2
    p2 = PA2 + t * PA3
    t6 = t4 * t2
    q2 = QA2 + t * QA3
    p3 = PA4 + t * PA5
    q3 = QA4 + t * QA5
    p = p1 + t2 * p2 + t4 * p3 + t6 * PA6
    q = q1 + t2 * q2 + t4 * q3 + t6 * QA6
    small = a < SMALL
    y = (r if small else p) / (s if small else q)
    y = EFX if a < TINY else y
    m = ERX + y  # -erx - y is -(erx + y): rounding to nearest is symmetric
    return x + x * y if small else (m if x >= 0.0 else -m)


@inline
def _by_library(v: float) -> bool:
    """Whether a value the vector loop stored is an argument left for math.erf: it stores
    erf(x) (|erf(x)| < 0.923, and 0 or above SUBNORMAL_EDGE) or x itself."""
    a = abs(v)
    return not (a < OWN) or (0.0 < a < SUBNORMAL_EDGE)


@jit
def erf(X, Z, code, r):
    n = code[r, N]
    x, z = X[code[r, A] :][:n], Z[code[r, OUT] :][:n]
    left = 0
    for i in range(n):  # vectorised
        xi = x[i]
        a = abs(xi)
        own = (a < OWN) & ((a >= SUBNORMAL_EDGE) | (a == 0.0))
        y = _own(xi)
        z[i] = y if own else xi
        left += 0 if own else 1
    i = 0
    while left > 0 and i < n:  # z may be x: this pass reads z only
        if _by_library(z[i]):
            z[i] = math.erf(z[i])
            left -= 1
        i += 1
