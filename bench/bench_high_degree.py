"""Is an FFT-based series product worth it at high degree?  Speed and accuracy.

The sketch's degree-K products are truncated Cauchy products c_m = sum_j a_j b_{m-j}.
An FFT computes all of them in O(K log K) instead of O(K^2), but its rounding
error is relative to the *largest* coefficients, while the orders of a training
series fall steadily (experiment 1: about 1.09 bits per order at K = 60), so
the high orders are exactly the ones an FFT product destroys.  This script
measures both sides on n series at once (numpy, one core), with coefficients
falling 2^-1.09 per order and random complex signs:
    python bench/bench_high_degree.py
"""

from __future__ import annotations

import json
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def series(rng: np.random.Generator, n: int, K: int, bits_per_order: float) -> np.ndarray:
    decay = 2.0 ** (-bits_per_order * np.arange(K + 1))
    z = rng.normal(size=(n, K + 1)) + 1j * rng.normal(size=(n, K + 1))
    return z * decay


def direct(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    K = a.shape[1] - 1
    c = np.zeros_like(a)
    for m in range(K + 1):
        c[:, m] = np.einsum("ij,ij->i", a[:, : m + 1], b[:, m::-1])
    return c


def fft_product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    K = a.shape[1] - 1
    L = 1 << int(np.ceil(np.log2(2 * K + 1)))
    return np.fft.ifft(np.fft.fft(a, L, axis=1) * np.fft.fft(b, L, axis=1), axis=1)[:, : K + 1]


def exact(a: np.ndarray, b: np.ndarray, m: int) -> np.ndarray:
    """c_m in extended precision (longdouble), the reference for both."""
    ar, ai = a.real.astype(np.longdouble), a.imag.astype(np.longdouble)
    br, bi = b.real.astype(np.longdouble), b.imag.astype(np.longdouble)
    jr = slice(0, m + 1)
    rev = slice(m, None, -1) if m > 0 else slice(0, 1)
    re = (ar[:, jr] * br[:, rev] - ai[:, jr] * bi[:, rev]).sum(1)
    im = (ar[:, jr] * bi[:, rev] + ai[:, jr] * br[:, rev]).sum(1)
    return (re + 1j * im).astype(np.complex128)


def main() -> None:
    from bench.machine import describe

    rng = np.random.default_rng(0)
    n = 4096
    out: dict = {
        "date": str(date.today()),
        "machine": describe(),
        "n_series": n,
        "bits_per_order": 1.09,
        "rows": [],
    }
    for K in (32, 64, 100, 200):
        a, b = series(rng, n, K, 1.09), series(rng, n, K, 1.09)
        t = time.perf_counter()
        cd = direct(a, b)
        t_direct = time.perf_counter() - t
        t = time.perf_counter()
        cf = fft_product(a, b)
        t_fft = time.perf_counter() - t
        row = {"K": K, "direct_ms": 1e3 * t_direct, "fft_ms": 1e3 * t_fft}
        for m in (1, K // 2, K):
            ref = exact(a, b, m)
            scale = np.abs(ref)
            row[f"relerr_direct_c{m}"] = float(np.median(np.abs(cd[:, m] - ref) / scale))
            row[f"relerr_fft_c{m}"] = float(np.median(np.abs(cf[:, m] - ref) / scale))
        out["rows"].append(row)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
