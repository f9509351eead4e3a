"""A ReLU MLP with gradient clipping and a tanh output layer, as a user program.

The piecewise parts (``cs.relu``, the comparison inside gradient clipping)
select branches by the real order-0 values, so the sketch is exact wherever
training stays off the kinks; ``tests/test_piecewise_program.py`` checks its
series against polynomial fits of exact retraining.  Sketch it with::

    circuitsketch compile --program examples/relu_mlp.py:build --degree 2 \
        --directions 16 --out relu_sketch
"""

from __future__ import annotations

import numpy as np

import circuitsketch as cs

INPUTS, HIDDEN = 3, 8


def dataset(n: int = 24, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, INPUTS))
    return x, 0.8 * np.tanh(x @ np.array([0.6, -1.0, 0.4])) + 0.05 * rng.normal(size=n)


def predict(params: dict, x):
    h = cs.relu(params["W1"] @ x + params["b1"])
    return cs.tanh((params["W2"] @ h).sum() + params["b2"].sum())


def loss(params: dict, x, y):
    return (predict(params, x) - y) ** 2


def build(n: int = 24, epochs: int = 2, seed: int = 0, clip_norm: float = 0.5) -> cs.Program:
    x, y = dataset(n, seed)
    rng = np.random.default_rng(seed + 1)
    params = {
        "W1": rng.normal(0, 0.7, (HIDDEN, INPUTS)),
        "b1": rng.normal(0, 0.3, HIDDEN),
        "W2": rng.normal(0, 0.5, (1, HIDDEN)),
        "b2": np.zeros(1),
    }
    docs = [{"x": x[i], "y": np.array(y[i])} for i in range(n)]
    return cs.training_program(
        name="relu_mlp",
        params=params,
        loss=loss,
        docs=docs,
        optimizer=cs.Adam(lr=0.03, beta1=0.9, beta2=0.99, eps=1e-8, decay=False,
                          clip_norm=clip_norm),
        steps=epochs * n,
    )
