"""A sketch on disk: a directory holding ``manifest.json`` and plain ``.npy`` arrays.

Layout::

    SKETCH/manifest.json            format, configuration, checksum of every array file
    SKETCH/directions.npy           (M, N) complex128, the directions psi_j as rows
    SKETCH/docs.npy                 (N,) unicode, the training documents in order
    SKETCH/params0.npy              (P,) float64, the undeleted trained parameters
    SKETCH/losses.npy               (T,) float64, the undeleted per-step training losses
    SKETCH/chunks/phi_00000.npy     (B, K, P) complex128, orders 1..K of the parameters
                                    along directions [c * chunk_size, ...) of chunk c
    SKETCH/init.npy                 (P,) float64, initial parameters (only with --init)
    SKETCH/cache/<sha256(doc)>.npy  per-test-document coefficients (runtime.query)
    SKETCH/metagrad/<sha256(doc)>.npy  per-test-document exact dF/dw (runtime.metagrad)

A user program's sketch (``compile --program FILE.py:FN``) records the file's
sha256 and the function name in its configuration; ``docs.npy`` then holds a
short description of each document's arrays.

Arrays are written with ``allow_pickle=False`` and read with ``allow_pickle=False``;
nothing is ever pickled.  Every write goes to a temporary file in the same
directory and is renamed over the target (``os.replace``), so a reader or an
interrupted writer only ever sees whole files.  The manifest is rewritten
(atomically) after each finished chunk: a chunk file without a manifest entry
(killed between the two renames) is simply recomputed on resume.

Opening a sketch checks the manifest and that every listed file exists with
its recorded size; each array's sha256 is verified when it is read (so a
query on a new document, which reads every chunk, verifies everything; a
repeated query reads only the directions and its cached coefficients).
``Sketch.verify_all()`` checks every checksum at once.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from runtime.spec import sha256_bytes

__all__ = [
    "FORMAT",
    "MANIFEST",
    "VERSION",
    "Sketch",
    "SketchError",
    "SketchWriter",
    "atomic_save",
    "atomic_write_bytes",
    "atomic_write_json",
    "circuit_differences",
    "load_verified",
    "npy_bytes",
]

FORMAT = "circuitsketch-sketch"
VERSION = 2
"""Sketch format version: bumped whenever the meaning of the stored numbers or of the
manifest changes (2: ``fingerprints`` are those of the traced circuits, with no hash of
the generated code).  A sketch of another version is refused, naming both versions."""
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


class SketchError(ValueError):
    """A sketch that cannot be used: missing, corrupt, truncated, incomplete or mismatched."""


# ---------------------------------------------------------------- atomic files
def npy_bytes(arr: np.ndarray) -> bytes:
    """The .npy serialisation of `arr` (never pickled: object arrays are refused)."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(arr), allow_pickle=False)
    return buf.getvalue()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp alone makes 0600


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, fsync it, rename it over `path`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_save(path: str | Path, arr: np.ndarray) -> dict[str, Any]:
    """Save an array atomically; returns its manifest entry {sha256, bytes, shape, dtype}."""
    data = npy_bytes(arr)
    atomic_write_bytes(path, data)
    a = np.asarray(arr)
    return {
        "sha256": sha256_bytes(data),
        "bytes": len(data),
        "shape": list(a.shape),
        "dtype": a.dtype.str,
    }


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())


