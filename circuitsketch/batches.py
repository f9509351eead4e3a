"""Which documents each training step sees: minibatches over (optionally shuffled) epochs.

An epoch visits every document once: in index order, or, with a shuffle seed S,
in the order of the next ``permutation(N)`` drawn from one
``numpy.random.default_rng(S)`` (a fresh order each epoch).  An epoch is cut
into consecutive batches of ``batch_size`` documents; its last batch keeps the
remainder (a smaller batch).  Step s trains on the s-th batch of the endless
sequence of epochs, so ``steps`` may end inside an epoch or run past one.  With
batch size 1, no shuffling and T steps this is the original schedule: step s
trains on document s mod N.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["epoch_steps", "minibatches", "stack_documents"]


def epoch_steps(num_docs: int, batch_size: int) -> int:
    """Steps per epoch: ceil(N / B) (the last batch of an epoch may be short)."""
    return -(-int(num_docs) // int(batch_size))


def _check(name: str, value: int | None, low: int) -> None:
    if value is not None and (isinstance(value, bool) or int(value) != value or value < low):
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def minibatches(
    num_docs: int,
    batch_size: int = 1,
    steps: int | None = None,
    epochs: int | None = None,
    shuffle_seed: int | None = None,
) -> list[tuple[int, ...]]:
    """The documents of every step: ``steps`` batches, or ``epochs`` whole epochs (give at
    most one; neither: one epoch)."""
    _check("the number of documents", num_docs, 1)
    _check("the batch size", batch_size, 1)
    _check("the number of steps", steps, 1)
    _check("the number of epochs", epochs, 1)
    _check("the shuffle seed", shuffle_seed, 0)
    if steps is not None and epochs is not None:
        raise ValueError("give the number of steps or the number of epochs, not both")
    per_epoch = epoch_steps(num_docs, batch_size)
    total = int(steps) if steps is not None else per_epoch * int(epochs or 1)
    out: list[tuple[int, ...]] = []
    for batch in _endless(num_docs, int(batch_size), shuffle_seed):
        if len(out) == total:
            break
        out.append(batch)
    return out


def _endless(n: int, b: int, seed: int | None) -> Iterator[tuple[int, ...]]:
    rng = None if seed is None else np.random.default_rng(seed)
    while True:
        order = np.arange(n) if rng is None else rng.permutation(n)
        for a in range(0, n, b):
            yield tuple(int(i) for i in order[a : a + b])


def stack_documents(docs: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """The arrays of a batch: each name's arrays stacked along a new leading axis."""
    names = sorted(docs[0])
    return {k: np.stack([np.asarray(d[k]) for d in docs]) for k in names}
