"""Passes over the circuit IR and the Numba code generator for Taylor propagation."""

from compiler.vector_width import prefer_wide_vectors

WIDE_VECTORS = prefer_wide_vectors()
"""Whether this process's Numba code uses 512-bit vectors (see compiler.vector_width)."""
