"""A training program with ReLUs, gradient clipping by global norm and a tanh output layer
(``examples/relu_mlp.py``), compiled and sketched through the CLI.

Along the direction v = 1_D (1 on a deletion set D, 0 elsewhere) the sketch's
coefficients c_1, c_2 of the test output are compared with a polynomial fit
of exact compiled retraining at data weights eps * 1_D, |eps| <= 0.02 (13
Chebyshev points, degree 8).  The piecewise parts select by real order-0
values, so where training stays off the kinks the series is exact: the issue
asks for c_1 to 1e-6 and c_2 to 1e-3 relative; this run gives about 1e-11 and
1e-9, and the tolerances below are 1e-8 and 1e-6.
"""

from __future__ import annotations

import numpy as np
import pytest

from compiler.compiled import CompiledProgram
from examples import relu_mlp
from tests.cli_helpers import run, run_json

REF = "examples/relu_mlp.py:build"
D = [1, 5, 9, 17]
TEST = {"x": np.array([0.3, -0.8, 0.5]), "y": np.array(0.2)}


@pytest.fixture(scope="module")
def program():
    return relu_mlp.build()


@pytest.fixture(scope="module")
def retrained(program):
    """Coefficients 0..2 of F(eps) = output after training with weights eps * 1_D."""
    cp = CompiledProgram(program, 0)
    v = np.zeros(program.num_docs)
    v[D] = 1.0
    h, n = 0.02, 13
    eps = h * np.cos(np.pi * (np.arange(n) + 0.5) / n)
    vals = [cp.output(cp.train(e * v)[0], TEST) for e in eps]
    fit = np.polynomial.Chebyshev.fit(eps, vals, 8, domain=[-h, h])
    return fit.convert(kind=np.polynomial.Polynomial).coef[:3]


def test_clipping_and_relu_are_exercised(program):
    """Clipping changes the run (it is active on some steps), and the step holds the ops."""
    unclipped = CompiledProgram(relu_mlp.build(clip_norm=None), 0)
    cp = CompiledProgram(program, 0)
    a = cp.output(cp.train()[0], TEST)
    b = unclipped.output(unclipped.train()[0], TEST)
    assert abs(a - b) > 1e-3
    ops = {node.op.value for c in program.step_circuits.values() for node in c.nodes}
    assert {"greater", "where", "tanh"} <= ops


def test_sketch_along_a_deletion_set_matches_retraining(capsys, tmp_path, retrained):
    v = np.zeros((1, 24), np.complex128)
    v[0, D] = 1.0
    np.save(tmp_path / "v.npy", v)
    np.savez(tmp_path / "test.npz", **TEST)
    sk = tmp_path / "sk"
    rc, _, err = run(capsys, "compile", "--program", REF, "--degree", 2, "--directions-file",
                       tmp_path / "v.npy", "--out", sk, "--workers", 1, "--no-progress")
    assert rc == 0, err
    coef = np.array(run_json(capsys, "coefficients", sk, "--test-npz", tmp_path / "test.npz")[
        "coefficients"])
    c = coef[0, :, 0] + 1j * coef[0, :, 1]
    assert np.all(np.abs(c.imag) < 1e-15)  # a real direction: real coefficients
    assert abs(c[0].real - retrained[0]) < 1e-12
    assert abs(c[1].real - retrained[1]) < 1e-8 * abs(retrained[1])
    assert abs(c[2].real - retrained[2]) < 1e-6 * abs(retrained[2])


def test_inspect_after_fuse_on_the_program(capsys):
    rc, out, err = run(capsys, "inspect", "--program", REF, "--after", "fuse", "--degree", "0")
    assert rc == 0, err
    assert "] %" in out and "fused loops" in out  # members marked with their loop