def load_verified(path: str | Path, entry: dict[str, Any], label: str) -> np.ndarray:
    """Read an array file, check its size, sha256, dtype and shape against `entry`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SketchError(f"{label}: file is missing") from None
    except OSError as e:
        raise SketchError(f"{label}: cannot read it: {e.strerror or e}") from None
    if len(data) != entry["bytes"]:
        raise SketchError(
            f"{label}: truncated or altered ({len(data)} bytes, the manifest says {entry['bytes']})"
        )
    got = sha256_bytes(data)
    if got != entry["sha256"]:
        raise SketchError(
            f"{label}: corrupt (sha256 {got[:12]}..., the manifest says {entry['sha256'][:12]}...)"
        )
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise SketchError(f"{label}: not a readable .npy array: {e}") from None
    if list(arr.shape) != list(entry["shape"]) or arr.dtype.str != entry["dtype"]:
        raise SketchError(
            f"{label}: holds {arr.dtype.str} {tuple(arr.shape)}, the manifest says "
            f"{entry['dtype']} {tuple(entry['shape'])}"
        )
    return arr


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
        batch = re.fullmatch(r"\((\d+), (\d+)\)", key)  # microgpt's (batch size, bucket)
        where = (f"bucket {key}" if key.isdigit() else
                 f"batches of {batch[1]}, bucket {batch[2]}" if batch else f"documents {key}")
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

    @classmethod
    def open(cls, path: str | Path, require_complete: bool = True) -> Sketch:
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
        if require_complete and not sk.complete:
            raise SketchError(
                f"sketch {str(p)!r} is incomplete ({len(sk.done_chunks())} of {sk.num_chunks} "
                "chunks): rerun the same compile command to finish it"
            )
        return sk

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

    def done_chunks(self) -> list[int]:
        return [c for c in range(self.num_chunks) if chunk_name(c) in self.manifest["files"]]

    # ---- arrays (verified on read, kept in memory)
    def load(self, name: str) -> np.ndarray:
        if name not in self._arrays:
            entry = self.manifest["files"].get(name)
            if entry is None:
                raise SketchError(f"sketch {str(self.path)!r}: the manifest lists no file {name}")
            self._arrays[name] = load_verified(
                self.path / name, entry, f"sketch {str(self.path)!r}: file {name}"
            )
        return self._arrays[name]

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
        """Verify every array file's checksum (SketchError naming the first bad one)."""
        for name, entry in self.manifest["files"].items():
            load_verified(self.path / name, entry, f"sketch {str(self.path)!r}: file {name}")

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


def read_manifest(p: Path) -> dict[str, Any]:
    mpath = p / MANIFEST
    label = f"sketch {str(p)!r}: {MANIFEST}"
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SketchError(f"{label} is missing: not a sketch directory") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SketchError(f"{label} is unreadable or corrupt: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise SketchError(f"{label} is not a circuitsketch sketch manifest")
    if manifest.get("version") != VERSION:
        raise SketchError(
            f"{label}: format version {manifest.get('version')!r}, this program reads "
            f"{VERSION}: recompile the sketch with this version"
        )
    config, files = manifest.get("config"), manifest.get("files")
    required = ("degree", "num_directions", "num_docs", "steps", "seed", "chunk_size")
    if not isinstance(config, dict) or any(
        not isinstance(config.get(k), int) or isinstance(config.get(k), bool) for k in required
    ):
        raise SketchError(f"{label} has a missing or malformed configuration")
    if not isinstance(files, dict) or any(
        not isinstance(e, dict) or not {"sha256", "bytes", "shape", "dtype"} <= set(e)
        for e in files.values()
    ):
        raise SketchError(f"{label} has a malformed file table")
    for name in files:
        if name.startswith(("/", "..")) or ".." in Path(name).parts:
            raise SketchError(f"{label} lists a file outside the sketch: {name!r}")
    return manifest


# ---------------------------------------------------------------- writing
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
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

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
        """Drop (and later recompute) any listed file that fails verification."""
        files = self.manifest["files"]
        for name in sorted(files):
            try:
                arr = load_verified(self.path / name, files[name], f"file {name}")
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
        atomic_write_json(self.path / MANIFEST, self.manifest)

    # ---- content
    def has(self, name: str) -> bool:
        return name in self.manifest["files"]

    def done_chunks(self) -> set[int]:
        n = num_chunks(self.config["num_directions"], self.config["chunk_size"])
        return {c for c in range(n) if self.has(chunk_name(c))}

    def put(self, name: str, arr: np.ndarray) -> None:
        """Write one array file atomically and record it in the manifest."""
        entry = atomic_save(self.path / name, arr)
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
