"""Compiled microgpt against the interpreter and the scalar oracle.

* Degree-0 compiled training against the interpreter and the oracle (1e-12);
  degree-K series training (K = 1, 3, 6) against the oracle's series training
  (1e-9 per coefficient); batching and the order-0 run bit for bit; c_1 (and
  c_2) against finite differences of compiled real retraining.
* Blow-ups raise NonFiniteError naming the step and the equation.

Every op compiled alone is tested in test_compiled_ops.py.  The microgpt
programs come from the session fixtures of conftest.py (one generated module
per degree, compiled once and cached on disk).
"""

from __future__ import annotations

import numpy as np
import pytest

import circuitsketch as cs
from circuitsketch import program as P
from circuitsketch.optim import SGD
from circuitsketch.program import Program, Step, build_output_circuit, build_step_circuit
from compiler.compiled import CompiledProgram, output_from_params, params_of
from compiler.diagnose import NonFiniteError
from tests.conftest import (
    DOCS,
    HELD_OUT,
    HELD_OUT_LONG,
    ORACLE_K,
    SERIES_DEGREES,
    WEIGHTS,
    B,
    T,
    assert_rel,
    directions,
    rel_err,
)


# ================================================================ microgpt, degree 0
@pytest.fixture(scope="module")
def real_run(compiled):
    cp = compiled(0)
    state, losses = cp.train(WEIGHTS)
    return cp.unpack_state(state), losses


def test_compiled_training_matches_interpreter(program, real_run):
    state, losses = real_run
    i_state, i_losses = P.train(program, WEIGHTS)
    assert losses.shape == (T,)
    assert_rel(losses, i_losses, 1e-12, "losses vs interpreter (1e-12)")
    assert set(state) == set(i_state)
    for name, arr in i_state.items():
        assert_rel(state[name], arr, 1e-12, f"final {name} vs interpreter (1e-12)")


def test_compiled_training_matches_oracle(real_run, oracle_real):
    state, losses = real_run
    o_params, o_losses, o_m, o_v = oracle_real
    for s in range(T):
        assert_rel(losses[s], o_losses[s], 1e-12, f"loss of step {s} vs oracle (1e-12)")
    for name, arr in o_params.items():
        assert_rel(state[name], arr, 1e-12, f"final {name} vs oracle (1e-12)")
        assert_rel(state[f"adam_m.{name}"], o_m[name], 1e-12, f"adam m of {name} (1e-12)")
        assert_rel(state[f"adam_v.{name}"], o_v[name], 1e-12, f"adam v of {name} (1e-12)")


@pytest.mark.parametrize("doc", [HELD_OUT, HELD_OUT_LONG])
def test_compiled_output_matches_oracle(compiled, oracle_real, chars, doc):
    from tests.oracle import microgpt as OM

    cp = compiled(0)
    state, _ = cp.train(WEIGHTS)
    got = cp.output(state, doc)
    assert isinstance(got, float | np.floating)
    assert_rel(got, OM.test_loss(oracle_real[0], OM.tokenize(doc, chars)), 1e-12, doc)


def test_compiled_training_resumes(compiled):
    """Running steps 0..7 then 7..T equals one run (state hand-over between calls)."""
    cp = compiled(0)
    full, losses = cp.train(WEIGHTS)
    mid, first = cp.train(WEIGHTS, stop=7)
    end, rest = cp.train(WEIGHTS, state=mid, start=7)
    np.testing.assert_array_equal(end, full)
    np.testing.assert_array_equal(np.concatenate([first, rest]), losses)


def test_compiled_argument_errors(compiled):
    cp0, cp1 = compiled(0), compiled(1)
    with pytest.raises(ValueError, match="weights: shape"):
        cp0.train(np.zeros(3))
    with pytest.raises(ValueError, match="degree >= 1"):
        cp0.train_series(directions())
    with pytest.raises(ValueError, match="degree-0"):
        cp1.train()
    with pytest.raises(ValueError, match="needs the higher orders"):
        cp1.output(cp0.train()[0], HELD_OUT)
    with pytest.raises(ValueError, match="directions: shape"):
        cp1.train_series(np.ones((2, 3)))


# ================================================================ microgpt, series
@pytest.fixture(scope="module")
def series_runs(compiled):
    """degree -> (order-0 state, hi, losses, test-loss coefficients (B, K+1)) for B directions."""
    psi = directions()
    out = {}
    for K in SERIES_DEGREES:
        cp = compiled(K)
        s0, hi, losses = cp.train_series(psi)
        out[K] = (s0, hi, losses, cp.output(s0, HELD_OUT, hi))
    return out


