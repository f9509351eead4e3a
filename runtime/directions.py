"""Sketch directions: reproducible random unit vectors in C^N, or rows given in a file.

Direction j of seed S is drawn from ``np.random.default_rng([S, j])``: N real
parts then N imaginary parts, i.i.d. N(0, 1), normalised to unit 2-norm.  It
depends only on (S, j, N), never on how directions are batched or scheduled.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = [
    "DirectionsError",
    "gaussian_direction",
    "gaussian_directions",
    "load_directions_file",
]


class DirectionsError(ValueError):
    """A directions file that cannot be used as given."""


def gaussian_direction(seed: int, j: int, n: int) -> np.ndarray:
    """Direction j of seed `seed`: a complex Gaussian unit vector of C^n (complex128)."""
    if n < 1:
        raise ValueError(f"directions need N >= 1 documents, got {n}")
    if seed < 0 or j < 0:
        raise ValueError(f"seed and direction index must be >= 0, got {seed}, {j}")
    rng = np.random.default_rng([int(seed), int(j)])
    re = rng.standard_normal(n)
    im = rng.standard_normal(n)
    v = re + 1j * im
    return v / np.linalg.norm(v)


def gaussian_directions(seed: int, start: int, stop: int, n: int) -> np.ndarray:
    """Directions start..stop-1 of seed `seed` as rows of a (stop - start, n) array."""
    out = np.empty((max(stop - start, 0), n), np.complex128)
    for row, j in enumerate(range(start, stop)):
        out[row] = gaussian_direction(seed, j, n)
    return out


def load_directions_file(path: str | Path, n: int) -> np.ndarray:
    """The (M, n) complex128 rows of a .npy file, exactly as stored (not normalised).

    Refuses (DirectionsError, naming the file) anything but a finite complex128
    array of shape (M, n) with M >= 1 and no all-zero row; pickled object arrays are
    never loaded.
    """
    p = Path(path)
    if not p.is_file():
        raise DirectionsError(f"directions file {str(p)!r} does not exist")
    try:
        arr = np.load(p, allow_pickle=False, mmap_mode=None)
    except ValueError as e:  # object arrays need pickle: refused
        raise DirectionsError(f"directions file {str(p)!r} cannot be loaded safely: {e}") from None
    except (OSError, EOFError) as e:
        raise DirectionsError(f"directions file {str(p)!r} is not a .npy array: {e}") from None
    if not isinstance(arr, np.ndarray):
        arr.close()
        raise DirectionsError(
            f"directions file {str(p)!r} must hold one .npy array, not an archive"
        )
    if arr.dtype != np.complex128:
        raise DirectionsError(
            f"directions file {str(p)!r} has dtype {arr.dtype}, expected complex128"
        )
    if arr.ndim != 2 or arr.shape[1] != n or arr.shape[0] < 1:
        raise DirectionsError(
            f"directions file {str(p)!r} has shape {arr.shape}, expected (M, {n}) with M >= 1 "
            f"(one row per direction, one column per training document)"
        )
    if not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise DirectionsError(
            f"directions file {str(p)!r} holds a non-finite value at row {bad[0]}, column {bad[1]}"
        )
    zero = np.flatnonzero(~arr.any(axis=1))
    if zero.size:  # its terms would be exactly 0 ± 0: a sure-looking answer from nothing
        raise DirectionsError(
            f"directions file {str(p)!r}: row {zero[0]} is all zeros (a direction carrying "
            "no information)"
        )
    return np.ascontiguousarray(arr)
