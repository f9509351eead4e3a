"""Results derived from a sketch and stored beside it, trusted only while their inputs are.

A derived result (a test document's coefficients in ``SKETCH/cache``, a
metagradient in ``SKETCH/metagrad``, any later kind) is one array plus a
JSON sidecar in ``SKETCH/<kind>/``, both named by the sha256 of the result's
key (e.g. the test document).  The sidecar records the array's checksum and
the *inputs* it was computed from: the sha256 of the sketch's configuration
and of every array file it read.  Reading it back (``Derived.get``):

1. a sidecar whose inputs differ from the sketch's current ones is stale: it
   is dropped (deleted, with a warning naming what changed) and the caller
   recomputes;
2. the input files themselves are checked (``Sketch.ensure_verified``: hashed,
   or unchanged since they last were), so a corrupt sketch is refused even
   when the result was computed before the corruption;
3. the array must match its sidecar's checksum, shape and dtype (else it is
   dropped and recomputed).

Writes are atomic and take an exclusive lock on ``SKETCH/<kind>/.lock``;
reads take it shared, so concurrent processes never see a sidecar and an
array of different writes.  A read-only sketch still answers, without storing.

Adopting it for a new kind of result is one call: ``sketch.derived("mykind",
inputs=[...])`` gives the ``Derived`` store; ``get(key)`` / ``put(key, arr,
meta)`` or ``get_or_compute(key, compute)``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from runtime.files import SketchError, atomic_save, atomic_write_json, file_lock, load_verified

if TYPE_CHECKING:
    from runtime.store import Sketch

__all__ = ["DERIVED_FORMAT", "Derived", "Hit"]

DERIVED_FORMAT = "circuitsketch-derived"
LOCK = ".lock"


@dataclass
class Hit:
    """A derived result read back: the array, its sidecar's metadata, where it is."""

    array: np.ndarray
    meta: dict[str, Any]
    path: Path


def _stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