@pytest.mark.parametrize("K", SERIES_DEGREES)
def test_series_test_loss_matches_oracle(series_runs, oracle_series, K):
    _, _, _, coeffs = series_runs[K]
    want = oracle_series[1][: K + 1]
    assert coeffs.shape == (B, K + 1)
    for r in range(K + 1):
        err = abs(coeffs[0, r] - want[r]) / abs(want[r])
        assert err <= 1e-9, f"K={K}: c_{r} = {coeffs[0, r]} vs oracle {want[r]}: {err:.2e} > 1e-9"
    assert np.all(np.abs(want[1:]) > 1e-8), "oracle coefficients too small to be a test"


@pytest.mark.parametrize("K", SERIES_DEGREES)
def test_series_parameters_match_oracle(compiled, series_runs, oracle_series, K):
    """The final parameters' series (orders 0..K) along direction 0, tensor by tensor."""
    cp = compiled(K)
    s0, hi, _, _ = series_runs[K]
    state, his = cp.unpack_state(s0), cp.unpack_hi(hi, B)
    for name, want in oracle_series[0].items():
        assert_rel(state[name], want[0].real, 1e-12, f"K={K}: order 0 of {name} (1e-12)")
        for r in range(1, K + 1):
            assert_rel(his[name][0, r - 1], want[r], 1e-9, f"K={K}: order {r} of {name} (1e-9)")


@pytest.mark.parametrize("K", SERIES_DEGREES)
def test_series_batch_equals_single_runs_exactly(compiled, series_runs, K):
    cp = compiled(K)
    s0, hi, losses, coeffs = series_runs[K]
    psi = directions()
    batched = cp.unpack_hi(hi, B)
    for b in range(B):
        s0_b, hi_b, losses_b = cp.train_series(psi[b : b + 1])
        assert np.array_equal(s0_b, s0), f"K={K}: order 0 of direction {b} differs"
        assert np.array_equal(losses_b, losses)
        single = cp.unpack_hi(hi_b, 1)
        for name, v in single.items():
            assert np.array_equal(v[0], batched[name][b]), f"K={K}: {name}, direction {b}"
        assert np.array_equal(cp.output(s0_b, HELD_OUT, hi_b)[0], coeffs[b]), f"K={K}, b={b}"


def test_direction_groups_equal_one_pass_exactly(compiled, monkeypatch):
    """Batches larger than PASS_ORDERS // K run in groups; the result (also when resuming
    from a given hi half-way) is bit for bit that of one pass over all directions."""
    from compiler import compiled as compiled_module

    K, n = 6, 5
    cp = compiled(K)
    monkeypatch.setattr(compiled_module, "PASS_ORDERS", 12)  # groups of 2, 2 and 1
    psi = directions(n, seed=3)
    half = T // 2

    def run():
        s, h, l1 = cp.train_series(psi, stop=half)
        s, h, l2 = cp.train_series(psi, state=s, hi=h, start=half)
        return s, h, np.concatenate([l1, l2])

    grouped = run()
    monkeypatch.setattr(compiled_module, "PASS_ORDERS", 10**6)
    one_pass = run()
    for got, want in zip(grouped, one_pass, strict=True):
        assert np.array_equal(got, want)


@pytest.mark.parametrize("K", SERIES_DEGREES)
def test_series_order0_equals_real_training_exactly(compiled, series_runs, K):
    cp0 = compiled(0)
    s0, _, losses, coeffs = series_runs[K]
    real_state, real_losses = cp0.train()
    assert np.array_equal(s0, real_state), f"K={K}: order-0 state != real training"
    assert np.array_equal(losses, real_losses), f"K={K}: order-0 losses != real losses"
    real_out = cp0.output(real_state, HELD_OUT)
    assert np.all(coeffs[:, 0] == real_out), f"K={K}: c_0 {coeffs[:, 0]} != {real_out}"


def test_series_parameter_round_trip(compiled, series_runs):
    """params_of / output_from_params (what a sketch stores) give the same output."""
    K = 3
    cp = compiled(K)
    s0, hi, _, coeffs = series_runs[K]
    p0, phi = params_of(cp, s0, hi, B)
    assert p0.shape == (4192,) and phi.shape == (B, K, 4192)
    np.testing.assert_array_equal(output_from_params(cp, p0, phi, HELD_OUT), coeffs)
    cp0 = compiled(0)
    r0, _ = params_of(cp0, cp0.train()[0])
    assert output_from_params(cp0, r0, None, HELD_OUT) == coeffs[0, 0]


