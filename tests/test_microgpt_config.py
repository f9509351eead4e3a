"""microgpt of a configurable size: the default is today's model exactly; other sizes are
checked against an independent numpy forward pass (tests/gpt_reference.py)."""

from __future__ import annotations

import numpy as np
import pytest

from circuitsketch import interpret
from circuitsketch.grad import grad
from circuitsketch.models import microgpt as m
from circuitsketch.models.microgpt_config import Config
from circuitsketch.program import LOSS, output
from runtime.spec import fingerprints
from tests import gpt_reference as ref

CFG = {"n_layer": 2, "n_embd": 8, "n_head": 2, "block_size": 6}
# "jacqueline" and "christopher" are longer than the context of 6: truncated
DOCS = ("ava", "emma", "jacqueline", "leo", "sophia", "mia", "christopher")
NAMES30 = tuple(m.read_docs(m.corpus_path())[:30])
# the traced circuits of the shipped model before sizes were configurable (commit c43bc25):
# the spec's model must trace to exactly these, or old sketches stop being readable
TODAY = {
    "step:16": "a8a8a81deb88c1f4b652d083",
    "step:8": "1899ae35d28eccab66b58bf4",
    "output:16": "557b424d843191b975b0ce26",
    "output:8": "f7af629cf21ca674f721f77b",
}


def test_default_is_todays_model():
    assert fingerprints(m.build(NAMES30)) == TODAY
    explicit = m.build(NAMES30, n_layer=1, n_embd=16, n_head=4, block_size=16, batch_size=1)
    assert fingerprints(explicit) == TODAY
    shapes = m.param_shapes()
    assert sum(int(np.prod(s)) for s in shapes.values()) == 4192
    assert list(shapes) == ["wte", "wpe", "lm_head", "layer0.attn_wq", "layer0.attn_wk",
                            "layer0.attn_wv", "layer0.attn_wo", "layer0.mlp_fc1",
                            "layer0.mlp_fc2"]


def test_sizes_and_parameter_order():
    cfg = Config(**CFG)
    shapes = m.param_shapes(27, cfg)
    # V*E twice (wte, lm_head), C*E (wpe), per layer 4 E^2 (attention) + 2 * 4E * E (MLP)
    assert sum(int(np.prod(s)) for s in shapes.values()) == 2 * 27 * 8 + 6 * 8 + 2 * 12 * 64
    assert list(shapes)[3:9] == [f"layer0.{n}" for n in ("attn_wq", "attn_wk", "attn_wv",
                                                         "attn_wo", "mlp_fc1", "mlp_fc2")]
    assert shapes["layer1.mlp_fc2"] == (8, 32) and shapes["wpe"] == (6, 8)
    # the same draws as before, in the new order: the first arrays are those of the default
    a, b = m.init_params(3, 27, cfg), m.init_params(3)
    assert np.array_equal(a["wte"].ravel(), b["wte"].ravel()[: a["wte"].size])
    assert m.default_buckets(6) == (6,) and m.default_buckets(32) == (8, 16, 32)
    assert m.default_buckets(16, batched=True) == (8, 10, 12, 16)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"n_embd": 10, "n_head": 4}, "n_embd = 10 is not a multiple of n_head = 4"),
    ({"n_layer": 0}, "n_layer must be a positive integer"),
    ({"block_size": 2.5}, "block_size must be a positive integer"),
])
def test_bad_sizes_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Config(**kwargs)


@pytest.fixture(scope="module")
def program():
    return m.build(DOCS, seed=1, **CFG)


def tokens(doc: str) -> list[int]:
    return m.Tokenizer.from_corpus().encode(doc)


def test_forward_matches_the_numpy_reference(program):
    params = {p: program.init_state[p] for p in program.params}
    for doc in (*DOCS, "olivia", "x"):
        got = output(program, program.init_state, doc)
        want = ref.doc_loss(params, tokens(doc), 2, 2, 6)
        assert abs(got - want) <= 1e-12 * abs(want), (doc, got, want)


def test_gradient_matches_differences_of_the_reference(program):
    """<dL/dparams, v> of the traced gradient against central differences of the numpy
    loss along random unit directions v (h = 1e-5: truncation and rounding ~1e-10)."""
    params = {p: program.init_state[p] for p in program.params}
    rng = np.random.default_rng(0)
    for doc in ("christopher", "emma"):
        key, inputs = program.encode_test(doc)
        g = interpret.evaluate(grad(program.output_circuits[key], LOSS, list(params)),
                               {**params, **inputs})
        for _ in range(3):
            v = {k: rng.normal(size=p.shape) for k, p in params.items()}
            norm = np.sqrt(sum(float(np.sum(x * x)) for x in v.values()))
            v = {k: x / norm for k, x in v.items()}  # a unit direction
            h = 1e-5
            up = ref.doc_loss({k: p + h * v[k] for k, p in params.items()}, tokens(doc), 2, 2, 6)
            dn = ref.doc_loss({k: p - h * v[k] for k, p in params.items()}, tokens(doc), 2, 2, 6)
            fd = (up - dn) / (2 * h)
            dot = sum(float(np.sum(g[f"grad_{k}"] * v[k])) for k in params)
            assert abs(dot - fd) <= 1e-7 * abs(fd), (doc, dot, fd)
