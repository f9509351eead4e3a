"""Writing a sketch: create it, resume it chunk by chunk, finish it, or discard a failed start.

``SketchWriter`` holds an exclusive lock on ``SKETCH/.lock`` while it writes
(so two compiles never write one sketch, and a reader can tell that a
compile is running), rewrites the sealed manifest after every file it adds,
and records the stamps of the files it wrote (``runtime.integrity``), so the
first query need not hash them again.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from runtime.files import (
    SketchError,
    atomic_save,
    check_finite,
    load_verified,
    map_verified,
    npy_bytes,
    stamp_of,
)
from runtime.integrity import STAMPS, Stamps, check_file_name
from runtime.spec import sha256_bytes
from runtime.store import (
    CHUNK_DIR,
    FORMAT,
    LOCK,
    MANIFEST,
    VERSION,
    chunk_name,
    describe_mismatch,
    dtype_problem,
    num_chunks,
    read_manifest,
    write_manifest,
)

__all__ = ["SketchWriter"]


class SketchWriter:
    """Create a sketch directory or resume one compiled with the same configuration.

    Use as a context manager: it holds an exclusive lock on ``SKETCH/.lock``
    so two compiles never write the same sketch.
    """

    def __init__(
        self,
        path: str | Path,
        config: dict[str, Any],
        info: dict[str, Any] | None = None,
        warn: Callable[[str], None] | None = None,
    ):
        self.path = Path(path)
        self.config = json.loads(json.dumps(config))  # plain JSON types, as stored
        self.info = info or {}
        self.warn = warn or (lambda msg: None)
        self._lock_fd: int | None = None
        self.manifest: dict[str, Any] = {}
        self.stamps = Stamps(self.path)
        self.created = False  # this writer started the sketch (there was no manifest)
        self._made_dir = False  # ... in a directory it created
        self._writing: set[str] = set()  # files put, listed in the manifest or about to be
        self._p0: np.ndarray | None = None
        self._losses: np.ndarray | None = None

    # ---- lifecycle
    def __enter__(self) -> SketchWriter:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        p = self.path
        if p.exists() and not p.is_dir():
            raise SketchError(f"--out {str(p)!r} exists and is not a directory")
        self._made_dir = not p.exists()
        try:
            (p / CHUNK_DIR).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SketchError(f"cannot create sketch directory {str(p)!r}: {e.strerror}") from None
        self._lock()
        try:
            self._open_locked()
        except BaseException:
            self.close()
            raise

    def _open_locked(self) -> None:
        p = self.path
        for d in (p, p / CHUNK_DIR):  # leftovers of writes interrupted before their rename
            for tmp in d.glob(".*.tmp"):
                with contextlib.suppress(OSError):
                    tmp.unlink()
        if (p / MANIFEST).exists():
            stored = read_manifest(p)
            diffs = describe_mismatch(stored["config"], self.config)
            if diffs:
                raise SketchError(
                    f"sketch {str(p)!r} was compiled with {'; '.join(diffs)}: use another --out "
                    "directory (or delete this one) to compile a different sketch"
                )
            self.manifest = stored
            self._check_existing()
        else:
            if any(f for f in p.iterdir() if f.name not in (CHUNK_DIR, LOCK)) or any(
                (p / CHUNK_DIR).iterdir()
            ):
                raise SketchError(
                    f"--out {str(p)!r} is a non-empty directory without a sketch manifest: "
                    "choose an empty or new directory"
                )
            self.created = True
            self.manifest = {
                "format": FORMAT,
                "version": VERSION,
                "config": self.config,
                "info": self.info,
                "complete": False,
                "files": {},
            }
            self._write_manifest()

    def close(self) -> None:
        if self._lock_fd is not None:
            self.stamps.flush()
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    @contextlib.contextmanager
    def discarding(self) -> Iterator[None]:
        """On an exception in the block, ``discard`` (then re-raise)."""
        try:
            yield
        except BaseException:
            self.discard()
            raise

    def discard(self) -> bool:
        """Remove a sketch this writer started and that holds no finished chunk yet.

        What a failed or refused compile leaves behind otherwise is an empty
        start.  Returns whether it removed it; a sketch with a finished chunk
        (or one this writer resumed) stays, for the same command to resume.
        """
        if not self.created or self.done_chunks() or self._lock_fd is None:
            return False
        p = self.path
        names = [*self.manifest.get("files", {}), *self._writing, MANIFEST, STAMPS,
                 ".verified.lock"]
        # and the temporary files of writes an interrupt cut short (``atomic_write_bytes``)
        strays = [f for d in (p, p / CHUNK_DIR) if d.is_dir() for f in d.glob(".*.tmp")]
        for f in [*(p / name for name in names), *strays]:
            with contextlib.suppress(OSError):
                f.unlink()
        with contextlib.suppress(OSError):
            (p / CHUNK_DIR).rmdir()
        os.close(self._lock_fd)
        self._lock_fd = None
        with contextlib.suppress(OSError):
            (p / LOCK).unlink()
        if self._made_dir:
            with contextlib.suppress(OSError):
                p.rmdir()  # only if nothing else appeared in it
        return True

    def _lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no locking
            return
        fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise SketchError(
                f"sketch {str(self.path)!r} is being compiled by another process"
            ) from None
        self._lock_fd = fd

    def _check_existing(self) -> None:
        """Drop (and later recompute) any listed file that fails verification: its dtype,
        sha256 and values, since the stamp recorded here vouches for them to every reader."""
        files = self.manifest["files"]
        for name in sorted(files):
            label = f"file {name}"
            try:
                problem = dtype_problem(name, files[name]["dtype"])
                if problem:
                    raise SketchError(f"{label} {problem}")
                stamp = stamp_of(self.path / name)
                if name in ("params0.npy", "losses.npy"):
                    arr = load_verified(self.path / name, files[name], label)
                    check_finite(arr, label)
                elif not self.stamps.valid(name, files[name]["sha256"]):
                    map_verified(self.path / name, files[name], label, lambda _stamp: False)
                self.stamps.record(name, files[name]["sha256"], stamp)
            except SketchError as e:
                self.warn(f"sketch {str(self.path)!r}: {e}; it will be recomputed")
                del files[name]
                self.manifest["complete"] = False
                continue
            if name == "params0.npy":
                self._p0 = arr
            elif name == "losses.npy":
                self._losses = arr
        if "params0.npy" not in files or "losses.npy" not in files:
            # the undeleted run is re-derived from the next chunk; keep chunks consistent
            files.pop("params0.npy", None)
            files.pop("losses.npy", None)
            self._p0 = self._losses = None
        self._write_manifest()

    def _write_manifest(self) -> None:
        self.manifest["files"] = dict(sorted(self.manifest["files"].items()))
        self.manifest = write_manifest(self.path, self.manifest)

    # ---- content
    def has(self, name: str) -> bool:
        return name in self.manifest["files"]

    def done_chunks(self) -> set[int]:
        n = num_chunks(self.config["num_directions"], self.config["chunk_size"])
        return {c for c in range(n) if self.has(chunk_name(c))}

    def put(self, name: str, arr: np.ndarray) -> None:
        """Write one array file atomically and record it in the manifest."""
        check_file_name(name, self.path, f"sketch {str(self.path)!r}")
        self._writing.add(name)  # an interrupt between its write and the manifest's: discarded
        entry = atomic_save(self.path / name, arr)
        self.stamps.record(name, entry["sha256"], stamp_of(self.path / name))
        self.manifest["files"][name] = entry
        self._write_manifest()

    def ensure(self, name: str, arr: np.ndarray) -> None:
        """Write a deterministic array unless the same bytes are already recorded."""
        entry = self.manifest["files"].get(name)
        if entry is not None and entry["sha256"] == sha256_bytes(npy_bytes(arr)):
            return
        if entry is not None:
            raise SketchError(
                f"sketch {str(self.path)!r}: file {name} differs from what this compile "
                "produces: use another --out directory"
            )
        self.put(name, arr)

    def add_chunk(self, c: int, phi: np.ndarray, p0: np.ndarray, losses: np.ndarray) -> None:
        """Store chunk c; the undeleted run (p0, losses) must agree with earlier chunks."""
        if self._p0 is None:
            self.put("params0.npy", p0)
            self.put("losses.npy", losses)
            self._p0, self._losses = np.array(p0), np.array(losses)
        elif not (np.array_equal(p0, self._p0) and np.array_equal(losses, self._losses)):
            diff = float(np.max(np.abs(p0 - self._p0)))
            scale = float(np.max(np.abs(self._p0)))
            if not diff <= 1e-9 * scale:
                raise SketchError(
                    f"chunk {c}: its undeleted training run differs from the stored one by "
                    f"{diff:.3g} (workers running different code or hardware?)"
                )
            self.warn(
                f"chunk {c}: undeleted parameters differ from the stored ones by {diff:.3g} "
                "(not bit-identical: workers on different hardware?)"
            )
        self.put(chunk_name(c), phi)

    def finish(self) -> None:
        n = num_chunks(self.config["num_directions"], self.config["chunk_size"])
        missing = sorted(set(range(n)) - self.done_chunks())
        if missing:
            raise SketchError(f"cannot finish sketch: chunks {missing[:5]} are missing")
        self.manifest["complete"] = True
        self._write_manifest()
