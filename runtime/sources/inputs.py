"""Test inputs: what is shown, what identifies it, the value itself; and reading them.

For microgpt a test input is its text (label = key = value; the runtime
accepts plain strings there).  A user program's is a dict of arrays, named
and shaped like a training document's, keyed by their content.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["TestInput", "arrays_key", "as_test_input", "load_npz"]


@dataclass(frozen=True, eq=False)
class TestInput:
    """One test input: what is shown (`label`), its cache identity (`key`), the value itself."""

    __test__ = False  # not a pytest test class

    label: str
    key: str
    value: Any


def arrays_key(arrays: dict[str, Any]) -> str:
    """Content identity of a dict of arrays (floats as float64, integers as int64)."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.asarray(arrays[name])
        kind = a.dtype.kind
        a = a.astype(np.float64 if kind == "f" else np.int64 if kind in "iu" else a.dtype)
        a = np.ascontiguousarray(a)
        h.update(f"{name};{a.dtype.str};{a.shape};".encode())
        h.update(a.tobytes())
    return "arrays:" + h.hexdigest()


def as_test_input(value: Any, label: str | None = None) -> TestInput:
    """A TestInput from a microgpt text or a dict of arrays (a TestInput is returned as is)."""
    if isinstance(value, TestInput):
        return value
    if isinstance(value, str):
        return TestInput(value if label is None else label, value, value)
    if isinstance(value, dict):
        arrays = {str(k): np.asarray(v) for k, v in value.items()}
        key = arrays_key(arrays)
        return TestInput(label or key[:19], key, arrays)
    raise TypeError(f"a test input is a text or a dict of arrays, got {type(value).__name__}")


def load_npz(path: str) -> dict[str, np.ndarray]:
    """The named arrays of a --test-npz file (ValueError saying what is wrong with it)."""
    if not os.path.isfile(path):
        raise ValueError(f"--test-npz {path!r} does not exist")
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"--test-npz {path!r} is not an .npz archive (write one with "
            "numpy.savez(FILE, name=array, ...), names as in a training document)"
        )
    try:
        with np.load(path, allow_pickle=False) as z:
            if not hasattr(z, "files"):
                raise ValueError("holds a single array, not named arrays (save it with np.savez)")
            arrays = {name: np.asarray(z[name]) for name in z.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"--test-npz {path!r} is not a readable .npz file: {e}") from None
    if not arrays:
        raise ValueError(f"--test-npz {path!r} holds no arrays")
    for name, a in arrays.items():  # NaN in, NaN out: a test input must be a number
        if np.issubdtype(a.dtype, np.inexact) and not np.all(np.isfinite(a)):
            at = tuple(int(i) for i in np.argwhere(~np.isfinite(a))[0])
            raise ValueError(
                f"--test-npz {path!r}: array {name!r} holds a non-finite value (NaN or "
                f"infinity){f' at index {at}' if at else ''}"
            )
    return arrays