def test_series_long_test_document(compiled, oracle_series, series_runs, chars):
    """The output circuit of the 16 bucket on the series parameters, against the oracle."""
    from tests.oracle import microgpt as OM

    K = ORACLE_K
    cp = compiled(K)
    s0, hi, _, _ = series_runs[K]
    got = cp.output(s0, HELD_OUT_LONG, hi)[0]
    want = np.array(OM.test_loss(oracle_series[0], OM.tokenize(HELD_OUT_LONG, chars)).coeffs)
    for r in range(K + 1):
        err = abs(got[r] - want[r]) / abs(want[r])
        assert err <= 1e-9, f"{HELD_OUT_LONG}: c_{r} {got[r]} vs oracle {want[r]} ({err:.1e})"


def _retrained_loss(cp0: CompiledProgram, weights: np.ndarray) -> float:
    state, _ = cp0.train(weights)
    return float(cp0.output(state, HELD_OUT))


def test_c1_matches_finite_differences(compiled, series_runs):
    """c_1 = <grad F, psi> = D_{Re psi} F + i D_{Im psi} F by central differences."""
    cp0 = compiled(0)
    psi = directions()[0]
    h = 1e-5
    fd = 0j
    for part, unit in ((psi.real, 1.0), (psi.imag, 1j)):
        plus, minus = _retrained_loss(cp0, h * part), _retrained_loss(cp0, -h * part)
        fd += unit * (plus - minus) / (2 * h)
    for K in SERIES_DEGREES:
        c1 = series_runs[K][3][0, 1]
        err = abs(c1 - fd) / abs(fd)
        assert err <= 1e-5, f"K={K}: c_1 {c1} vs finite differences {fd}: {err:.1e} > 1e-5"


def test_c2_matches_second_differences(compiled, series_runs):
    """c_2 = Q(psi) with Q(v) = v^T H v / 2: Q(a) - Q(b) + i (Q(a+b) - Q(a) - Q(b))."""
    cp0 = compiled(0)
    psi = directions()[0]
    h = 1e-3
    f0 = _retrained_loss(cp0, np.zeros(len(DOCS)))

    def q(v):
        plus, minus = _retrained_loss(cp0, h * v), _retrained_loss(cp0, -h * v)
        return (plus - 2 * f0 + minus) / (2 * h * h)

    qa, qb, qab = q(psi.real), q(psi.imag), q(psi.real + psi.imag)
    want = qa - qb + 1j * (qab - qa - qb)
    for K in (3, 6):
        c2 = series_runs[K][3][0, 2]
        err = abs(c2 - want) / abs(want)
        assert err <= 1e-4, f"K={K}: c_2 {c2} vs second differences {want}: {err:.1e} > 1e-4"


def test_series_coefficients_are_independent_of_degree(series_runs):
    """Orders 0..K of a degree-K run are those of a degree-6 run (truncation commutes)."""
    top = series_runs[max(SERIES_DEGREES)][3]
    for K in SERIES_DEGREES:
        assert rel_err(series_runs[K][3], top[:, : K + 1]) <= 1e-13, f"K={K}"


# ================================================================ non-finite values
def _exploding_program(steps: int = 4) -> Program:
    """loss = -sum exp(50 p x): each SGD step multiplies the growth; step 2 overflows exp."""
    opt = SGD(lr=0.1, momentum=0.0)

    def loss_fn(params, x):
        return -cs.exp(params["p"] * x * 50.0).sum()

    shapes = {"p": (2,)}
    spec = {"x": cs.Input((2,))}
    data = {"x": np.array([1.0, 0.5])}
    return Program(
        name="exploding",
        init_state={"p": np.zeros(2)},
        params=("p",),
        step_circuits={0: build_step_circuit(loss_fn, shapes, spec, opt)},
        output_circuits={0: build_output_circuit(loss_fn, shapes, spec)},
        steps=[Step(0, 0, data) for _ in range(steps)],
        num_docs=1,
        optimizer=opt,
        encode_test=lambda doc: (0, data),
    )


def test_nonfinite_real_training_names_step_and_node():
    prog = _exploding_program()
    with np.errstate(over="ignore"):
        P.train(prog)  # the interpreter just runs into inf (no check): compiled code must not
    cp = CompiledProgram(prog, 0)
    with pytest.raises(NonFiniteError, match=r"training step 2\b") as info:
        cp.train()
    assert "= exp " in str(info.value), f"the exp equation is not named: {info.value}"
    assert "%" in str(info.value)
    # the steps before the blow-up are fine
    state, losses = cp.train(stop=2)
    assert np.all(np.isfinite(state)) and np.all(np.isfinite(losses))


