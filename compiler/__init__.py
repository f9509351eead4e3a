"""Passes over the circuit IR and the Numba code generator for Taylor propagation."""
