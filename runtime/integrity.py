"""What makes a sketch trustworthy: the sealed manifest, safe file names, verified stamps.

**The seal.**  A manifest carries ``checksum``, the sha256 of its canonical
content (every field but the checksum: format, version, configuration,
program and direction fields, information, completeness, and the file table
with each file's sha256, size, shape and dtype), and ``field_checksums``, a
short hash of every leaf value by its path.  ``check_seal`` recomputes both;
a hand edit is named by the leaf it changed ("manifest.json was altered:
field config.num_docs").  Key order and whitespace are not content.

**File names** in a manifest are plain relative paths (letters, digits,
``_ . -``, parts separated by ``/``, none starting with a dot) that resolve
inside the sketch folder; anything else is refused before it is opened.

**Stamps.**  Hashing every array of a huge sketch on every use would cost as
much as reading it.  A file whose sha256 was checked is recorded in
``SKETCH/.verified.json`` with its sha256 and its [size, mtime, ctime,
inode]; while the manifest still lists that sha256 and the stamp still
matches, the file counts as verified without being read again.  A write to
the file, a copy of the sketch or a replaced file changes the stamp, and the
file is hashed again.  A stamp vouches for the file's values being finite too
(they are checked whenever it is hashed); the file records ``STAMPS_VERSION``,
so stamps of an earlier version, which vouch for less, are not trusted: their
files are verified once more and stamped anew.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from runtime.files import (
    SketchError,
    atomic_write_json,
    canonical_json,
    file_lock,
    stamp_of,
)

__all__ = [
    "STAMPS",
    "STAMPS_VERSION",
    "Stamps",
    "check_file_name",
    "check_seal",
    "field_checksums",
    "seal",
]

CHECKSUM = "checksum"
FIELDS = "field_checksums"
STAMPS = ".verified.json"
STAMPS_LOCK = ".verified.lock"
STAMPS_VERSION = 2
"""Bumped whenever a stamp comes to vouch for more: 2, the sha256 and finite values (the
stamps of 1, a plain {name: record} object, were written before values were checked)."""
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*")


# ---------------------------------------------------------------- the seal
def _path(parts: tuple[str, ...]) -> str:
    out = parts[0]
    for p in parts[1:]:
        out += f".{p}" if _IDENT.fullmatch(p) else f"[{json.dumps(p)}]"
    return out


def _leaves(value: Any, parts: tuple[str, ...], out: dict[str, str]) -> None:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _leaves(v, (*parts, str(k)), out)
    else:
        try:
            text = canonical_json(value)
        except ValueError:  # NaN or infinity, written by hand: still a value to compare
            text = json.dumps(value, sort_keys=True).encode()
        out[_path(parts)] = hashlib.sha256(text).hexdigest()[:16]


def _content(manifest: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in manifest.items() if k not in (CHECKSUM, FIELDS)}


def field_checksums(manifest: dict[str, Any]) -> dict[str, str]:
    """{path of every leaf value, e.g. "config.num_docs": short sha256 of the value}."""
    out: dict[str, str] = {}
    for k, v in _content(manifest).items():
        _leaves(v, (str(k),), out)
    return out


def _checksum(manifest: dict[str, Any]) -> str:
    body = {k: v for k, v in manifest.items() if k != CHECKSUM}
    return hashlib.sha256(canonical_json(body)).hexdigest()


def seal(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest with its field checksums and checksum (re)computed."""
    out = _content(manifest)
    out[FIELDS] = field_checksums(out)
    out[CHECKSUM] = _checksum(out)
    return out


def check_seal(manifest: dict[str, Any], label: str) -> None:
    """SketchError naming the altered fields when the manifest does not match its seal.

    `label` names the manifest, e.g. "sketch 'sk': manifest.json".
    """
    stored, fields = manifest.get(CHECKSUM), manifest.get(FIELDS)
    if not isinstance(stored, str) or not isinstance(fields, dict):
        raise SketchError(
            f"{label} carries no checksum: it was altered, or not written by circuitsketch; "
            "recompile the sketch"
        )
    try:
        if _checksum(manifest) == stored:
            return
    except ValueError:  # NaN or infinity written by hand: not JSON circuitsketch writes
        pass
    current = field_checksums(manifest)
    changed = _changed(fields, current)
    if not changed:
        what = f"its {CHECKSUM} or {FIELDS}"
    elif len(changed) == 1:
        what = f"field {changed[0]}"
    else:
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        what = f"fields {', '.join(changed[:3])}{more}"
    raise SketchError(
        f"{label} was altered: {what} (the sketch cannot be trusted: restore the file or "
        "recompile the sketch)"
    )


