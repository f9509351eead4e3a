"""Softmax regression on a seeded synthetic 3-class, 4-feature dataset (iris-sized).

A convex problem where exact leave-one-out retraining is instant, so the
sketch's prediction for every single-point deletion can be checked against
the truth.  Written only against the public API (``import circuitsketch as cs``):
``build()`` is what ``circuitsketch compile --program examples/softmax_regression.py:build``
loads.  Run ``python examples/softmax_regression.py`` for the comparison table.
"""

from __future__ import annotations

import numpy as np

import circuitsketch as cs

N_CLASSES, N_FEATURES = 3, 4


def dataset(n: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three Gaussian blobs with overlapping tails (labels 0..2)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 1.5, size=(N_CLASSES, N_FEATURES))
    labels = np.arange(n) % N_CLASSES
    return centres[labels] + rng.normal(size=(n, N_FEATURES)), labels.astype(np.int64)


def loss(params: dict, x, label):
    """Cross-entropy of one example; the max shift keeps the softmax stable."""
    logits = params["W"] @ x + params["b"]
    z = logits - cs.shift_max(logits, axis=0)
    logp = z - cs.log(cs.exp(z).sum())
    return -(cs.one_hot(label.reshape(1), N_CLASSES).reshape(N_CLASSES) * logp).sum()


def build(n: int = 60, epochs: int = 3, seed: int = 0) -> cs.Program:
    x, y = dataset(n, seed)
    docs = [{"x": x[i], "label": np.array(y[i])} for i in range(n)]
    params = {"W": np.zeros((N_CLASSES, N_FEATURES)), "b": np.zeros(N_CLASSES)}
    return cs.training_program(
        name="softmax_regression",
        params=params,
        loss=loss,
        docs=docs,
        optimizer=cs.SGD(lr=0.05, momentum=0.5),
        steps=epochs * n,
    )


def test_point(seed: int = 1) -> dict:
    """A held-out example to ask about."""
    x, y = dataset(60, 0)
    rng = np.random.default_rng(seed)
    return {"x": x[0] + 0.5 * rng.normal(size=N_FEATURES), "label": np.array(y[0])}


if __name__ == "__main__":
    from examples.compare import compare_single_deletions

    compare_single_deletions(build(), test_point(), "softmax regression")
