"""Many deletion sets at once: the container, the JSONL file format, seeded sampling.

A deletion set is a list of training-document indices and one weight in
[0, 1] given to all of them (1 = deleted, 0.5 = half weight).  ``DeletionSets``
holds S of them as a sparse (N, S) weight matrix in compressed form: ``indptr``
(S+1,), ``indices`` (nnz,) sorted within each set, one weight per set.

File format (``--sets FILE.jsonl``): one JSON object per line,

    {"delete": [3, 17, 250], "weight": 1.0}

``weight`` is optional (default 1).  Blank lines are skipped; sets are
numbered 0, 1, ... in file order, and errors name the file's line number.
An index out of range, a repeated index, a weight outside [0, 1], an unknown
key or a line that is not JSON is a ValueError of one line.

``key(s)`` is a short content hash of set s (its sorted indices and weight):
result files record it, so a rerun can tell its own sets from other ones.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtime.spec import sha256_bytes

__all__ = ["DeletionSets", "as_sets", "read_sets", "sample_sets", "write_sets"]

KEYS = ("delete", "weight")


@dataclass(frozen=True, eq=False)
class DeletionSets:
    """S deletion sets over N training documents (see the module docstring)."""

    num_docs: int
    indptr: np.ndarray  # (S+1,) int64
    indices: np.ndarray  # (nnz,) int64, sorted within each set
    weights: np.ndarray  # (S,) float64

    def __len__(self) -> int:
        return len(self.weights)

    @property
    def sizes(self) -> np.ndarray:
        """(S,) number of documents in each set."""
        return np.diff(self.indptr)

    def members(self, s: int) -> np.ndarray:
        """The sorted document indices of set s."""
        return self.indices[self.indptr[s] : self.indptr[s + 1]]

    def weight_vector(self, s: int) -> np.ndarray:
        """Set s as the data-weight vector w (N,) of the spec."""
        w = np.zeros(self.num_docs)
        w[self.members(s)] = self.weights[s]
        return w

    def matrix(self) -> np.ndarray:
        """All sets as a dense (S, N) weight matrix (for small S and N)."""
        w = np.zeros((len(self), self.num_docs))
        rows = np.repeat(np.arange(len(self)), self.sizes)
        w[rows, self.indices] = np.repeat(self.weights, self.sizes)
        return w

    def key(self, s: int) -> str:
        """A 16-hex-digit content hash of set s (sorted indices and weight)."""
        text = ",".join(map(str, self.members(s).tolist())) + f";{float(self.weights[s])!r}"
        return sha256_bytes(text.encode())[:16]

    def subset(self, rows: Sequence[int] | np.ndarray) -> DeletionSets:
        """The sets `rows`, in that order."""
        rows = np.asarray(rows, np.int64)
        parts = [self.members(int(s)) for s in rows]
        return _build(self.num_docs, parts, self.weights[rows])

    def lines(self) -> list[str]:
        """The sets in the JSONL format, one line each (no newline)."""
        return [
            json.dumps({"delete": self.members(s).tolist(), "weight": float(self.weights[s])})
            for s in range(len(self))
        ]

    # ---- construction
    @classmethod
    def from_lists(
        cls,
        sets: Iterable[Sequence[int]],
        num_docs: int,
        weight: float | Sequence[float] = 1.0,
        where: str = "deletion set",
    ) -> DeletionSets:
        """From a list of index lists, each checked (ValueError naming `where` and the set)."""
        parts = [np.asarray(list(s) if not isinstance(s, np.ndarray) else s) for s in sets]
        ws = np.broadcast_to(np.asarray(weight, np.float64), (len(parts),))
        out = []
        for i, (p, w) in enumerate(zip(parts, ws, strict=True)):
            out.append(_check_indices(p, num_docs, f"{where} {i}"))
            _check_weight(float(w), f"{where} {i}")
        return _build(num_docs, out, ws)

    @classmethod
    def from_matrix(
        cls, index: np.ndarray, num_docs: int, weight: float | Sequence[float] = 1.0
    ) -> DeletionSets:
        """From an (S, L) integer matrix: row s holds the L documents of set s."""
        index = np.asarray(index)
        if index.ndim != 2:
            raise ValueError(f"an index matrix is 2-D (sets x documents), got shape {index.shape}")
        return cls.from_lists(list(index), num_docs, weight, "row")

    @classmethod
    def singletons(cls, num_docs: int, weight: float = 1.0) -> DeletionSets:
        """Every single-document deletion: set i = {i}."""
        _check_weight(weight, "weight")
        return cls(
            num_docs,
            np.arange(num_docs + 1, dtype=np.int64),
            np.arange(num_docs, dtype=np.int64),
            np.full(num_docs, float(weight)),
        )


def _build(num_docs: int, parts: list[np.ndarray], weights: np.ndarray) -> DeletionSets:
    sizes = np.array([len(p) for p in parts], np.int64)
    indptr = np.zeros(len(parts) + 1, np.int64)
    np.cumsum(sizes, out=indptr[1:])
    indices = (
        np.concatenate([np.sort(np.asarray(p, np.int64)) for p in parts])
        if parts
        else np.zeros(0, np.int64)
    )
    return DeletionSets(int(num_docs), indptr, indices, np.array(weights, np.float64))


def _check_indices(p: np.ndarray, n: int, where: str) -> np.ndarray:
    if p.size and not (np.issubdtype(p.dtype, np.integer) and p.dtype != np.bool_):
        bad = next((v for v in p.ravel().tolist() if not _is_index(v)), p.ravel()[0])
        raise ValueError(f"{where}: {bad!r} is not a document index (an integer)")
    p = p.astype(np.int64).ravel()
    out = p[(p < 0) | (p >= n)]
    if out.size:
        raise ValueError(
            f"{where}: index {int(out[0])} is out of range: there are {n} training documents "
            f"(indices 0..{n - 1})"
        )
    s = np.sort(p)
    dup = s[1:][s[1:] == s[:-1]]
    if dup.size:
        raise ValueError(f"{where}: index {int(dup[0])} appears more than once")
    return p


def _is_index(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _check_weight(w: Any, where: str) -> None:
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
        raise ValueError(f'{where}: "weight" must be a number in [0, 1] (1 = delete), got {w!r}')
    if not 0.0 <= w <= 1.0:
        raise ValueError(f'{where}: "weight" must be in [0, 1] (1 = delete), got {w!r}')


# ---------------------------------------------------------------- files
def parse_sets(text: str, num_docs: int, name: str) -> DeletionSets:
    """The sets of a JSONL text (`name`: how errors name the file)."""
    parts: list[np.ndarray] = []
    weights: list[float] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{name} line {lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
        except RecursionError:  # as read_manifest: too deep for the decoder is not valid here
            raise ValueError(f"{where}: not valid JSON (nested too deeply)") from None
        if not isinstance(obj, dict):
            raise ValueError(f'{where}: expected an object like {{"delete": [3, 17], "weight": 1}}')
        unknown = sorted(set(obj) - set(KEYS))
        if unknown:
            raise ValueError(
                f'{where}: unknown key "{unknown[0]}" (a line holds "delete" and optionally '
                '"weight")'
            )
        if "delete" not in obj:
            raise ValueError(f'{where}: no "delete" list of document indices')
        idx = obj["delete"]
        if not isinstance(idx, list):
            raise ValueError(f'{where}: "delete" must be a list of document indices')
        for v in idx:
            if not _is_index(v):
                raise ValueError(f"{where}: {json.dumps(v)} is not a document index (an integer)")
            if not 0 <= v < num_docs:  # before numpy, which cannot hold every JSON integer
                raise ValueError(
                    f"{where}: index {v} is out of range: there are {num_docs} training "
                    f"documents (indices 0..{num_docs - 1})"
                )
        w = obj.get("weight", 1.0)
        _check_weight(w, where)
        parts.append(_check_indices(np.array(idx, np.int64), num_docs, where))
        weights.append(float(w))
    if not parts:
        raise ValueError(f"{name} holds no deletion sets")
    return _build(num_docs, parts, np.array(weights))


def read_sets(path: str | Path, num_docs: int, what: str = "--sets") -> DeletionSets:
    """The sets of a JSONL file (ValueError naming the file and the line).

    The file is read once, so a named pipe (``--sets <(jq ...)``) is read as a file is.
    """
    from runtime.sources.documents import read_input

    name = f"{what} {str(path)!r}"
    data = read_input(path, what)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{name} is not UTF-8 text: {e.reason}") from None
    return parse_sets(text, num_docs, name)


def write_sets(path: str | Path, sets: DeletionSets) -> None:
    """Write the sets as JSONL, atomically."""
    from runtime.store import atomic_write_bytes

    atomic_write_bytes(path, "".join(ln + "\n" for ln in sets.lines()).encode())


def as_sets(
    sets: DeletionSets | str | Path | np.ndarray | Iterable[Sequence[int]],
    num_docs: int,
    weight: float | Sequence[float] = 1.0,
) -> DeletionSets:
    """DeletionSets from what the Python API accepts: DeletionSets, a JSONL path, an (S, L)
    index matrix, or a list of index lists (`weight` applies to the last two)."""
    if isinstance(sets, DeletionSets):
        if sets.num_docs != num_docs:
            raise ValueError(f"the sets are over {sets.num_docs} documents, not {num_docs}")
        return sets
    if isinstance(sets, (str, Path)):
        return read_sets(sets, num_docs, "sets file")
    if isinstance(sets, np.ndarray) and sets.ndim == 2:
        return DeletionSets.from_matrix(sets, num_docs, weight)
    return DeletionSets.from_lists(list(sets), num_docs, weight)


def sample_sets(num_docs: int, sizes: Sequence[int], per_size: int, seed: int) -> DeletionSets:
    """`per_size` random sets of each size (weight 1), sizes in the order given.

    Set j of size z is ``default_rng([seed, z]).choice(N, z, replace=False)``'s
    j-th draw: the sets of one size do not depend on the other sizes asked for.
    """
    parts, weights = [], []
    for z in sizes:
        if not 1 <= z <= num_docs:
            raise ValueError(
                f"--sizes: a deletion set of {z} documents is impossible with {num_docs} "
                "training documents"
            )
        rng = np.random.default_rng([seed, z])
        for _ in range(per_size):
            parts.append(rng.choice(num_docs, size=z, replace=False))
            weights.append(1.0)
    return _build(num_docs, parts, np.array(weights))
