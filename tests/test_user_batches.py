"""cs.training_program with minibatches and the new optimizers, against numpy written out.

Least squares has a closed-form gradient, so the reference shares nothing with the
tracer: g = (1/B) sum_d (1 - w_d) 2 (theta . x_d - t_d) x_d, then the update of
tests/gpt_reference.py.
"""

from __future__ import annotations

import numpy as np
import pytest

import circuitsketch as cs
from circuitsketch import program as P
from circuitsketch.batches import minibatches
from circuitsketch.optim import learning_rate
from compiler.compiled import CompiledProgram
from tests import gpt_reference as ref
from tests.conftest import assert_rel

N = 10
X = np.random.default_rng(0).normal(size=(N, 3))
Y = X @ [1.0, -2.0, 0.5] + 0.1 * np.random.default_rng(1).normal(size=N)
DOCS = [{"x": X[i], "t": np.array(Y[i])} for i in range(N)]
W = np.array([0.0, 1.0, 0.0, 0.5, 0.0, 0.0, 0.2, 0.0, 0.0, 1.0])


def loss(p, x, t):
    return ((p["theta"] * x).sum() - t) ** 2


def batch_loss(p, x, t):  # x (B, 3), t (B,): one loss per row
    return ((x @ p["theta"]) - t) ** 2


def build(optimizer, **kw):
    return cs.training_program(name="linreg", params={"theta": np.zeros(3)}, loss=loss,
                               docs=DOCS, optimizer=optimizer, **kw)


def reference(optimizer, batches, weights):
    theta, m, v = np.zeros(3), np.zeros(3), np.zeros(3)
    T = len(batches)
    for s, b in enumerate(batches):
        g = sum((1 - weights[d]) * 2 * (theta @ X[d] - Y[d]) * X[d] for d in b) / len(b)
        g = ref.clip({"theta": g}, optimizer.clip_norm)["theta"]
        lr = ref.rate(optimizer.lr, optimizer.schedule_kind, optimizer.warmup, s, T)
        if isinstance(optimizer, cs.Adam):
            theta, m, v = ref.adamw_step(theta, g, m, v, s, lr, optimizer.weight_decay,
                                         optimizer.beta1, optimizer.beta2, optimizer.eps)
        else:
            theta, m = ref.sgd_step(theta, g, m, lr, optimizer.momentum, optimizer.nesterov,
                                    optimizer.weight_decay)
    return theta


OPTIMIZERS = [
    cs.SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01, lr_schedule="cosine",
           warmup=2),
    cs.SGD(lr=0.05, momentum=0.5, lr_schedule="linear", clip_norm=1.0),
    cs.Adam(lr=0.05, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.1, lr_schedule="cosine",
            warmup=3),
    cs.Adam(lr=0.05, lr_schedule="constant", clip_norm=0.5),
]


@pytest.mark.parametrize("optimizer", OPTIMIZERS, ids=["nesterov", "sgd-clip", "adamw", "adam"])
@pytest.mark.parametrize("batched", ["one-by-one", "batch_loss"])
def test_minibatch_training_matches_numpy(optimizer, batched):
    kw = {"batch_size": 4, "epochs": 3, "shuffle_seed": 5}
    prog = build(optimizer, **kw, batch_loss=batch_loss if batched == "batch_loss" else None)
    want = reference(optimizer, minibatches(N, 4, epochs=3, shuffle_seed=5), W)
    interp, _ = P.train(prog, W)
    assert_rel(interp["theta"], want, 1e-12, "interpreter theta")
    if (batched, optimizer) in (("batch_loss", OPTIMIZERS[2]), ("one-by-one", OPTIMIZERS[0])):
        state, _ = CompiledProgram(prog, 0).train(W)  # two of them compiled (time)
        assert_rel(state[:3], want, 1e-12, "theta")


def test_one_document_steps_with_the_new_optimizers():
    opt = OPTIMIZERS[0]
    got, _ = P.train(build(opt, steps=25), W)
    want = reference(opt, [(s % N,) for s in range(25)], W)
    assert_rel(got["theta"], want, 1e-12, "theta")


def test_learning_rate_schedules_by_their_formulas():
    T = 10
    assert [learning_rate(0.1, "linear", 0, s, T) for s in range(T)] == [
        0.1 * (1.0 - s / T) for s in range(T)]  # microgpt's, bit for bit
    for kind in ("constant", "linear", "cosine"):
        for w in (0, 3):
            got = [learning_rate(0.1, kind, w, s, T) for s in range(T)]
            want = [ref.rate(0.1, kind, w, s, T) for s in range(T)]
            np.testing.assert_allclose(got, want, rtol=1e-15, atol=0)
    assert learning_rate(0.1, "cosine", 0, 0, T) == 0.1
    assert learning_rate(0.1, "linear", 4, 3, T) == 0.1  # the warmup's last step reaches lr


