"""Passes over the circuit IR and the Numba code generator for Taylor propagation.

Importing the package first points Numba's on-disk cache at a directory keyed
by the compiler's sources, the toolchain and the CPU (``compiler.cache``):
Numba fixes a function's cache location when it is decorated, so this must
run before any module here applies ``@njit(cache=True)``.
"""

from compiler import cache as _cache

_cache.configure_numba()
