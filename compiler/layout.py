"""Columns of the instruction table that generated code hands to every kernel.

Row r describes one equation: the offsets of its operands' order-0 values
(A, BB, C), of its own (O), of the operands' and its own higher orders
(HA, HB, HC, HO; -1 when that operand is not a series), its size N, and up to
four op-specific integers E0..E3 (index-map offsets, matmul dims, row lengths).
"""

A, BB, C, OUT, HA, HB, HC, HO, N, E0, E1, E2, E3 = range(13)
WIDTH = 13


def hi_block(hi, B: int, K: int, off: int, n: int):
    """Orders 1..K of the flat slice (off, n) for B directions, as a (B, K, n) view of a
    hi buffer (a node or state slice at offset off keeps B*K*n coefficients at B*K*off;
    ``kernels.hview`` is the same view inside compiled code)."""
    return hi[B * K * off : B * K * (off + n)].reshape(B, K, n)
