"""A sketch on disk: a directory holding ``manifest.json`` and plain ``.npy`` arrays.

Layout::

    SKETCH/manifest.json            format, configuration, checksum of every array file,
                                    and the manifest's own checksum (runtime.integrity)
    SKETCH/directions.npy           (M, N) complex128, the directions psi_j as rows
    SKETCH/docs.npy                 (N,) unicode, the training documents in order
    SKETCH/params0.npy              (P,) float64, the undeleted trained parameters
    SKETCH/losses.npy               (T,) float64, the undeleted per-step training losses
    SKETCH/chunks/phi_00000.npy     (B, K, P) complex128, orders 1..K of the parameters
                                    along directions [c * chunk_size, ...) of chunk c
    SKETCH/init.npy                 (P,) float64, initial parameters (only with --init)
    SKETCH/cache/<sha256(doc)>.*    per-test-document coefficients (runtime.query)
    SKETCH/metagrad/<sha256(doc)>.* per-test-document exact dF/dw (runtime.metagrad)
    SKETCH/.verified.json           stamps of the files verified so far (runtime.integrity)

A user program's sketch (``compile --program FILE.py:FN``) records the file's
sha256 and the function name in its configuration; ``docs.npy`` then holds a
short description of each document's arrays.

Arrays are written and read with ``allow_pickle=False``; nothing is ever
pickled.  Every write is atomic (``runtime.files``), so a reader or an
interrupted writer only ever sees whole files.  The manifest is rewritten
(atomically, sealed with its checksum) after each finished chunk: a chunk
file without a manifest entry (killed between the two renames) is simply
recomputed on resume.

What is checked when (``docs/integrity.md``): opening a sketch checks the
manifest's seal (an edited value is named), its file names (none outside the
folder), every listed file's size and that the configuration agrees with the
recorded shapes and dtypes; reading an array memory-maps it and checks its sha256 and finite
values (unless its stamp shows it verified since its last change);
a result derived from the sketch (``Sketch.derived``, ``runtime.derived``)
checks the files it was computed from, by their stamps or by hashing them;
``Sketch.verify_all()`` hashes every file.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from runtime.files import (
    SketchError,
    atomic_save,
    atomic_write_bytes,
    atomic_write_json,
    canonical_json,
    check_file,
    check_finite,
    load_verified,
    lock_is_held,
    map_verified,
    npy_bytes,
    stamp_of,
)
from runtime.integrity import Stamps, check_file_name, check_seal, seal
from runtime.spec import sha256_bytes

__all__ = [
    "FORMAT",
    "MANIFEST",
    "VERSION",
    "Sketch",
    "SketchError",
    "atomic_save",
    "atomic_write_bytes",
    "atomic_write_json",
    "circuit_differences",
    "dtype_problem",
    "load_verified",
    "npy_bytes",
    "write_manifest",
]

FORMAT = "circuitsketch-sketch"
VERSION = 3
"""Sketch format version: bumped whenever the meaning of the stored numbers or of the
manifest changes (2: ``fingerprints`` are those of the traced circuits, with no hash of
the generated code; 3: the manifest is sealed by its own checksum and field checksums).
A sketch of another version is refused, naming both versions."""
MANIFEST = "manifest.json"
LOCK = ".lock"
CHUNK_DIR = "chunks"

# configuration keys whose mismatch gets a plain-words description
_MISMATCH = {
    "program": "another training program",
    "program_sha256": "another program file (its content changed)",
    "function": "another program function",
    "docs_sha256": "another documents file",
    "num_docs": "another number of documents",
    "init": "another init",
    "degree": "another degree",
    "steps": "another number of steps",
    "num_directions": "another number of directions",
    "seed": "another seed",
    "directions": "other directions",
    "chunk_size": "another chunk size",
    "hyperparameters": "other hyper-parameters",
    "model_config": "another model configuration",
    "train_config": "other training settings",
    "fingerprints": "other traced circuits (the program or its tracing changed)",
}


def describe_mismatch(stored: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """Plain-words differences between two sketch configurations."""
    out = []
    # the settings a user chose first, naming each that differs
    first = ("model_config", "train_config")
    for key in sorted(set(stored) | set(wanted),
                      key=lambda k: (k not in first, k not in _MISMATCH, k)):
        a, b = stored.get(key), wanted.get(key)
        if a == b:
            continue
        what = _MISMATCH.get(key, f"another {key}")
        if key == "fingerprints":
            out.append(f"{what} ({key}: {'; '.join(circuit_differences(a, b))})")
        elif key in ("model_config", "train_config"):  # settings absent are the defaults
            a, b = a or {}, b or {}
            def value(d: dict, k: str) -> str:
                return _short(d[k]) if k in d else "the default"

            diffs = [f"{k}: sketch has {value(a, k)}, asked for {value(b, k)}"
                     for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
            out.append(f"{what} ({'; '.join(diffs)})")
        else:
            out.append(f"{what} ({key}: sketch has {_short(a)}, asked for {_short(b)})")
    return out


def circuit_differences(stored: Any, current: dict[str, str]) -> list[str]:
    """Which circuits differ between a sketch's fingerprints and the program's.

    Keys are ``"step:KEY"`` / ``"output:KEY"`` (``runtime.spec.fingerprints``; KEY is
    a length bucket, or a user program's document signature); each difference is
    named, e.g. "step circuit for bucket 8 differs".
    """
    if not isinstance(stored, dict):
        return ["the sketch records no circuit fingerprints"]
    out = []
    for name in sorted(set(stored) | set(current)):
        kind, _, key = str(name).partition(":")
        # microgpt's (batch size, bucket) of padded minibatches, or (.., packed rows)
        batch = re.fullmatch(r"\((\d+), (\d+)(?:, (\d+))?\)", key)
        if key.isdigit():
            where = f"bucket {key}"
        elif batch:
            rows = f", {batch[3]} packed rows" if batch[3] else ""
            where = f"batches of {batch[1]}, bucket {batch[2]}{rows}"
        else:
            where = f"documents {key}"
        what = f"{kind} circuit for {where}" if key else f"circuit {name!r}"
        if name not in current:
            out.append(f"{what} is in the sketch, not in this program")
        elif name not in stored:
            out.append(f"{what} is in this program, not in the sketch")
        elif stored[name] != current[name]:
            out.append(f"{what} differs")
    return out


def _short(v: Any) -> str:
    text = json.dumps(v, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."


def chunk_name(c: int) -> str:
    return f"{CHUNK_DIR}/phi_{c:05d}.npy"


def chunk_bounds(c: int, chunk_size: int, m: int) -> tuple[int, int]:
    return c * chunk_size, min((c + 1) * chunk_size, m)


def num_chunks(m: int, chunk_size: int) -> int:
    return -(-m // chunk_size)


# ---------------------------------------------------------------- reading
class Sketch:
    """A sketch directory opened for reading (see the module docstring)."""

    def __init__(self, path: Path, manifest: dict[str, Any]):
        self.path = path
        self.manifest = manifest
        self.config: dict[str, Any] = manifest["config"]
        self._arrays: dict[str, np.ndarray] = {}
        # a user program's file, if not at the path recorded at compile time (--program)
        self.program_file: str | None = None
        self.stamps = Stamps(path)
        self._verified: dict[str, list[int] | None] = {}  # name -> stamp when verified

    @classmethod
    def open(cls, path: str | Path, require_complete: bool = True) -> Sketch:
        """Open SKETCH: its manifest's seal, file names and sizes checked (SketchError)."""
        p = Path(path)
        if not p.is_dir():
            raise SketchError(f"sketch {str(p)!r} does not exist (or is not a directory)")
        manifest = read_manifest(p)
        sk = cls(p, manifest)
        for name, entry in manifest["files"].items():
            f = p / name
            if not f.is_file():
                raise SketchError(f"sketch {str(p)!r}: file {name} is missing")
            size = f.stat().st_size
            if size != entry["bytes"]:
                raise SketchError(
                    f"sketch {str(p)!r}: file {name} is truncated or altered "
                    f"({size} bytes, the manifest says {entry['bytes']})"
                )
        sk.check_shapes()
        if require_complete and not sk.complete:
            done = f"{len(sk.done_chunks())} of {sk.num_chunks} chunks"
            if lock_is_held(p / LOCK):
                raise SketchError(
                    f"sketch {str(p)!r} is still being compiled ({done} done): "
                    "query it when the compile has finished"
                )
            raise SketchError(
                f"sketch {str(p)!r} is incomplete ({done}): rerun the same compile command "
                "to finish it"
            )
        return sk

    def check_shapes(self) -> None:
        """Refuse a configuration that contradicts the arrays' recorded shapes (a resealed
        hand edit): N, M and T are read from it, so a wrong one gives wrong numbers.

        Likewise each array's dtype (a real ``directions.npy`` or chunk, resealed, would
        otherwise be read as complex with zero imaginary parts).  The shapes and dtypes
        are the manifest's (each file's is checked against it when read).
        """
        files = self.manifest["files"]
        for name, entry in files.items():
            problem = dtype_problem(name, entry["dtype"])
            if problem:
                raise SketchError(f"sketch {str(self.path)!r}: file {name} {problem}")
        for name, ndim, axis, key, what in _SHAPES:
            if name not in files:
                continue
            shape = tuple(files[name]["shape"])
            if (len(shape) != ndim) if ndim else (len(shape) <= axis):
                want = f"{ndim}-D" if ndim else f"at least {axis + 1}-D"
                raise SketchError(
                    f"sketch {str(self.path)!r}: {name} has shape {shape}, expected a {want} array"
                )
            if shape[axis] != self.config[key]:
                raise SketchError(
                    f"sketch {str(self.path)!r}: config.{key} is {self.config[key]} but "
                    f"{name} holds {what.format(shape[axis])}"
                )

    # ---- configuration
    @property
    def degree(self) -> int:
        return int(self.config["degree"])

    @property
    def num_directions(self) -> int:
        return int(self.config["num_directions"])

    @property
    def num_docs(self) -> int:
        return int(self.config["num_docs"])

    @property
    def steps(self) -> int:
        return int(self.config["steps"])

    @property
    def seed(self) -> int:
        return int(self.config["seed"])

    @property
    def chunk_size(self) -> int:
        return int(self.config["chunk_size"])

    @property
    def num_chunks(self) -> int:
        return num_chunks(self.num_directions, self.chunk_size)

    @property
    def complete(self) -> bool:
        return bool(self.manifest.get("complete")) and len(self.done_chunks()) == self.num_chunks

    @functools.cached_property
    def sketch_id(self) -> str:
        """sha256 of the configuration and of every file's checksum: names this content."""
        body = {"config": self.config, "files": self.manifest["files"]}
        return sha256_bytes(json.dumps(body, sort_keys=True).encode())

    @functools.cached_property
    def config_checksum(self) -> str:
        """sha256 of the canonical configuration (what derived results are keyed by)."""
        return hashlib.sha256(canonical_json(self.config)).hexdigest()

    def done_chunks(self) -> list[int]:
        return [c for c in range(self.num_chunks) if chunk_name(c) in self.manifest["files"]]

    # ---- arrays (verified on read, memory-mapped)
    def _entry(self, name: str) -> dict[str, Any]:
        entry = self.manifest["files"].get(name)
        if entry is None:
            raise SketchError(f"sketch {str(self.path)!r}: the manifest lists no file {name}")
        return entry

    def load(self, name: str) -> np.ndarray:
        """The array of file `name`, memory-mapped read-only; its shape and dtype checked,
        and its sha256 unless it was verified since its last change (by this process or
        any other: ``runtime.integrity.Stamps``), so a warm query hashes nothing."""
        if name not in self._arrays:
            entry = self._entry(name)

            def trusted(stamp: list[int]) -> bool:
                return self._verified.get(name) == stamp or self.stamps.valid(
                    name, entry["sha256"], stamp
                )

            label = f"sketch {str(self.path)!r}: file {name}"
            arr, stamp, hashed = map_verified(self.path / name, entry, label, trusted)
            self._arrays[name] = arr
            self._verified[name] = stamp
            if hashed:
                self.stamps.record(name, entry["sha256"], stamp)
                self.stamps.flush()
        return self._arrays[name]

    def ensure_verified(self, names: Iterable[str], force: bool = False) -> None:
        """Check that files `names` hold what the manifest says (and finite numbers),
        without keeping them.

        A file verified earlier (in this process, or by any process since its
        last change: ``runtime.integrity.Stamps``) is not read again unless
        `force`.  SketchError names the first file that fails.
        """
        for name in names:
            entry = self._entry(name)
            path = self.path / name
            stamp = stamp_of(path)
            if (
                not force
                and stamp is not None
                and (self._verified.get(name) == stamp or self.stamps.valid(name, entry["sha256"]))
            ):
                self._verified[name] = stamp
                continue
            label = f"sketch {str(self.path)!r}: file {name}"
            check_file(path, entry, label)
            arr, _, _ = map_verified(path, entry, label, lambda _stamp: True)  # hashed above
            check_finite(arr, label)
            del arr
            self._verified[name] = stamp
            self.stamps.record(name, entry["sha256"], stamp)
        self.stamps.flush()

    def directions(self) -> np.ndarray:
        return self.load("directions.npy")

    def docs(self) -> list[str]:
        return [str(d) for d in self.load("docs.npy")]

    def params0(self) -> np.ndarray:
        return self.load("params0.npy")

    def losses(self) -> np.ndarray:
        return self.load("losses.npy")

    def chunk(self, c: int) -> np.ndarray:
        """Orders 1..K of the parameters along the directions of chunk c: (B, K, P)."""
        return self.load(chunk_name(c))

    def chunk_bounds(self, c: int) -> tuple[int, int]:
        return chunk_bounds(c, self.chunk_size, self.num_directions)

    def verify_all(self) -> None:
        """Hash every array file (SketchError naming the first bad one); stamps them."""
        self.ensure_verified(sorted(self.manifest["files"]), force=True)

    def derived(
        self,
        kind: str,
        inputs: Sequence[str] | None = None,
        label: str | None = None,
        warn: Callable[[str], None] | None = None,
    ):
        """The store of results of `kind` derived from this sketch (``runtime.derived``).

        `inputs`: the array files they are computed from (None: all).
        """
        from runtime.derived import Derived

        return Derived(self, kind, inputs, label, warn)

    def check_compiled(self, fps: dict[str, str]) -> None:
        """Refuse to evaluate this sketch with circuits other than the ones that made it.

        `fps`: the program's traced-circuit fingerprints (``runtime.spec.fingerprints``).
        The generated code is not compared: a compiler change that keeps the circuits
        keeps the sketch readable.
        """
        diffs = circuit_differences(self.config.get("fingerprints"), fps)
        if diffs:
            raise SketchError(
                f"sketch {str(self.path)!r} was made by another training program: "
                f"{'; '.join(diffs)} (the program, or how circuitsketch traces it, changed since); "
                "recompile the sketch"
            )


_ENTRY_TYPES = {"sha256": str, "bytes": int, "shape": list, "dtype": str}
# (file, its number of axes (None: any), an axis, the configuration key it counts, what it holds)
_SHAPES = (
    ("docs.npy", 1, 0, "num_docs", "{} documents"),
    ("directions.npy", 2, 0, "num_directions", "{} directions"),
    ("directions.npy", 2, 1, "num_docs", "directions over {} documents"),
    ("losses.npy", None, 0, "steps", "the losses of {} steps"),
)
# the dtype of each array file a sketch holds (what the writer stores); chunks: complex128
_DTYPES = {"directions.npy": "complex128", "params0.npy": "float64", "losses.npy": "float64",
           "init.npy": "float64", "schedule.npy": "int64", "docs.npy": "str"}


def dtype_problem(name: str, dtype: str) -> str | None:
    """What is wrong with file `name` of a sketch recording `dtype` (None: nothing, or a
    file of no fixed dtype)."""
    want = "complex128" if name.startswith(CHUNK_DIR + "/") else _DTYPES.get(name)
    if want is None:
        return None
    try:
        got = np.dtype(dtype)
    except (TypeError, ValueError, OverflowError):  # not a dtype at all
        return f"has dtype {dtype!r}, expected {want}"
    ok = got.kind == "U" if want == "str" else got.str == np.dtype(want).str
    return None if ok else f"has dtype {got}, expected {want}"


# the lowest value of each configuration integer (a 0 chunk size would divide by zero)
_MINIMUM = {"degree": 1, "num_directions": 1, "num_docs": 1, "steps": 1, "seed": 0,
            "chunk_size": 1}


def read_manifest(p: Path) -> dict[str, Any]:
    """The manifest of sketch directory `p`: version, seal, structure and file names checked."""
    mpath = p / MANIFEST
    label = f"sketch {str(p)!r}: {MANIFEST}"
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SketchError(f"{label} is missing: not a sketch directory") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise SketchError(f"{label} is unreadable or corrupt: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise SketchError(f"{label} is not a circuitsketch sketch manifest")
    if manifest.get("version") != VERSION:
        raise SketchError(
            f"{label}: format version {manifest.get('version')!r}, this program reads "
            f"{VERSION}: recompile the sketch with this version"
        )
    check_seal(manifest, label)
    config, files = manifest.get("config"), manifest.get("files")
    if not isinstance(config, dict) or any(
        not isinstance(config.get(k), int) or isinstance(config.get(k), bool) for k in _MINIMUM
    ):
        raise SketchError(f"{label} has a missing or malformed configuration")
    for key, low in _MINIMUM.items():
        if config[key] < low:
            raise SketchError(f"{label}: config.{key} is {config[key]}, expected >= {low}")
    if not isinstance(files, dict) or any(
        not isinstance(e, dict) or any(not isinstance(e.get(k), t) for k, t in _ENTRY_TYPES.items())
        for e in files.values()
    ):
        raise SketchError(f"{label} has a malformed file table")
    for name in files:
        check_file_name(name, p, label)
    return manifest


def write_manifest(path: str | Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Seal `manifest` and write it atomically as SKETCH/manifest.json; returns it sealed."""
    sealed = seal(manifest)
    atomic_write_json(Path(path) / MANIFEST, sealed)
    return sealed


def __getattr__(name: str) -> Any:
    """``SketchWriter`` lives in runtime/writer.py (which builds on this module)."""
    if name == "SketchWriter":
        from runtime.writer import SketchWriter

        return SketchWriter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
