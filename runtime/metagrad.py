"""Exact first-order influence: reverse mode backwards through the whole training run.

g = dF/dw at w = 0 (F = test loss after training, w the data weights) is one
reverse pass: the cotangent of the state is carried from step T-1 down to 0
through the transposed step circuit (``grad.reverse_step``), and each step
adds its weight cotangent to g[doc].  Memory: the forward trajectory is
stored whole (T states of S floats; 100 MB for microgpt at T = 1000), not
recomputed from checkpoints.  Both loops run in compiled code (degree 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from circuitsketch import interpret
from circuitsketch.grad import grad, reverse_step
from circuitsketch.program import LOSS, WEIGHT, Program, Step
from compiler.compiled import CompiledProgram

FWD = "fwd."


@dataclass(frozen=True)
class _NoSchedule:
    """The reverse run's per-step scalars are already in each step's data."""

    def schedule(self, step: int, num_steps: int) -> dict[str, float]:
        return {}

    def buffers(self, name: str) -> tuple[str, ...]:
        return ()


def trajectory(cp: CompiledProgram, weights=None) -> np.ndarray:
    """States before every step, (T+1, S): row s is the state step s reads."""
    T = cp.program.num_steps
    traj = np.empty((T + 1, cp.state_size))
    traj[-1], _ = cp.train(weights, trajectory=traj[:T])
    return traj


def reverse_program(program: Program, cp: CompiledProgram, traj: np.ndarray) -> Program:
    """The reverse run as a Program: its state is the cotangent of the forward state.

    Its initial state is a placeholder: each test input supplies its own
    (``Metagradient.__call__``).
    """
    names = list(program.init_state)
    T = program.num_steps
    steps = []
    for s in range(T - 1, -1, -1):
        fwd = cp.unpack_state(traj[s])
        step = program.steps[s]
        data = {**step.data, **program.optimizer.schedule(s, T), **{FWD + n: fwd[n] for n in names}}
        steps.append(Step(step.key, step.doc, data))
    circuits = {k: reverse_step(c, names, WEIGHT, FWD) for k, c in program.step_circuits.items()}
    return Program(
        name=f"{program.name}.reverse",
        init_state={n: np.zeros_like(program.init_state[n]) for n in names},
        params=tuple(names),
        step_circuits=circuits,
        output_circuits={},
        steps=steps,
        num_docs=program.num_docs,
        optimizer=_NoSchedule(),
        encode_test=program.encode_test,
        meta=dict(program.meta),
    )


class Metagradient:
    """dF/dw for any test input, for one training run (program, weights).

    Building it runs the forward pass once (storing the trajectory) and
    prepares the compiled reverse run; each call then costs one reverse run.
    """

    def __init__(self, program: Program, weights=None):
        self.program = program
        self.weights = weights
        self.forward = CompiledProgram(program, 0)
        self.traj = trajectory(self.forward, weights)
        self.reverse = CompiledProgram(reverse_program(program, self.forward, self.traj), 0)
        self.docs = np.array([st.doc for st in self.reverse.program.steps])

    def seed(self, test) -> np.ndarray:
        """The cotangent of the final state: dF/dparams, zero for optimizer buffers."""
        prog = self.program
        final = self.forward.unpack_state(self.traj[-1])
        key, test_inputs = prog.encode_test(test)
        out_grad = grad(prog.output_circuits[key], LOSS, list(prog.params))
        g = interpret.evaluate(out_grad, {**{p: final[p] for p in prog.params}, **test_inputs})
        seed = np.zeros(self.forward.state_size)
        for name, (off, n) in self.forward.state_layout.items():
            if name in prog.params:
                seed[off : off + n] = np.ravel(g[f"grad_{name}"])
        return seed

    def __call__(self, test) -> np.ndarray:
        _, per_step = self.reverse.train(self.weights, state=self.seed(test))
        g = np.zeros(self.program.num_docs)
        np.add.at(g, self.docs, per_step)
        return g


def metagradient(program: Program, test, weights=None) -> np.ndarray:
    """dF/dw (N,) at the given weights (default 0) for the test loss F on `test`."""
    return Metagradient(program, weights)(test)
