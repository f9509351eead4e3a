"""Optimizers as traced programs: their update is ordinary circuit arithmetic.

Each optimizer names its state buffers, traces its update, and supplies the
per-step scalar inputs (learning rate, bias corrections) as plain numbers so
that the step circuit is the same for every step.  ``clip_norm`` clips all
gradients together to that global 2-norm before the update
(``circuitsketch.nn.clip_by_global_norm``, traced into the step).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from circuitsketch.ops.elementwise import sqrt
from circuitsketch.tracing import Traced


@dataclass(frozen=True)
class Adam:
    """Adam with eps inside the square root and a linearly decaying rate (microgpt's spec)."""

    lr: float = 0.01
    beta1: float = 0.85
    beta2: float = 0.99
    eps: float = 1e-3
    decay: bool = True
    clip_norm: float | None = None  # clip the gradients to this global 2-norm first

    def buffers(self, name: str) -> tuple[str, ...]:
        return (f"adam_m.{name}", f"adam_v.{name}")

    def schedule(self, step: int, num_steps: int) -> dict[str, float]:
        lr = self.lr * (1.0 - step / num_steps) if self.decay else self.lr
        return {
            "lr": lr,
            "bias1": 1.0 - self.beta1 ** (step + 1),
            "bias2": 1.0 - self.beta2 ** (step + 1),
        }

    def update(self, p: Traced, g: Traced, bufs: tuple[Traced, ...], hyper: dict[str, Traced]):
        m, v = bufs
        m = self.beta1 * m + (1.0 - self.beta1) * g
        v = self.beta2 * v + (1.0 - self.beta2) * (g * g)
        mhat = m / hyper["bias1"]
        vhat = v / hyper["bias2"]
        p = p - hyper["lr"] * mhat / sqrt(vhat + self.eps)
        return p, (m, v)


@dataclass(frozen=True)
class SGD:
    """SGD with (heavy-ball) momentum and a constant or linearly decaying rate."""

    lr: float = 0.1
    momentum: float = 0.9
    decay: bool = False
    clip_norm: float | None = None  # clip the gradients to this global 2-norm first

    def buffers(self, name: str) -> tuple[str, ...]:
        return (f"sgd_velocity.{name}",) if self.momentum else ()

    def schedule(self, step: int, num_steps: int) -> dict[str, float]:
        return {"lr": self.lr * (1.0 - step / num_steps) if self.decay else self.lr}

    def update(self, p: Traced, g: Traced, bufs: tuple[Traced, ...], hyper: dict[str, Traced]):
        if not self.momentum:
            return p - hyper["lr"] * g, ()
        (vel,) = bufs
        vel = self.momentum * vel + g
        return p - hyper["lr"] * vel, (vel,)


def init_buffers(opt, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Zero state buffers of an optimizer for the given parameters."""
    return {b: np.zeros_like(v) for name, v in params.items() for b in opt.buffers(name)}
