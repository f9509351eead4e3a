"""Files a sketch is made of: atomic writes, verified reads, file locks, stat stamps.

Every write goes to a temporary file in the same directory, is fsynced and
renamed over its target (``os.replace``), so a reader or an interrupted
writer only ever sees whole files.  Arrays are written and read with
``allow_pickle=False``.  ``file_lock`` is an ``fcntl.flock`` on a lock file
(shared for readers, exclusive for writers); where the lock file cannot be
created (a read-only directory) it locks nothing, since nobody can write there.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "SketchError",
    "atomic_save",
    "atomic_write_bytes",
    "atomic_write_json",
    "canonical_json",
    "check_file",
    "check_finite",
    "file_lock",
    "load_verified",
    "map_verified",
    "npy_bytes",
    "sha256_of",
    "stamp_of",
]


class SketchError(ValueError):
    """A sketch that cannot be used: missing, corrupt, truncated, incomplete or mismatched."""


def npy_bytes(arr: np.ndarray) -> bytes:
    """The .npy serialisation of `arr` (never pickled: object arrays are refused)."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(arr), allow_pickle=False)
    return buf.getvalue()


def canonical_json(obj: Any) -> bytes:
    """One byte string per JSON value, whatever the key order or whitespace it was read with."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp alone makes 0600


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, fsync it, rename it over `path`."""
    path = Path(path)
    tmp = None
    try:  # an interrupt as soon as the file exists must remove it too
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise


def atomic_save(path: str | Path, arr: np.ndarray) -> dict[str, Any]:
    """Save an array atomically; returns its entry {sha256, bytes, shape, dtype}."""
    data = npy_bytes(arr)
    atomic_write_bytes(path, data)
    a = np.asarray(arr)
    return {
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "shape": list(a.shape),
        "dtype": a.dtype.str,
    }


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write `obj` as indented JSON, atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())


@contextlib.contextmanager
def _reading(label: str) -> Iterator[None]:
    """A missing or unreadable file as a one-line SketchError."""
    try:
        yield
    except FileNotFoundError:
        raise SketchError(f"{label}: file is missing") from None
    except OSError as e:
        raise SketchError(f"{label}: cannot read it: {e.strerror or e}") from None


def _check_size(size: int, entry: dict[str, Any], label: str) -> None:
    if size != entry["bytes"]:
        raise SketchError(
            f"{label}: truncated or altered ({size} bytes, the manifest says {entry['bytes']})"
        )


def _check_sha256(got: str, entry: dict[str, Any], label: str) -> None:
    if got != entry["sha256"]:
        raise SketchError(
            f"{label}: corrupt (sha256 {got[:12]}..., the manifest says {entry['sha256'][:12]}...)"
        )


def sha256_of(f) -> str:
    """sha256 of an open binary file from its position, read in blocks."""
    h = hashlib.sha256()
    for block in iter(lambda: f.read(1 << 22), b""):
        h.update(block)
    return h.hexdigest()


def _check_layout(arr: np.ndarray, entry: dict[str, Any], label: str) -> None:
    if list(arr.shape) != list(entry["shape"]) or arr.dtype.str != entry["dtype"]:
        raise SketchError(
            f"{label}: holds {arr.dtype.str} {tuple(arr.shape)}, the manifest says "
            f"{entry['dtype']} {tuple(entry['shape'])}"
        )