def test_nonfinite_series_training_names_step_and_node():
    cp = CompiledProgram(_exploding_program(), 1)
    with pytest.raises(NonFiniteError, match=r"training step 2\b") as info:
        cp.train_series(np.array([[1.0 + 0.5j]]))
    assert "= exp " in str(info.value), f"the exp equation is not named: {info.value}"


def test_nonfinite_adam_update_is_found_in_its_last_chunk():
    """Adam's fused update checks its outputs a chunk at a time (``fusion.CHUNK``): one
    overflowing g * g in the last element of a parameter several chunks long still stops
    training at that step, and the chunks before it are checked too (first element)."""
    from circuitsketch.optim import Adam
    from compiler.fusion import CHUNK

    n = 3 * CHUNK + 5
    opt = Adam(lr=0.01, decay=False)

    def loss_fn(params, x):
        return (params["p"] * x).sum()

    shapes, spec = {"p": (n,)}, {"x": cs.Input((n,))}
    for where in (n - 1, 0):
        x = np.ones(n)
        x[where] = 1e300  # the gradient: g * g overflows in Adam's second moment
        data = {"x": x}
        prog = Program(
            name="adam_chunks",
            init_state={"p": np.zeros(n), "adam_m.p": np.zeros(n), "adam_v.p": np.zeros(n)},
            params=("p",),
            step_circuits={0: build_step_circuit(loss_fn, shapes, spec, opt)},
            output_circuits={0: build_output_circuit(loss_fn, shapes, spec)},
            steps=[Step(0, 0, data) for _ in range(2)],
            num_docs=1,
            optimizer=opt,
            encode_test=lambda doc, data=data: (0, data),
        )
        cp = CompiledProgram(prog, 0)
        assert "for c0 in range(0, n, " in cp.source, "Adam's update is not checked in chunks"
        with pytest.raises(NonFiniteError, match=r"training step 0\b"):
            cp.train()


def test_nonfinite_series_state_outside_fused_loops():
    """SGD's short update is not fused, so the caller checks the state's higher orders
    (``step_0_UNCHECKED_HI``).  A direction of 1e300 gives finite order-1 values at
    step 0 and an overflowing order 2 at step 1, while order 0 stays finite."""
    opt = SGD(lr=0.1, momentum=0.0)

    def loss_fn(params, x):
        return ((params["p"] * x) ** 2.0).sum()

    spec, data = {"x": cs.Input((2,))}, {"x": np.array([1.0, 0.5])}
    prog = Program(
        name="quadratic",
        init_state={"p": np.ones(2)},
        params=("p",),
        step_circuits={0: build_step_circuit(loss_fn, {"p": (2,)}, spec, opt)},
        output_circuits={0: build_output_circuit(loss_fn, {"p": (2,)}, spec)},
        steps=[Step(0, 0, data) for _ in range(3)],
        num_docs=1,
        optimizer=opt,
        encode_test=lambda doc: (0, data),
    )
    cp = CompiledProgram(prog, 2)
    assert cp.module.step_0_UNCHECKED_HI != (), "the SGD state should be checked by the caller"
    s0, hi, _ = cp.train_series(np.array([[1e300 + 0j]]), stop=1)
    assert np.all(np.isfinite(hi)) and np.all(np.isfinite(s0))
    with pytest.raises(NonFiniteError, match=r"training step 1\b"):
        cp.train_series(np.array([[1e300 + 0j]]))


def test_nonfinite_microgpt_huge_weights(compiled):
    """Weights 1e300 make g * g overflow in Adam's second moment at step 0."""
    with pytest.raises(NonFiniteError, match=r"training step 0 \(document 0\)") as info:
        compiled(0).train(np.full(len(DOCS), 1e300))
    assert "node %" in str(info.value) and "= mul " in str(info.value), str(info.value)


def test_nonfinite_microgpt_huge_direction(compiled):
    """A direction of norm 1e300 overflows order 2 of the series of g * g at step 0."""
    psi = directions(1) * 1e300
    # all of microgpt's state is written by fused Adam loops, which check it themselves
    assert compiled(3).module.step_0_UNCHECKED_HI == ()
    with pytest.raises(NonFiniteError, match=r"training step 0") as info:
        compiled(3).train_series(psi)
    msg = str(info.value)
    assert "node %" in msg and "= mul " in msg and "coefficient of order 2" in msg, msg
