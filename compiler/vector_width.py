"""Let LLVM use 512-bit vectors on CPUs that have them.

LLVM tunes most AVX-512 CPUs to prefer 256-bit vectors (wide ones once lowered
the clock of older chips).  Our kernels are long loops of multiplies and adds,
which run faster at full width.  On a Sapphire Rapids core (fifth session, runs in
alternating processes): a K = 3 microgpt step per direction 0.680 -> 0.651,
0.680 -> 0.645, 0.664 -> 0.667, 0.674 -> 0.642, 0.655 -> 0.647 ms (the machine
drifts by more than that between processes); the kernels' summed time 577 -> 542 us
per direction; a real step 0.0471 -> 0.0458 and 0.0473 -> 0.0452 ms.  (Measured before
the series matrix products moved to ``compiler/gemm.py``'s register tiles, whose
explicit vectors are full width either way.)  The results
are the same bits: wider vectors change neither the operations nor their order (no
fused multiply-add, no reassociation).

Numba reads its CPU feature string once, when its code generator starts (the
first ``@njit`` in the process), so this runs when ``compiler`` is imported.  It
changes nothing if the user chose features or a CPU (``NUMBA_CPU_FEATURES``,
``NUMBA_CPU_NAME``), if Numba already compiled something in this process, if the
CPU lacks AVX-512, or if ``CIRCUITSKETCH_WIDE_VECTORS=0``.  Numba's on-disk cache
is keyed by the feature string, so entries built either way never mix.
"""

from __future__ import annotations

import os

import numba
from numba.core import codegen
from numba.core.registry import cpu_target

NARROW_TUNING = "prefer-256-bit"


def wide_vector_features() -> str | None:
    """The host's feature string without the 256-bit preference, or None to keep Numba's."""
    if os.environ.get("CIRCUITSKETCH_WIDE_VECTORS", "1") == "0":
        return None
    if numba.config.CPU_FEATURES is not None or numba.config.CPU_NAME is not None:
        return None
    features = codegen.get_host_cpu_features()
    if "+avx512f" not in features.split(","):
        return None
    return f"{features},-{NARROW_TUNING}"


def prefer_wide_vectors() -> bool:
    """Set Numba's CPU features before its code generator starts; True if it took effect."""
    if "_toplevel_target_context" in vars(cpu_target):
        return False  # Numba's code generator already runs with its own features
    features = wide_vector_features()
    if features is None:
        return False
    numba.config.CPU_FEATURES = features
    return True
