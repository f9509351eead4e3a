"""Minibatch training of microgpt (2 layers, 8 wide; batches of 3 over 2 shuffled epochs,
AdamW with warmup, a cosine rate and clipping) against independent references:

* real training: a numpy loop that averages the weighted gradients of each batch's
  documents, each from the one-document circuit (itself checked against the numpy
  model in test_microgpt_config.py), and applies the optimizer as written in
  tests/gpt_reference.py;
* the sketch's series: a polynomial fit of exact retraining along a deletion set;
* the metagradient: central differences of retraining.
"""

from __future__ import annotations

import numpy as np
import pytest

from circuitsketch import interpret
from circuitsketch import program as P
from circuitsketch.grad import grad
from circuitsketch.models import microgpt as m
from circuitsketch.optim import SGD, Adam
from circuitsketch.program import LOSS
from compiler.compiled import CompiledProgram
from runtime.metagrad import Metagradient
from tests import gpt_reference as ref
from tests.conftest import assert_rel

CFG = {"n_layer": 2, "n_embd": 8, "n_head": 2, "block_size": 12}
DOCS = ("ava", "emma", "jacqueline", "leo", "sophia", "mia", "christopher")
OPT = Adam(lr=0.02, weight_decay=0.1, lr_schedule="cosine", warmup=2, clip_norm=0.5)
W = np.array([0.0, 0.3, 0.0, 1.0, 0.0, 0.0, 0.6])  # document 3 deleted in both its steps
TEST = "olivia"
D = [1, 4, 6]  # deletion set of the series check
BUCKETS = (12,)  # one bucket: fewer step circuits to compile (time)


@pytest.fixture(scope="module")
def program():
    return m.build(DOCS, seed=2, batch_size=3, epochs=2, shuffle_seed=4, optimizer=OPT,
                   buckets=BUCKETS, **CFG)


@pytest.fixture(scope="module")
def real(program):
    return CompiledProgram(program, 0)


def reference_training(program, weights, optimizer) -> dict[str, np.ndarray]:
    """Each step: g = (1/B) sum_d (1 - w_d) grad loss_d, clipped, then the optimizer."""
    params = {p: program.init_state[p].copy() for p in program.params}
    bufs = {p: (np.zeros_like(v), np.zeros_like(v)) for p, v in params.items()}
    grads_of = {k: grad(c, LOSS, list(params)) for k, c in program.output_circuits.items()}
    T = program.num_steps
    for s, step in enumerate(program.steps):
        g = {p: np.zeros_like(v) for p, v in params.items()}
        for d in step.docs:
            key, inputs = program.encode_test(DOCS[d])
            gd = interpret.evaluate(grads_of[key], {**params, **inputs})
            for p in params:
                g[p] += (1.0 - weights[d]) * gd[f"grad_{p}"] / len(step.docs)
        g = ref.clip(g, optimizer.clip_norm)
        lr = ref.rate(optimizer.lr, optimizer.schedule_kind, optimizer.warmup, s, T)
        for p in params:
            if isinstance(optimizer, Adam):
                params[p], *bufs[p] = ref.adamw_step(params[p], g[p], *bufs[p], s, lr,
                                                     optimizer.weight_decay)
            else:
                params[p], vel = ref.sgd_step(params[p], g[p], bufs[p][0], lr,
                                              optimizer.momentum, optimizer.nesterov,
                                              optimizer.weight_decay)
                bufs[p] = (vel, None)
    return params


