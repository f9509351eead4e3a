"""Views of the flat run-time buffers that kernels and generated loops work on.

Orders 1..K ("hi") of a node of size n with hi offset h live at
``H[B*K*h + (b*K + k)*n + i]`` for direction b, order k+1, element i.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from compiler.layout import E1, N

jit = njit(cache=True, nogil=True, error_model="numpy")


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def rmul(a, z):
    """Real times complex without promoting the real to complex: half the multiplies.
    For finite values the parts equal those of (a + 0j) * z (up to the sign of a zero)."""
    return complex(a * z.real, a * z.imag)


@jit
def hview(H, h, B, K, n):
    """The (B, K, n) block of a node's orders 1..K."""
    return H[B * K * h :][: B * K * n].reshape((B, K, n))


@jit
def hflat(H, h, B, K, n):
    """A node's orders 1..K of every direction as one float64 run, real and imaginary
    parts interleaved: a part-wise op is then one plain loop over floats, which LLVM
    vectorises more readily than a loop over complex128 elements."""
    return H[B * K * h :][: B * K * n].view(np.float64)


@jit
def hblock(H, code, r, tab, j, B, K):
    """hflat of the j-th hi operand of a fused loop (its offset at tab[E1 + j])."""
    return hflat(H, tab[code[r, E1] + j], B, K, code[r, N])
