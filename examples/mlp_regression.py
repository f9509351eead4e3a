"""A two-layer tanh MLP regression on a seeded synthetic 1-D dataset.

Non-convex and a little harder for the series than softmax regression; the
same single-point deletion comparison against exact retraining.  Uses only
the public API; ``build()`` is loadable with ``--program``.
"""

from __future__ import annotations

import numpy as np

import circuitsketch as cs

HIDDEN = 8


def dataset(n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2.0, 2.0, size=(n, 1))
    return x, np.sin(1.5 * x[:, 0]) + 0.1 * rng.normal(size=n)


def tanh(v):
    e = cs.exp(-2.0 * v)
    return (1.0 - e) / (1.0 + e)


def predict(params: dict, x):
    h = tanh(params["W1"] @ x + params["b1"])
    return (params["W2"] @ h).sum() + params["b2"].sum()


def loss(params: dict, x, y):
    return (predict(params, x) - y) ** 2


def build(n: int = 40, epochs: int = 5, seed: int = 0) -> cs.Program:
    x, y = dataset(n, seed)
    rng = np.random.default_rng(seed + 1)
    params = {
        "W1": rng.normal(0, 1.0, (HIDDEN, 1)),
        "b1": rng.normal(0, 0.5, HIDDEN),
        "W2": rng.normal(0, 0.3, (1, HIDDEN)),
        "b2": np.zeros(1),
    }
    docs = [{"x": x[i], "y": np.array(y[i])} for i in range(n)]
    return cs.training_program(
        name="mlp_regression",
        params=params,
        loss=loss,
        docs=docs,
        optimizer=cs.Adam(lr=0.02, beta1=0.9, beta2=0.99, eps=1e-8, decay=False),
        steps=epochs * n,
    )


def test_point() -> dict:
    return {"x": np.array([0.7]), "y": np.array(np.sin(1.05))}


if __name__ == "__main__":
    from examples.compare import compare_single_deletions

    compare_single_deletions(build(), test_point(), "tanh MLP regression")