def test_schedule_and_circuits(program):
    rng = np.random.default_rng(4)
    first, second = rng.permutation(7), rng.permutation(7)
    want = [tuple(first[:3]), tuple(first[3:6]), tuple(first[6:]),
            tuple(second[:3]), tuple(second[3:6]), tuple(second[6:])]
    assert [st.doc for st in program.steps] == want
    # key: documents, attention's bucket, packed rows; a batch of one is a batch too
    assert set(program.step_circuits) == {st.key for st in program.steps}
    assert {key[:2] for key in program.step_circuits} == {(3, 12), (1, 12)}
    # with the default buckets each batch's attention runs in the bucket of its longest document
    default = m.build(DOCS, batch_size=3, epochs=2, shuffle_seed=4, **CFG)
    tok = m.Tokenizer.from_corpus()
    lengths = [min(12, len(DOCS[i]) + 1) for i in range(7)]
    for st in default.steps:
        size, bucket, total = st.key
        n = [lengths[d] for d in st.docs]
        assert size == len(st.docs)
        assert bucket == min(b for b in (8, 10, 12) if b >= max(n))
        # the documents' positions one after another, then 1 to PACK padding rows
        assert total % m.PACK == 0 and sum(n) < total <= sum(n) + m.PACK
        data, r = st.data, 0
        padded = m.padded_batch(data, bucket)
        for j, d in enumerate(st.docs):
            toks, k = tok.encode(DOCS[d]), n[j]
            assert data["tokens"][r : r + k].tolist() == toks[:k]
            assert data["targets"][r : r + k].tolist() == toks[1 : k + 1]
            assert data["positions"][r : r + k].tolist() == list(range(k))
            assert data["slots"][r : r + k].tolist() == list(range(j * bucket, j * bucket + k))
            assert data["rows"][j * bucket : (j + 1) * bucket].tolist() == (
                list(range(r, r + k)) + [total - 1] * (bucket - k))
            assert data["n_positions"][j] == k
            # the padded view the JAX peer reads: each row its document, then BOS / -1
            assert padded["tokens"][j].tolist() == toks[:k] + [tok.bos] * (bucket - k)
            assert padded["targets"][j].tolist() == toks[1 : k + 1] + [-1] * (bucket - k)
            r += k
        assert data["tokens"][r:].tolist() == [tok.bos] * (total - r)
        assert data["targets"][r:].tolist() == [-1] * (total - r)


def test_rare_row_counts_are_merged_into_a_larger_one():
    """One more padding row, a multiple of PACK = 4, then up to a row count that at least
    3% of the steps use or the largest of its (documents, bucket): fewer circuits."""
    needs = [(8, 10, 56)] * 40 + [(8, 10, 50)] + [(8, 10, 59)] * 2 + [(8, 12, 63)]
    assert m.PACK == 4 and m.RARE == 0.03
    # 57 -> 60 (40 steps); 51 -> 52 (1 step of 44: merged into 60); 60 -> 60;
    # 64 -> 64 (1 step, but the only one of bucket 12: kept)
    assert m.packed_rows(needs) == [60] * 43 + [64]
    assert m.packed_rows([(3, 8, 7), (3, 8, 11)]) == [8, 12]  # each at least 3% of 2 steps
    # the data of a merged step: its positions, then padding up to the rows given
    data = m.encode_packed([[5, 1, 2, 5], [5, 3, 5]], 8, 5, total=12)
    assert data["tokens"].tolist() == [5, 1, 2, 5, 3] + [5] * 7
    assert data["targets"].tolist() == [1, 2, 5, 3, 5] + [-1] * 7
    assert data["rows"].tolist() == [0, 1, 2] + [11] * 5 + [3, 4] + [11] * 6


def test_batch_loss_is_the_mean_of_weighted_document_losses(program):
    """Step 0's loss from the batched circuit against the one-document losses."""
    circuit, inputs = program.step_inputs(0)
    docs = program.steps[0].docs
    out = interpret.evaluate(circuit, {**program.init_state, **inputs, "w": W[list(docs)]})
    params = {p: program.init_state[p] for p in program.params}
    losses = [ref.doc_loss(params, m.Tokenizer.from_corpus().encode(DOCS[d]), 2, 2, 12)
              for d in docs]
    want = sum((1 - W[d]) * loss for d, loss in zip(docs, losses, strict=True)) / len(docs)
    assert abs(out[LOSS] - want) <= 1e-12 * want


def test_compiled_training_matches_the_reference(program, real):
    state, _ = real.train(W)
    got = real.unpack_state(state)
    want = reference_training(program, W, OPT)
    for p in program.params:
        assert_rel(got[p], want[p], 1e-11, p)
    interp, _ = P.train(program, W)  # and the interpreter, on the same circuits
    for p in program.params:
        assert_rel(interp[p], want[p], 1e-11, f"interpreter {p}")


