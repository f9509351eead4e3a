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
repeats: the run that saves the most lines written once (its length times its
places less one, places apart), from the suffix array of the lines and the
common prefixes of neighbouring suffixes.  So L layers become one block of
what their lines share, also where the first or last layer differs in a few
lines at its ends.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

MIN_BLOCK = 24  # lines: a shorter repeat is not worth a function of its own
_BASE = 0x100  # the character of line text number i is chr(_BASE + i)
_PLACE = 0x10000  # the character of outlined place k (line texts stay below it)

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
        # an outlined place is a character of its own: no repeat can contain it
        text = "".join(
            chr(_PLACE + k) if isinstance(it, tuple) else char[it] for k, it in enumerate(items)
        )
        best = _best_repeat(text, min_block)
        if best is None:
            break
        length, places = best
        new: list[int | tuple[int, int, int]] = []
        i = 0
        for j in places:
            new.extend(items[i:j])
            first = items[j]
            assert isinstance(first, int)
            new.append((first, first + length, blocks))
            i = j + length
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


def _best_repeat(text: str, shortest: int) -> tuple[int, list[int]] | None:
    """(length, places) of the run of at least `shortest` characters whose places, kept
    apart, save the most characters: length x (places - 1).  A repeated run is a common
    prefix of suffixes that are neighbours in sorted order, so the candidates are the
    intervals of the suffix array whose common prefix is at least `shortest` long, each
    at that length and, where its places overlap there, at the smallest gap between them."""
    n = len(text)
    order = sorted(range(n), key=lambda i: text[i:])
    lcp = [0] * (n + 1)  # lcp[r]: common prefix of the suffixes ranked r - 1 and r
    for r in range(1, n):
        lcp[r] = _common_prefix(text, order[r - 1], order[r])
    best, saved = None, 0
    stack: list[tuple[int, int]] = []  # (common prefix, first rank) of open intervals
    for r in range(1, n + 1):
        first = r - 1
        while stack and stack[-1][0] > lcp[r]:
            length, first = stack.pop()
            if length < shortest:
                continue
            places = sorted(order[first:r])
            gap = min(b - a for a, b in pairwise(places))
            for m in {length, max(shortest, min(length, gap))}:
                kept = _apart(places, m)
                if (len(kept) - 1) * m > saved:
                    best, saved = (m, kept), (len(kept) - 1) * m
        if lcp[r] and (not stack or stack[-1][0] < lcp[r]):
            stack.append((lcp[r], first))
    return best


def _common_prefix(text: str, a: int, b: int) -> int:
    """Length of the common prefix of the suffixes at a and b: a binary search on slice
    comparisons (done in C; a repeat runs to hundreds of characters)."""
    lo, hi = 0, len(text) - max(a, b)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if text[a : a + mid] == text[b : b + mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _apart(places: list[int], length: int) -> list[int]:
    """The places (sorted) kept from the left that do not overlap at this length."""
    kept: list[int] = []
    for p in places:
        if not kept or p >= kept[-1] + length:
            kept.append(p)
    return kept