class Derived:
    """The results of one kind stored beside a sketch (see the module docstring).

    `inputs`: the manifest's array files the results are computed from (None:
    all of them); the sketch's configuration is always an input.  `label`
    names one result in messages ("cached coefficients", "stored metagradient").
    """

    def __init__(
        self,
        sketch: Sketch,
        kind: str,
        inputs: Sequence[str] | None = None,
        label: str | None = None,
        warn: Callable[[str], None] | None = None,
    ):
        if not kind.isidentifier():
            raise ValueError(f"derived kind {kind!r}: use a plain name")
        self.sketch = sketch
        self.kind = kind
        self.dir = Path(sketch.path) / kind
        files = sketch.manifest["files"]
        names = sorted(files) if inputs is None else sorted(inputs)
        missing = [n for n in names if n not in files]
        if missing:
            raise SketchError(
                f"sketch {str(sketch.path)!r}: the manifest lists no file {missing[0]}"
            )
        self.inputs = {
            "config": sketch.config_checksum,
            "files": {n: files[n]["sha256"] for n in names},
        }
        self.label = label or f"stored {kind} result"
        self.warn = warn or _stderr

    # ---- names
    def paths(self, key: str) -> tuple[Path, Path]:
        """(array file, sidecar) of `key`."""
        h = hashlib.sha256(key.encode("utf-8")).hexdigest()[:40]
        return self.dir / f"{h}.npy", self.dir / f"{h}.json"

    # ---- reading
    def get(
        self,
        key: str,
        shape: tuple[int, ...] | None = None,
        dtype: Any = None,
        what: str | None = None,
    ) -> Hit | None:
        """The stored result of `key` if it is current and intact, else None.

        Raises SketchError when an input file of the sketch is corrupt (the
        sketch, not the result, is then what cannot be trusted).  `what` names
        the result in warnings (default: the label and the key).
        """
        npy, side = self.paths(key)
        name = what or f"{self.label} for {key!r}"
        if not side.is_file():
            return None
        with file_lock(self.dir / LOCK, shared=True):
            try:
                entry = json.loads(side.read_text(encoding="utf-8"))
                if not isinstance(entry, dict):
                    raise ValueError("not a JSON object")
            except (OSError, ValueError, RecursionError) as e:  # RecursionError: too deep
                self.warn(f"{name}: its sidecar {side.name} is unreadable ({e}); recomputing it")
                entry = None
        if entry is None:
            self._drop(npy, side)
            return None
        if entry.get("key") != key:
            return None  # another key with the same name prefix: a miss, not an error
        stale = self._stale(entry.get("inputs"))
        if stale:
            self.warn(f"{name} was computed from {stale}; dropping it")
            self._drop(npy, side)
            return None
        self.sketch.ensure_verified(self.inputs["files"])
        try:
            with file_lock(self.dir / LOCK, shared=True):
                arr = load_verified(npy, entry.get("array") or {}, f"{name} ({npy.name})")
        except (SketchError, KeyError, TypeError) as e:
            msg = str(e).replace("the manifest says", "its sidecar says")
            self.warn(f"{msg}; recomputing it")
            self._drop(npy, side)
            return None
        want_dtype = None if dtype is None else np.dtype(dtype)
        if (shape is not None and arr.shape != tuple(shape)) or (
            want_dtype is not None and arr.dtype != want_dtype
        ):
            self.warn(
                f"{name} holds {arr.dtype} {arr.shape}, expected {want_dtype} {shape}; "
                "recomputing it"
            )
            self._drop(npy, side)
            return None
        return Hit(arr, dict(entry.get("meta") or {}), npy)

    def _stale(self, recorded: Any) -> str | None:
        """What differs between the inputs a result records and this store's inputs."""
        return self._stale_against(recorded, self.inputs["config"], self.inputs["files"])

    def _stale_now(self, recorded: Any) -> str | None:
        """What changed in the sketch since a result recorded `recorded` (its own inputs)."""
        files = self.sketch.manifest["files"]
        try:
            now = {n: files.get(n, {}).get("sha256") for n in recorded["files"]}
            return Derived._stale_against(recorded, self.sketch.config_checksum, now)
        except (KeyError, TypeError, AttributeError):
            return "unrecorded inputs"

    @staticmethod
    def _stale_against(recorded: Any, config: str, files: dict[str, Any]) -> str | None:
        if not isinstance(recorded, dict) or not isinstance(recorded.get("files"), dict):
            return "unrecorded inputs"
        if recorded.get("config") != config:
            return "another configuration of the sketch (or another sketch)"
        for n in sorted(set(recorded["files"]) | set(files)):
            if recorded["files"].get(n) != files.get(n):
                return f"another version of the sketch's file {n}"
        return None

    def _drop(self, *paths: Path) -> None:
        with contextlib.suppress(OSError), file_lock(self.dir / LOCK) as locked:
            if locked:
                for p in paths:
                    with contextlib.suppress(FileNotFoundError):
                        p.unlink()

    # ---- writing
    def put(self, key: str, arr: np.ndarray, meta: dict[str, Any] | None = None) -> Path | None:
        """Store `arr` as the result of `key` (atomically); None if the sketch is read-only."""
        npy, side = self.paths(key)
        try:
            self.dir.mkdir(exist_ok=True)
            with file_lock(self.dir / LOCK) as locked:
                if not locked:
                    raise PermissionError(13, "read-only")
                entry = atomic_save(npy, arr)
                atomic_write_json(
                    side,
                    {
                        "format": DERIVED_FORMAT,
                        "kind": self.kind,
                        "key": key,
                        "inputs": self.inputs,
                        "array": entry,
                        "meta": meta or {},
                    },
                )
        except OSError as e:
            self.warn(f"cannot store the {self.label} in {str(self.dir)!r}: {e.strerror or e}")
            return None
        self.sketch.stamps.flush()
        return npy

    def remove(self, key: str) -> None:
        """Drop the stored result of `key`, if any."""
        self._drop(*self.paths(key))

    def get_or_compute(
        self,
        key: str,
        compute: Callable[[], np.ndarray],
        meta: dict[str, Any] | None = None,
        **expect: Any,
    ) -> np.ndarray:
        """The stored result of `key`, or `compute()` stored as it (one call for a new kind)."""
        hit = self.get(key, **expect)
        if hit is not None:
            return hit.array
        arr = compute()
        self.put(key, arr, meta)
        return arr

    def entries(self) -> list[tuple[str, str | None]]:
        """(sidecar name, None if current else what is wrong) for every stored result of
        this kind, each judged by the inputs it records."""
        out = []
        for side in sorted(self.dir.glob("*.json")) if self.dir.is_dir() else []:
            try:
                entry = json.loads(side.read_text(encoding="utf-8"))
                stale = self._stale_now(entry.get("inputs"))
                if stale is None:
                    load_verified(side.with_suffix(".npy"), entry["array"], side.stem)
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
                stale = str(e) or type(e).__name__
            out.append((side.name, stale))
        return out
