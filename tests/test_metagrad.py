"""The metagradient dF/dw by reverse mode through training, against two independent checks."""

from __future__ import annotations

import numpy as np
import pytest

from circuitsketch.grad import reverse_step
from circuitsketch.ir import IRError
from circuitsketch.models import microgpt as m
from compiler.compiled import CompiledProgram
from runtime.metagrad import Metagradient

N_DOCS = 20
TEST_DOC = "max"


@pytest.fixture(scope="module")
def program():
    return m.build(m.read_docs(m.corpus_path())[:N_DOCS], steps=N_DOCS)


@pytest.fixture(scope="module")
def metagrad(program):
    return Metagradient(program)


def test_matches_central_differences_of_retraining(program, metagrad):
    g = metagrad(TEST_DOC)
    cp = CompiledProgram(program, 0)

    def loss(w):
        state, _ = cp.train(w)
        return cp.output(state, TEST_DOC)

    h = 1e-5
    eye = np.eye(N_DOCS)
    fd = np.array([(loss(h * eye[i]) - loss(-h * eye[i])) / (2 * h) for i in range(N_DOCS)])
    rel = np.abs(g - fd) / np.abs(fd)
    assert np.max(rel) < 1e-6, f"metagradient vs central differences: max rel err {np.max(rel):.2e}"


def test_equals_first_sketch_coefficient(program, metagrad):
    g = metagrad(TEST_DOC)
    cp = CompiledProgram(program, 1)
    rng = np.random.default_rng(7)
    psi = rng.normal(size=(2, N_DOCS)) + 1j * rng.normal(size=(2, N_DOCS))
    psi /= np.linalg.norm(psi, axis=1, keepdims=True)
    s0, hi, _ = cp.train_series(psi)
    c1 = cp.output(s0, TEST_DOC, hi)[:, 1]
    rel = np.abs(c1 - psi @ g) / np.abs(c1)
    assert np.max(rel) < 1e-9, f"<g, psi> vs c_1: max rel err {np.max(rel):.2e}"


def test_depends_on_the_test_document(metagrad):
    assert not np.allclose(metagrad("max"), metagrad("olivia"))


def test_reverse_step_names_a_missing_input(program):
    with pytest.raises(IRError, match="no input 'nope'"):
        reverse_step(program.step_circuits[8], ["nope"], "w")


def test_reverse_step_starts_from_the_cotangents_it_is_given(program):
    """Each new state entry's cotangent seeds the transpose as it is: no copy of it through
    a product with one (there was one per entry, a pass over the whole state per step)."""
    from circuitsketch.ir import Op
    from circuitsketch.program import WEIGHT
    from compiler.passes import _is_one, simplify

    names = list(program.init_state)
    r = simplify(reverse_step(program.step_circuits[8], names, WEIGHT))
    seeds = {r.inputs[n] for n in names}
    copies = [i for i, n in r if n.op is Op.MUL and any(_is_one(r, j) for j in n.inputs)
              and seeds & set(n.inputs)]  # fmt: skip
    assert copies == [] and all(r.users()[s] for s in seeds)
