"""The suite's check of compiled code against the numpy interpreter.

``check_real`` and ``check_series`` run a compiled circuit (anything called
like ``compiler.function.CompiledCircuit``) and compare every output with
``circuitsketch.interpret.evaluate`` / ``evaluate_series`` on the same
inputs, at the suite's tolerances (``REAL_TOL``, ``SERIES_TOL``, relative to
each output's largest entry).  The op tests of test_compiled_ops.py use them, and
test_checks_are_sharp.py shows that they fail on corrupted generated code and
on a wrong library kernel.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from circuitsketch.interpret import evaluate, evaluate_series
from circuitsketch.ir import Circuit
from tests.conftest import assert_rel

REAL_TOL = 1e-13  # compiled real outputs vs evaluate
SERIES_TOL = 1e-12  # compiled series outputs vs evaluate_series, per direction, all orders

Compiled = Callable[..., dict[str, np.ndarray]]


def check_real(
    c: Circuit, compiled: Compiled, x: Mapping[str, np.ndarray], what: str, tol: float = REAL_TOL
) -> None:
    """compiled(x) equals evaluate(c, x) output by output, to tol."""
    got, want = compiled(x), evaluate(c, x)
    assert set(got) == set(want), f"{what}: outputs {sorted(got)} != {sorted(want)}"
    for name, ref in want.items():
        assert got[name].shape == ref.shape, f"{what}: output {name} shape"
        assert_rel(got[name], ref, tol, f"{what}: output {name} ({tol:.0e})")


def series_inputs(
    base: Mapping[str, np.ndarray], series: Sequence[str], K: int, B: int, rng
) -> dict[str, np.ndarray]:
    """base with the inputs named in `series` made (B, K+1, *shape) series: order 0 is the
    real base value shared by all directions, orders 1..K random complex."""
    inputs = dict(base)
    for name in series:
        v = np.zeros((B, K + 1, *np.shape(base[name])), np.complex128)
        v[:, 0] = base[name]
        hi_shape = (B, K, *np.shape(base[name]))
        v[:, 1:] = rng.normal(size=hi_shape) + 1j * rng.normal(size=hi_shape)
        inputs[name] = v
    return inputs


def check_series(
    c: Circuit,
    compiled: Compiled,
    inputs: Mapping[str, np.ndarray],
    series: Sequence[str],
    K: int,
    B: int,
    what: str,
    tol: float = SERIES_TOL,
) -> None:
    """compiled(inputs, B) equals evaluate_series(c, ., K) for each of the B directions,
    every output and every order, to tol."""
    got = compiled(inputs, B)
    for b in range(B):
        per_b = {k: (v[b] if k in series else v) for k, v in inputs.items()}
        want = evaluate_series(c, per_b, K)
        assert set(got) == set(want), f"{what}: outputs {sorted(got)} != {sorted(want)}"
        for name, ref in want.items():
            assert got[name].shape == (B, *ref.shape), f"{what}: output {name} shape"
            assert_rel(got[name][b], ref, tol, f"{what}: {name}, direction {b} ({tol:.0e})")
