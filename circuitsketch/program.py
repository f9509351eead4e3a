"""Training programs: an initial state, a step circuit run in a loop, an output circuit.

The loop is never unrolled into the circuit.  Step s runs ``step_circuits[key]``
on (state, per-step inputs) -> (new state, ``loss``) where the per-step inputs
hold the document's data, the optimizer's scalars (learning rate, bias
corrections) and the data weight ``w`` of the document, the variable a sketch
differentiates along.  The loss of step s is multiplied by ``1 - w[doc]``.
Documents of different sizes may use different step circuits (``key``).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from circuitsketch import interpret
from circuitsketch.grad import gradients
from circuitsketch.ir import Circuit
from circuitsketch.tracing import Input, Traced, input_value, lift

WEIGHT = "w"
LOSS = "loss"


@dataclass(frozen=True)
class Step:
    key: Hashable
    doc: int
    data: Mapping[str, np.ndarray]


@dataclass
class Program:
    """Everything needed to run (or sketch) a training run and evaluate its output."""

    name: str
    init_state: dict[str, np.ndarray]
    params: tuple[str, ...]
    step_circuits: dict[Hashable, Circuit]
    output_circuits: dict[Hashable, Circuit]
    steps: list[Step]
    num_docs: int
    optimizer: Any
    encode_test: Callable[[Any], tuple[Hashable, dict[str, np.ndarray]]]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_steps(self) -> int:
        return len(self.steps)

    def step_inputs(self, s: int) -> tuple[Circuit, dict[str, Any]]:
        """The circuit of step s and its non-state, non-weight inputs."""
        step = self.steps[s]
        inputs = dict(step.data)
        inputs.update(self.optimizer.schedule(s, self.num_steps))
        return self.step_circuits[step.key], inputs


def build_step_circuit(
    loss_fn: Callable[..., Traced],
    param_shapes: Mapping[str, tuple[int, ...]],
    data_inputs: Mapping[str, Input],
    optimizer: Any,
    scope: str = "model",
) -> Circuit:
    """Trace one training step: weighted loss, its gradient, the optimizer update."""
    c = Circuit()
    params = {n: input_value(c, n, Input(s)) for n, s in param_shapes.items()}
    bufs = {
        n: tuple(input_value(c, b, Input(s)) for b in optimizer.buffers(n))
        for n, s in param_shapes.items()
    }
    data = {k: input_value(c, k, spec) for k, spec in data_inputs.items()}
    w = input_value(c, WEIGHT, Input(()))
    hyper = {k: input_value(c, k, Input(())) for k in optimizer.schedule(0, 1)}
    with c.scope(scope):
        loss = loss_fn(params, **data)
    with c.scope("weight"):
        weighted = loss * (1.0 - w)
    with c.scope("backward"):
        grads = gradients(weighted, list(params.values()))
    with c.scope(type(optimizer).__name__.lower()):
        for (name, p), g in zip(params.items(), grads, strict=True):
            new_p, new_bufs = optimizer.update(p, g, bufs[name], hyper)
            c.set_output(name, lift(c, new_p).id)
            for b, nb in zip(optimizer.buffers(name), new_bufs, strict=True):
                c.set_output(b, nb.id)
    c.set_output(LOSS, weighted.id)
    c.verify()
    return c


def build_output_circuit(
    out_fn: Callable[..., Traced],
    param_shapes: Mapping[str, tuple[int, ...]],
    test_inputs: Mapping[str, Input],
    scope: str = "model",
) -> Circuit:
    """Trace the output of the trained model on a test input (e.g. its loss)."""
    c = Circuit()
    params = {n: input_value(c, n, Input(s)) for n, s in param_shapes.items()}
    data = {k: input_value(c, k, spec) for k, spec in test_inputs.items()}
    with c.scope(scope):
        out = out_fn(params, **data)
    c.set_output(LOSS, lift(c, out).id)
    c.verify()
    return c


def _check_weights(program: Program, weights) -> np.ndarray:
    w = np.zeros(program.num_docs) if weights is None else np.asarray(weights)
    if w.shape != (program.num_docs,):
        raise ValueError(f"weights: shape {w.shape}, expected ({program.num_docs},)")
    return w


def train(program: Program, weights=None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Real training through the IR interpreter: final state and per-step losses."""
    w = _check_weights(program, weights).astype(np.float64)
    state = {k: v.copy() for k, v in program.init_state.items()}
    losses = np.empty(program.num_steps)
    for s in range(program.num_steps):
        circuit, inputs = program.step_inputs(s)
        out = interpret.evaluate(circuit, {**state, **inputs, WEIGHT: w[program.steps[s].doc]})
        losses[s] = out.pop(LOSS)
        state = out
    return state, losses


def train_series(
    program: Program, direction, degree: int
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Training with w = z * direction in degree-K series arithmetic (interpreter).

    Returns the series-valued final state (arrays of shape (K+1, *shape)) and
    the per-step loss series (T, K+1).
    """
    psi = _check_weights(program, direction).astype(np.complex128)
    state: dict[str, np.ndarray] = dict(program.init_state)
    losses = np.empty((program.num_steps, degree + 1), dtype=np.complex128)
    for s in range(program.num_steps):
        circuit, inputs = program.step_inputs(s)
        w = np.zeros(degree + 1, dtype=np.complex128)
        if degree >= 1:
            w[1] = psi[program.steps[s].doc]
        out = interpret.evaluate_series(circuit, {**state, **inputs, WEIGHT: w}, degree)
        losses[s] = out.pop(LOSS)
        state = out
    return state, losses


def output(program: Program, state: Mapping[str, np.ndarray], test: Any, degree: int | None = None):
    """The program's output (test loss) for final parameters `state` on one test input."""
    key, inputs = program.encode_test(test)
    circuit = program.output_circuits[key]
    params = {p: state[p] for p in program.params}
    if degree is None:
        return interpret.evaluate(circuit, {**params, **inputs})[LOSS]
    return interpret.evaluate_series(circuit, {**params, **inputs}, degree)[LOSS]
