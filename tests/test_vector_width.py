"""compiler.vector_width: 512-bit vectors where the CPU has them, and the same bits.

Each case runs in a fresh interpreter, since Numba fixes its CPU features when
its code generator starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from numba.core import codegen

ROOT = Path(__file__).resolve().parents[1]
HOST_HAS_AVX512 = "+avx512f" in codegen.get_host_cpu_features().split(",")

PROBE = """
import json, sys
{before}
import compiler
from numba.core.registry import cpu_target
from numba import njit
import numpy as np
@njit
def axpy(a, x, y):
    for i in range(x.size):
        y[i] += a * x[i]
axpy(2.0, np.ones(64), np.ones(64))
asm = next(iter(axpy.inspect_asm().values()))
features = cpu_target.target_context.codegen()._tm_features
print(json.dumps({{"wide": compiler.WIDE_VECTORS, "features": features, "zmm": "zmm" in asm}}))
"""

# a real-mode and a series kernel on fixed data; the results are printed as exact bits
KERNELS = """
import json, numpy as np
import compiler
from compiler import kernels as k
from compiler.layout import A, BB, HA, HB, HO, E0, E1, E2, E3, OUT, WIDTH
rng = np.random.default_rng(7)
B, K, P, M, Kd, Nn = 3, 3, 2, 5, 7, 6
nx, ny, n = P * M * Kd, P * Kd * Nn, P * M * Nn
code = np.zeros((1, WIDTH), np.int64)
code[0, [E0, E1, E2, E3]] = P, M, Kd, Nn
code[0, [A, BB, OUT, HA, HB, HO]] = 0, nx, nx + ny, 0, 0, 0
X = rng.normal(size=nx + ny + n)
HX = rng.normal(size=B * K * nx) + 1j * rng.normal(size=B * K * nx)
HY = rng.normal(size=B * K * ny) + 1j * rng.normal(size=B * K * ny)
HZ = np.zeros(B * K * n, np.complex128)
k.matmul(X, X, X, code, 0)
k.h_matmul(X, HX, X, HY, HZ, code, 0, B, K)
print(json.dumps({"wide": compiler.WIDE_VECTORS,
                  "real": X[nx + ny:].view(np.int64).tolist(),
                  "series": HZ.view(np.int64).tolist()}))
"""


def run(code: str, **env: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_wide_vectors_exactly_when_the_cpu_has_avx512():
    got = run(PROBE.format(before=""))
    assert got["wide"] is HOST_HAS_AVX512
    assert got["features"].endswith(",-prefer-256-bit") is HOST_HAS_AVX512
    assert got["zmm"] is HOST_HAS_AVX512, "the loop does not use 512-bit registers"


@pytest.mark.parametrize(
    "before, env",
    [
        ("", {"CIRCUITSKETCH_WIDE_VECTORS": "0"}),
        ("", {"NUMBA_CPU_NAME": "generic"}),
        ("from numba import njit; njit(lambda x: x)(1)", {}),  # Numba started first
    ],
    ids=["switched-off", "user-chose-cpu", "numba-already-running"],
)
def test_wide_vectors_leave_other_choices_alone(before, env):
    got = run(PROBE.format(before=before), **env)
    assert got["wide"] is False
    assert "prefer-256-bit" not in got["features"]
    assert got["zmm"] is False


def test_wide_and_narrow_vectors_give_the_same_bits():
    wide = run(KERNELS)
    narrow = run(KERNELS, CIRCUITSKETCH_WIDE_VECTORS="0")
    assert wide["wide"] is HOST_HAS_AVX512 and narrow["wide"] is False
    assert np.count_nonzero(wide["real"]) > 50 and np.count_nonzero(wide["series"]) > 1000
    assert np.array_equal(wide["real"], narrow["real"])
    assert np.array_equal(wide["series"], narrow["series"])
