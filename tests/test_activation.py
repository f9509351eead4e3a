"""microgpt with ReLUs in its MLP (--activation relu): trained, sketched and refused right.

One tiny model (8 wide, 2 heads, 1 layer, context 8: one length bucket, so one
step and one output circuit to compile) on 8 names for 10 steps.  Its forward
pass is checked against the independent numpy reference (tests/gpt_reference.py),
its compiled training and series against the interpreter and against finite
differences of compiled retraining; the default model is untouched.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from circuitsketch import program as P
from circuitsketch.models import microgpt as m
from circuitsketch.models.microgpt_config import Config
from compiler.compiled import CompiledProgram
from runtime.sources import MicrogptSource
from runtime.sources.microgpt_settings import normalized_model
from runtime.spec import fingerprints
from runtime.store import Sketch
from tests import gpt_reference as ref
from tests.cli_helpers import one_line_error, run, run_json
from tests.conftest import assert_rel

DOCS = ("ava", "emma", "leo", "mia", "noah", "zoe", "ivy", "max")
SIZE = {"n_layer": 1, "n_embd": 8, "n_head": 2, "block_size": 8}
STEPS, K, TEST = 10, 2, "olivia"
W = np.array([0.0, 0.5, 0.0, 1.0, 0.0, 0.25, 0.0, 0.0])  # down-weighted and deleted docs


def reference_loss(prog, doc: str, activation: str) -> float:
    """The numpy reference's loss of `doc` at the program's initial parameters."""
    params = {p: prog.init_state[p] for p in prog.params}
    tokens = m.Tokenizer.from_corpus().encode(doc)
    return ref.doc_loss(params, tokens, SIZE["n_layer"], SIZE["n_head"], SIZE["block_size"],
                        activation)


@pytest.fixture(scope="module")
def relu():
    prog = m.build(DOCS, steps=STEPS, activation="relu", **SIZE)
    # every test below is of a ReLU model: one ignoring the setting fails them all here
    assert_rel(P.output(prog, prog.init_state, TEST), reference_loss(prog, TEST, "relu"),
               1e-12, "the relu model's loss vs the numpy reference")
    return prog


@pytest.fixture(scope="module")
def relu_compiled(relu):
    return {degree: CompiledProgram(relu, degree) for degree in (0, K)}


def directions(n: int = 2, seed: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    psi = rng.normal(size=(n, len(DOCS))) + 1j * rng.normal(size=(n, len(DOCS)))
    return psi / np.linalg.norm(psi, axis=1, keepdims=True)


def test_compiled_training_equals_the_interpreter(relu, relu_compiled):
    """Real training with some documents down-weighted, tensor by tensor (1e-12, the
    suite's tolerance for compiled vs interpreted training)."""
    cp = relu_compiled[0]
    flat, losses = cp.train(W)
    state = cp.unpack_state(flat)
    want_state, want_losses = P.train(relu, W)
    assert_rel(losses, want_losses, 1e-12, "per-step losses (1e-12)")
    assert set(state) == set(want_state)
    for name, want in want_state.items():
        assert_rel(state[name], want, 1e-12, f"final {name} (1e-12)")
    assert_rel(cp.output(flat, TEST), P.output(relu, want_state, TEST), 1e-12, "test loss")
    # step 0 trains on document 0 (weight 0) at the initial parameters: the reference's loss
    assert_rel(losses[0], reference_loss(relu, DOCS[0], "relu"), 1e-12, "loss of step 0")


def test_series_equal_the_interpreter_and_finite_differences(relu, relu_compiled):
    """Degree-2 test-loss coefficients along 2 directions: equal to the interpreter's series
    training (1e-12 per direction); c_1 and c_2 equal central differences of compiled
    real retraining at weights +-h Re psi, +-h Im psi (c_1: h = 1e-5, 1e-6; c_2: the
    quadratic form Q(v) = v^T H v / 2 by second differences, h = 1e-3, 1e-5; measured
    errors ~2e-8 and ~3e-7)."""
    cp0, cp = relu_compiled[0], relu_compiled[K]
    psi = directions()
    s0, hi, _ = cp.train_series(psi)
    coeffs = cp.output(s0, TEST, hi)
    assert coeffs.shape == (len(psi), K + 1)

    def retrained(w: np.ndarray) -> float:
        return float(cp0.output(cp0.train(w)[0], TEST))

    f0 = retrained(np.zeros(len(DOCS)))
    for b, d in enumerate(psi):
        state, _ = P.train_series(relu, d, K)
        assert_rel(coeffs[b], P.output(relu, state, TEST, degree=K), 1e-12,
                   f"direction {b}: coefficients vs the interpreter (1e-12)")
        assert np.all(np.abs(coeffs[b, 1:]) > 1e-5), "coefficients too small to be a test"
        c1 = sum(unit * (retrained(1e-5 * part) - retrained(-1e-5 * part)) / 2e-5
                 for part, unit in ((d.real, 1.0), (d.imag, 1j)))
        assert abs(coeffs[b, 1] - c1) <= 1e-6 * abs(c1), (b, coeffs[b, 1], c1)

        def q(v: np.ndarray) -> float:
            return (retrained(1e-3 * v) - 2 * f0 + retrained(-1e-3 * v)) / 2e-6

        qa, qb, qab = q(d.real), q(d.imag), q(d.real + d.imag)
        c2 = qa - qb + 1j * (qab - qa - qb)
        assert abs(coeffs[b, 2] - c2) <= 1e-5 * abs(c2), (b, coeffs[b, 2], c2)


def test_the_setting_is_used_and_the_default_is_gelu():
    """ReLU and GELU give different losses, each its own reference's; the default traces
    the same circuits as an explicit gelu (the spec's model is unchanged), relu others."""
    gelu = m.build(DOCS, steps=STEPS, **SIZE)
    relu = m.build(DOCS, steps=STEPS, activation="relu", **SIZE)  # not the checked fixture
    for prog, act in ((gelu, "gelu"), (relu, "relu")):
        assert_rel(P.output(prog, prog.init_state, TEST), reference_loss(prog, TEST, act),
                   1e-12, f"{act}: loss vs the numpy reference")
    assert abs(reference_loss(relu, TEST, "relu") - reference_loss(gelu, TEST, "gelu")) > 1e-3
    trained = [P.output(p, P.train(p)[0], TEST) for p in (gelu, relu)]
    assert abs(trained[0] - trained[1]) > 1e-3, trained
    assert fingerprints(gelu) == fingerprints(m.build(DOCS, steps=STEPS, activation="gelu",
                                                      **SIZE))
    assert fingerprints(gelu).keys() == fingerprints(relu).keys()
    assert all(a != b for a, b in zip(fingerprints(gelu).values(), fingerprints(relu).values(),
                                      strict=True))
    names = m.read_docs(m.corpus_path())[:20]  # the spec's size
    assert fingerprints(m.build(names)) == fingerprints(m.build(names, activation="gelu"))


def test_config_checks_and_records_the_activation():
    with pytest.raises(ValueError, match=r"activation must be one of gelu, relu, got 'tanh'"):
        Config(activation="tanh")
    with pytest.raises(ValueError, match=r"microgpt model: activation .* got 'tanh'"):
        normalized_model({"activation": "tanh"})
    assert Config().changed() == {} and Config(activation="gelu").changed() == {}
    assert Config(activation="relu", n_embd=8, n_head=2).changed() == {
        "n_embd": 8, "n_head": 2, "activation": "relu"}
    assert normalized_model({"activation": "gelu", "n_layer": 1}) == {}


def test_the_names_of_the_activations_agree_where_they_are_written():
    """The config's names, the model's functions, the CLI's choices (it may not import the
    model: tests/test_layering.py) and the sources' defaults are four copies: one list."""
    from dataclasses import asdict

    from circuitsketch.models.microgpt_config import ACTIVATIONS
    from runtime.cli.settings import MODEL_OPTIONS
    from runtime.sources.microgpt_settings import MODEL_DEFAULTS

    choices = next(s.kwargs["choices"] for s in MODEL_OPTIONS if s.key == "activation")
    assert tuple(choices) == ACTIVATIONS
    assert tuple(m.NONLINEARITIES) == ACTIVATIONS
    assert asdict(Config()) == MODEL_DEFAULTS


def test_a_sketch_without_the_setting_is_of_gelus():
    """The spec's manifest records no activation (byte for byte as before): it means gelu."""
    source = MicrogptSource(DOCS, STEPS)
    assert "activation" not in source.model_settings()
    assert MicrogptSource(DOCS, STEPS, model_config={"activation": "relu"}
                          ).model_settings()["activation"] == "relu"
    old = SimpleNamespace(path="old", config={"hyperparameters": source.model_settings()})
    MicrogptSource.check_model(old, {"activation": "gelu", "n_layer": 1})  # no error
    with pytest.raises(ValueError, match=r"--activation relu: .* activation = gelu"):
        MicrogptSource.check_model(old, {"activation": "relu"})


@pytest.fixture(scope="module")
def relu_sketch(tmp_path_factory, relu_compiled):
    """A relu sketch from the command line (the same circuits as `relu_compiled`: cached code).
    No second process compiling the real-mode code beside it (``runtime.real_beside``,
    tested in tests/test_real_beside.py): `relu_compiled` compiles that code in this one,
    and the process would only start, trace the program again and load it (~2 s of CPU)."""
    from runtime.cli import main
    from runtime.real_beside import ENV

    docs = tmp_path_factory.mktemp("relu") / "docs.txt"
    docs.write_text("".join(d + "\n" for d in DOCS))
    out = docs.parent / "sk"
    size = [a for k, v in SIZE.items() for a in (f"--{k.replace('_', '-')}", v)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(ENV, "0")
        rc = main([str(a) for a in ["compile", "--docs", docs, *size, "--activation", "relu",
                                    "--steps", STEPS, "--degree", K, "--directions", 2,
                                    "--workers", 1, "--out", out, "--no-progress"]])
    assert rc == 0
    return out


def test_a_relu_sketch_records_and_rebuilds_its_model(capsys, relu, relu_compiled, relu_sketch):
    sk = Sketch.open(relu_sketch)
    assert sk.config["model_config"] == {"n_embd": 8, "n_head": 2, "block_size": 8,
                                         "activation": "relu"}
    assert sk.config["hyperparameters"]["activation"] == "relu"
    # metagrad, evaluate and hessian retrain the sketch's run: the relu model's circuits
    rebuilt = MicrogptSource.reopen(sk, full=True).program()
    assert fingerprints(rebuilt) == fingerprints(relu)
    q = run_json(capsys, "coefficients", relu_sketch, "--doc", TEST, "--activation", "relu")
    cp0 = relu_compiled[0]
    want = cp0.output(cp0.train()[0], TEST)
    assert abs(q["coefficients"][0][0][0] - want) <= 1e-12 * want  # c_0: its undeleted run


def test_the_cli_refuses_another_activation(capsys, relu_sketch, tmp_path):
    err = one_line_error(capsys, "query", relu_sketch, "--doc", TEST, "--delete-indices", 1,
                         "--activation", "gelu")
    assert "--activation gelu" in err and "activation = relu" in err, err
    rc, _, err = run(capsys, "query", relu_sketch, "--doc", TEST, "--delete-indices", 1,
                     "--activation", "relu")
    assert rc == 0, err
    err = one_line_error(capsys, "compile", "--docs", "x.txt", "--activation", "tanh",
                         "--degree", 1, "--directions", 2, "--out", tmp_path / "out")
    assert "argument --activation: invalid choice: 'tanh'" in err, err