def check_finite(arr: np.ndarray, label: str) -> None:
    """Refuse a NaN or infinity in a float or complex array, naming its first position: it
    would turn every result computed from it into NaN, silently.  Read in blocks of rows,
    so a memory-mapped file is never held in memory whole."""
    if arr.dtype.kind not in "fc" or arr.size == 0:
        return
    if arr.ndim == 0:
        arr = arr.reshape(1)
    rows = max(1, (1 << 20) // arr[0].size)
    for start in range(0, arr.shape[0], rows):
        bad = np.argwhere(~np.isfinite(arr[start : start + rows]))
        if bad.size:
            at = (start + int(bad[0][0]), *(int(i) for i in bad[0][1:]))
            raise SketchError(f"{label}: holds a non-finite value (NaN or infinity) at index {at}")


def load_verified(path: str | Path, entry: dict[str, Any], label: str) -> np.ndarray:
    """Read an array file, check its size, sha256, dtype and shape against `entry`."""
    with _reading(label):
        data = Path(path).read_bytes()
    _check_size(len(data), entry, label)
    _check_sha256(hashlib.sha256(data).hexdigest(), entry, label)
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise SketchError(f"{label}: not a readable .npy array: {e}") from None
    _check_layout(arr, entry, label)
    return arr


def map_verified(
    path: str | Path,
    entry: dict[str, Any],
    label: str,
    trusted: Callable[[list[int]], bool],
) -> tuple[np.ndarray, list[int], bool]:
    """Memory-map an array file (read-only), hashing it and checking its values are finite
    first unless `trusted(stamp)` (a stamp vouches for both).

    Returns (array, stamp, hashed).  The stamp, the hash and the map all come from one
    open file, so a file replaced meanwhile (every circuitsketch write is a rename) is
    never mapped after another one was hashed.  The pages are read lazily: a query
    touches only what it uses, and memory stays flat whatever the sketch's size.
    Trade-off: a file overwritten *in place* by another program while it is mapped
    changes under the reader (its stamp changes, so the next open hashes it again).
    """
    with _reading(label):
        f = open(path, "rb")  # noqa: SIM115 - closed below; the map keeps its own handle
    with f:
        st = os.fstat(f.fileno())
        stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        _check_size(st.st_size, entry, label)
        hashed = not trusted(stamp)
        if hashed:
            with _reading(label):
                digest = sha256_of(f)
                f.seek(0)
            _check_sha256(digest, entry, label)
        arr = _map_npy(f, label)
    _check_layout(arr, entry, label)
    if hashed:
        check_finite(arr, label)
    return arr, stamp, hashed


def _map_npy(f, label: str) -> np.ndarray:
    """The array of an open .npy file as a read-only map (an empty one, or a header
    version without a public reader, is read instead)."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(f)
        else:
            f.seek(0)
            return np.load(f, allow_pickle=False)
        if dtype.hasobject:
            raise ValueError("object arrays are not read (allow_pickle=False)")
        if int(np.prod(shape)) == 0:
            arr = np.empty(shape, dtype, order="F" if fortran else "C")
            arr.flags.writeable = False
            return arr
        mm = np.memmap(f, dtype=dtype, mode="r", shape=shape, offset=f.tell(),
                       order="F" if fortran else "C")
    except (ValueError, OSError, EOFError) as e:
        raise SketchError(f"{label}: not a readable .npy array: {e}") from None
    return mm.view(np.ndarray)  # a plain array over the map (it keeps the map alive)


def check_file(path: str | Path, entry: dict[str, Any], label: str) -> None:
    """Check a file's size and sha256 against `entry` without keeping its content."""
    with _reading(label):
        _check_size(Path(path).stat().st_size, entry, label)
        with open(path, "rb") as f:
            digest = sha256_of(f)
    _check_sha256(digest, entry, label)


def stamp_of(path: str | Path) -> list[int] | None:
    """[size, mtime_ns, ctime_ns, inode] of a file (None if it is missing): any write to
    the file, a copy or a replacement changes at least one of them."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


@contextlib.contextmanager
def file_lock(path: str | Path, shared: bool = False) -> Iterator[bool]:
    """Hold an flock on `path` (created if needed) for the block; yields whether it did.

    Shared for readers, exclusive for writers; blocks until granted.  A lock
    file that cannot be created (read-only directory) yields False and locks nothing.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no locking
        yield False
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            yield False
            return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield True
    finally:
        os.close(fd)  # releases the lock


def lock_is_held(path: str | Path) -> bool:
    """Whether another process holds an exclusive flock on `path` (a running compile)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False