def test_series_of_a_batched_user_program_matches_retraining():
    """c_1 along v against central differences of retraining at weights +-h v."""
    prog = build(OPTIMIZERS[2], batch_size=3, epochs=2, shuffle_seed=2, batch_loss=batch_loss)
    test = {"x": np.array([0.5, 1.0, -1.0]), "t": np.array(0.3)}
    real, series = CompiledProgram(prog, 0), CompiledProgram(prog, 2)
    v = np.random.default_rng(3).normal(size=N)
    s0, hi, _ = series.train_series(v[None].astype(np.complex128))
    c = series.output(s0, test, hi)[0].real
    h = 1e-4
    f = [real.output(real.train(e * v)[0], test) for e in (-h, 0.0, h)]
    assert abs(c[0] - f[1]) < 1e-13
    assert abs(c[1] - (f[2] - f[0]) / (2 * h)) < 1e-6 * abs(c[1])
    assert abs(c[2] - (f[2] - 2 * f[1] + f[0]) / (2 * h * h)) < 1e-4 * abs(c[2])


def test_integer_labels_are_batched_one_by_one():
    from examples.softmax_regression import dataset
    from examples.softmax_regression import loss as softmax_loss

    x, y = dataset(9, 0)
    docs = [{"x": x[i], "label": np.array(y[i])} for i in range(9)]
    prog = cs.training_program(name="sr", params={"W": np.zeros((3, 4)), "b": np.zeros(3)},
                               loss=softmax_loss, docs=docs, optimizer=cs.SGD(lr=0.1),
                               batch_size=4, epochs=2)
    w = np.linspace(0.0, 0.8, 9)
    state, _ = CompiledProgram(prog, 0).train(w)
    interp, _ = P.train(prog, w)
    assert_rel(state[:12], interp["W"].ravel(), 1e-14, "W")
    assert P.document_data(prog, 5)["label"] == y[5]

    def batch_softmax_loss(params, x, label):  # x (B, 4), label (B,): one-hot of them all
        logits = x @ params["W"].T + params["b"]
        z = logits - cs.shift_max(logits, axis=1)
        logp = z - cs.log(cs.exp(z).sum(axis=1, keepdims=True))
        return -(cs.one_hot(label, 3) * logp).sum(axis=1)

    batched = cs.training_program(name="sr", params={"W": np.zeros((3, 4)), "b": np.zeros(3)},
                                  loss=softmax_loss, docs=docs, optimizer=cs.SGD(lr=0.1),
                                  batch_size=4, epochs=2, batch_loss=batch_softmax_loss)
    other, _ = P.train(batched, w)
    assert_rel(other["W"], interp["W"], 1e-14, "batch_loss W")


def test_slicing_integer_arrays_in_compiled_code_is_named():
    def first_label_loss(params, x, t):
        idx = cs.one_hot(t.reshape(4)[0:2], 3)  # slicing ints: not in compiled code
        return (idx.sum() + (x @ params["theta"])) ** 2

    docs = [{"x": X[i], "t": np.array(i % 3)} for i in range(8)]
    prog = cs.training_program(
        name="ints", params={"theta": np.zeros(3)}, docs=docs, optimizer=cs.SGD(),
        loss=lambda p, x, t: (cs.one_hot(t.reshape(1), 3).sum() + (x * p["theta"]).sum()) ** 2,
        batch_size=4, batch_loss=first_label_loss)
    with pytest.raises(cs.IRError, match="integer arrays where they are given"):
        CompiledProgram(prog, 0)


def test_batch_errors_are_named():
    docs = [*DOCS[:3], {**DOCS[3], "extra": np.zeros(2)}]
    with pytest.raises(ValueError, match="documents 0 and 3 share a minibatch"):
        cs.training_program(name="bad", params={"theta": np.zeros(3)},
                            loss=lambda p, x, t, **extra: loss(p, x, t), docs=docs,
                            optimizer=cs.SGD(), batch_size=4)
    with pytest.raises(ValueError, match=r"expected one loss per document, shape \(4,\)"):
        build(cs.SGD(), batch_size=4, batch_loss=lambda p, x, t: (x @ p["theta"]).sum())
    with pytest.raises(ValueError, match="steps or the number of epochs, not both"):
        build(cs.SGD(), steps=3, epochs=2)
    with pytest.raises(ValueError, match="unknown learning-rate schedule 'step'"):
        cs.Adam(lr_schedule="step")
    with pytest.raises(ValueError, match="Nesterov momentum needs a momentum > 0"):
        cs.SGD(momentum=0.0, nesterov=True)