def _parent(path: str) -> str:
    cut = max(path.rfind("."), path.rfind("["))
    return path[:cut] if cut > 0 else path


def _changed(stored: dict[str, Any], current: dict[str, str]) -> list[str]:
    """Changed leaf paths; an entry added or removed whole is named once, by its path."""
    status = {}
    for p in sorted(set(stored) | set(current)):
        if p not in current:
            status[p] = "removed"
        elif p not in stored:
            status[p] = "added"
        elif stored[p] != current[p]:
            status[p] = ""
    out, seen = [], set()
    for p, st in status.items():
        if st:
            parent = _parent(p)
            under = [q for q in set(stored) | set(current) if _parent(q) == parent]
            if parent != p and all(status.get(q) == st for q in under):
                if parent not in seen:
                    seen.add(parent)
                    out.append(f"{parent} ({st})")
                continue
        out.append(f"{p} ({st})" if st else p)
    return out


# ---------------------------------------------------------------- file names
def check_file_name(name: Any, root: Path, label: str) -> None:
    """Refuse a manifest's file name that is not a plain relative path inside `root`."""
    ok = isinstance(name, str) and _NAME.fullmatch(name) is not None
    if ok:
        try:
            ok = (root / name).resolve().is_relative_to(root.resolve())
        except (OSError, RuntimeError):  # a symlink loop
            ok = False
    if not ok:
        raise SketchError(f"{label} lists a file outside the sketch folder: {name!r}")


# ---------------------------------------------------------------- stamps
class Stamps:
    """The record of files verified earlier: {name: [sha256, size, mtime, ctime, inode]},
    stored as {"version": STAMPS_VERSION, "stamps": {...}}."""

    def __init__(self, root: Path):
        self.root = root
        self._known: dict[str, list[Any]] | None = None
        self._new: dict[str, list[Any]] = {}

    def _read(self) -> dict[str, list[Any]]:
        try:
            data = json.loads((self.root / STAMPS).read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):  # RecursionError: JSON nested too deeply
            return {}
        if not isinstance(data, dict) or data.get("version") != STAMPS_VERSION:
            return {}  # none, or of an earlier version: every file is verified afresh
        stamps = data.get("stamps")
        return stamps if isinstance(stamps, dict) else {}

    def valid(self, name: str, sha256: str, stamp: list[int] | None = None) -> bool:
        """Whether `name` was verified to hold `sha256` and is unchanged since (`stamp`:
        its current stamp, e.g. of a file already open; default: stat it)."""
        if self._known is None:
            self._known = self._read()
        rec = self._new.get(name) or self._known.get(name)
        if stamp is None:
            stamp = stamp_of(self.root / name)
        return isinstance(rec, list) and len(rec) == 5 and rec[0] == sha256 and rec[1:] == stamp

    def record(self, name: str, sha256: str, stamp: list[int] | None) -> None:
        """Remember that `name` (with the stamp taken before it was read) holds `sha256`."""
        if stamp is not None and stamp == stamp_of(self.root / name):
            self._new[name] = [sha256, *stamp]

    def flush(self) -> None:
        """Merge what was recorded into the file (atomically, under a lock; best effort)."""
        if not self._new:
            return
        try:
            with file_lock(self.root / STAMPS_LOCK) as locked:
                if not locked:
                    return
                known = self._read()
                known.update(self._new)
                atomic_write_json(self.root / STAMPS, {"version": STAMPS_VERSION, "stamps": known})
                self._known, self._new = known, {}
        except OSError:  # a read-only sketch: verify again next time
            pass