def test_deleting_a_document_changes_both_its_steps(program, real):
    """w_3 = 1 must act in both epochs: retraining differs from deleting it in only one."""
    full, _ = real.train(W)
    only_first = W.copy()
    only_first[3] = 0.0
    state = None
    for s in range(program.num_steps):  # step by step, with document 3 kept after epoch 1
        state, _ = real.train(W if s < 3 else only_first, state=state, start=s, stop=s + 1)
    assert not np.allclose(full, state, rtol=1e-6, atol=0)


def test_nesterov_sgd_batches_match_the_reference():
    opt = SGD(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.05, lr_schedule="linear",
              warmup=1)
    prog = m.build(DOCS, seed=2, batch_size=4, epochs=2, shuffle_seed=1, optimizer=opt, **CFG)
    got, _ = P.train(prog, W)  # the interpreter (compiled training is checked above)
    want = reference_training(prog, W, opt)
    for p in prog.params:
        assert_rel(got[p], want[p], 1e-11, p)


def test_series_matches_a_polynomial_fit_of_retraining(program, real):
    """c_1..c_3 of the test loss along v = 1_D against F(eps v) retrained at 13 points."""
    v = np.zeros(len(DOCS))
    v[D] = 1.0
    h, n = 0.02, 13
    eps = h * np.cos(np.pi * (np.arange(n) + 0.5) / n)
    vals = [real.output(real.train(e * v)[0], TEST) for e in eps]
    fit = np.polynomial.Chebyshev.fit(eps, vals, 8, domain=[-h, h])
    want = fit.convert(kind=np.polynomial.Polynomial).coef[:4]
    cp = CompiledProgram(program, 3)
    s0, hi, _ = cp.train_series(v[None].astype(np.complex128))
    c = cp.output(s0, TEST, hi)[0]
    assert np.max(np.abs(c.imag)) < 1e-15
    assert abs(c[0].real - want[0]) < 1e-12
    for r, tol in ((1, 1e-8), (2, 1e-6), (3, 1e-4)):
        assert abs(c[r].real - want[r]) < tol * abs(want[r]), (r, c[r], want[r])


def test_metagradient_matches_differences_of_retraining(program, real):
    g = Metagradient(program)(TEST)
    h = 1e-5
    eye = np.eye(len(DOCS))

    def loss(w):
        return real.output(real.train(w)[0], TEST)

    fd = np.array([(loss(h * eye[i]) - loss(-h * eye[i])) / (2 * h) for i in range(len(DOCS))])
    # a document alone in its batches whose gradient is clipped has no effect: its weight
    # scales the gradient, which clipping rescales to the same norm (g = fd = 0)
    moved = np.abs(fd) > 1e-9
    assert np.max(np.abs(g - fd)[moved] / np.abs(fd)[moved]) < 1e-6
    assert np.max(np.abs(g[~moved]), initial=0.0) < 1e-15


def test_a_batch_of_one_equals_the_one_document_step():
    """The short last batch (one document, a vector weight) against the spec's scalar step."""
    docs = DOCS[:4]
    batched = m.build(docs, seed=2, batch_size=3, **CFG)  # batches (0, 1, 2), (3,)
    single = m.build(docs, seed=2, **CFG)
    state = batched.init_state
    c1, in1 = batched.step_inputs(1)
    c2, in2 = single.step_inputs(3)
    in1 = {**in1, **single.optimizer.schedule(3, 4)}  # the same step of the same schedule
    a = interpret.evaluate(c1, {**state, **in1, "w": np.array([0.25])})
    b = interpret.evaluate(c2, {**state, **in2, "w": 0.25})
    for k in b:
        assert_rel(a[k], b[k], 1e-15, k)


def test_outlined_layers_train_to_the_same_bits(program, real, monkeypatch):
    """Two layers: each layer's lines are one block function called per layer
    (compiler/outline.py); the same program printed without blocks trains to the same
    bits (the same kernels on the same rows in the same order)."""
    import compiler.emit as emit

    assert "def block_" in real.source
    monkeypatch.setattr(emit, "outline", lambda keys: [(0, len(keys), None)] if keys else [])
    flat = CompiledProgram(program, 0)
    assert "def block_" not in flat.source
    (a, la), (b, lb) = real.train(W), flat.train(W)
    assert np.array_equal(a, b) and np.array_equal(la, lb)
