"""Outlining: a run of lines that repeats becomes one function, called at each place.

A lowered line reads every offset and size from its own instruction row
(``compiler/lower.py``), so its text does not depend on where it stands: the
lines of a transformer's layer, forward or backward, are the same text in
every layer.  Numba's compile time grows with the code it is given, so each
layer's lines written out again made a deeper model compile for longer;
outlined, a layer's lines are compiled once, as one function, and the rest of
the step calls it once per layer.  The calls run the same kernels in the same
order on the same rows, so results are the same bits.

Found greedily, on what is left each time, until no run of ``MIN_BLOCK`` lines
repeats: first the run of lines that repeats back to back and saves the most
lines (layers follow each other, forward and then backward, so a run of L
layers is L copies of one layer's lines, give or take where the run starts);
when there is none, the longest run of lines that occurs twice without
overlap.  Then every place where it occurs is outlined.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MIN_BLOCK = 24  # lines: a shorter repeat is not worth a function of its own
_SEP = "\x00"  # an outlined place in the text; no run is found across it
_BASE = 0x100  # the character of line text number i is chr(_BASE + i)

__all__ = ["MIN_BLOCK", "Segment", "outline"]

Segment = tuple[int, int, "int | None"]  # (first line, end, block number or None)


def outline(keys: Sequence[str], min_block: int = MIN_BLOCK) -> list[Segment]:
    """Lines 0..n-1 (`keys`: their text) cut into segments (start, stop, block), in order:
    block is None for lines of their own, else the number of a repeated run; every segment
    of block b has the same text, and b's function is made of its first one's lines."""
    numbers: dict[str, int] = {}
    char = [chr(_BASE + numbers.setdefault(k, len(numbers))) for k in keys]
    items: list[int | tuple[int, int, int]] = list(range(len(keys)))  # a line, or a place
    blocks = 0
    while True:
        text = "".join(_SEP if isinstance(it, tuple) else char[it] for it in items)
        unit = _best_tandem(text, min_block) or _longest_repeat(text, min_block)
        if unit is None:
            break
        new: list[int | tuple[int, int, int]] = []
        i = 0
        while (j := text.find(unit, i)) >= 0:
            new.extend(items[i:j])
            start = items[j]
            new.append((start, start + len(unit), blocks))
            i = j + len(unit)
        new.extend(items[i:])
        items, blocks = new, blocks + 1
    segments: list[Segment] = []
    for it in items:
        if isinstance(it, tuple):
            segments.append(it)
        elif segments and segments[-1][2] is None and segments[-1][1] == it:
            segments[-1] = (segments[-1][0], it + 1, None)
        else:
            segments.append((it, it + 1, None))
    return segments


def _longest_repeat(text: str, shortest: int) -> str | None:
    """The longest run of at least `shortest` characters, no separator in it, that occurs
    twice in `text` without overlapping (None if there is none): a binary search on the
    length, since a repeat of length m contains repeats of every shorter length."""
    lo, hi, best = shortest, len(text) // 2, None
    while lo <= hi:
        mid = (lo + hi) // 2
        found = _repeat_of_length(text, mid)
        if found is None:
            hi = mid - 1
        else:
            best, lo = found, mid + 1
    return best


def _repeat_of_length(text: str, m: int) -> str | None:
    first: dict[str, int] = {}
    for i in range(len(text) - m + 1):
        s = text[i : i + m]
        if _SEP in s:
            continue
        j = first.setdefault(s, i)
        if i - j >= m:
            return s
    return None


def _best_tandem(text: str, shortest: int) -> str | None:
    """The unit u of at least `shortest` characters, no separator in it, that occurs back
    to back (u u ... u) most often times its length, less one copy (None: no such u).  A
    substring of period p spans a run of positions i with text[i] == text[i + p]."""
    codes = np.array([ord(c) for c in text], np.int64)
    codes[codes == ord(_SEP)] = -1 - np.flatnonzero(codes == ord(_SEP))  # never equal
    best, saved = None, 0
    for p in range(shortest, len(text) // 2 + 1):
        same = np.concatenate(([False], codes[:-p] == codes[p:], [False]))
        edges = np.flatnonzero(same[1:] != same[:-1]).reshape(-1, 2)  # [start, end) of runs
        if not len(edges):
            continue
        k = int(np.argmax(edges[:, 1] - edges[:, 0]))
        start, run = int(edges[k, 0]), int(edges[k, 1] - edges[k, 0])
        copies = (run + p) // p  # text[start : start + run + p] has period p
        if (copies - 1) * p > saved:
            best, saved = text[start : start + p], (copies - 1) * p
    return best
