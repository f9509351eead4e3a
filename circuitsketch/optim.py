"""Optimizers as traced programs: their update is ordinary circuit arithmetic.

Each optimizer names its state buffers, traces its update, and supplies the
per-step scalar inputs (learning rate, bias corrections) as plain numbers so
that the step circuit is the same for every step.  ``clip_norm`` clips all
gradients together to that global 2-norm before the update
(``circuitsketch.nn.clip_by_global_norm``, traced into the step).

Learning-rate schedules (``learning_rate``): "constant", "linear" (decay to 0
at the end of training: microgpt's) and "cosine", each after ``warmup`` steps
of linear warmup.  ``weight_decay`` is decoupled from the gradient (AdamW's):
each step multiplies the parameters by 1 - lr_s * weight_decay before the
update, so the decay follows the schedule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from circuitsketch.ops.elementwise import sqrt
from circuitsketch.tracing import Traced

SCHEDULES = ("constant", "linear", "cosine")


def learning_rate(
    base: float, schedule: str, warmup: int, step: int, num_steps: int
) -> float:
    """The rate of step `step` (0-based) of `num_steps`.

    During the first `warmup` steps it rises linearly, base * (s + 1) / warmup;
    then, with p = (s - warmup) / (num_steps - warmup) the progress after it,
    "constant" is base, "linear" base * (1 - p), "cosine" base * (1 + cos(pi p)) / 2.
    With no warmup, "linear" is exactly microgpt's base * (1 - s / T).
    """
    if step < warmup:
        return base * ((step + 1) / warmup)
    if schedule == "constant":
        return base
    # no warmup: exactly s / T, microgpt's linear decay
    progress = step / num_steps if warmup == 0 else (step - warmup) / (num_steps - warmup)
    if schedule == "linear":
        return base * (1.0 - progress)
    if schedule == "cosine":
        return base * (0.5 * (1.0 + math.cos(math.pi * progress)))
    raise ValueError(f"unknown learning-rate schedule {schedule!r} (one of {', '.join(SCHEDULES)})")


class _Schedule:
    """The learning-rate settings Adam and SGD share (``lr_schedule`` None: from ``decay``)."""

    lr: float
    decay: bool
    lr_schedule: str | None
    warmup: int
    weight_decay: float

    def _check(self) -> None:
        if self.schedule_kind not in SCHEDULES:
            raise ValueError(f"unknown learning-rate schedule {self.schedule_kind!r} "
                             f"(one of {', '.join(SCHEDULES)})")
        if int(self.warmup) != self.warmup or self.warmup < 0:
            raise ValueError(f"warmup must be an integer >= 0, got {self.warmup!r}")
        if not self.weight_decay >= 0.0:
            raise ValueError(f"weight decay must be >= 0, got {self.weight_decay!r}")
        clip = getattr(self, "clip_norm", None)
        if clip is not None and not clip > 0.0:
            raise ValueError(f"clip norm must be > 0, got {clip!r}")

    @property
    def schedule_kind(self) -> str:
        """The schedule in use: ``lr_schedule``, or "linear" / "constant" from ``decay``."""
        if self.lr_schedule is not None:
            return self.lr_schedule
        return "linear" if self.decay else "constant"

    def rate(self, step: int, num_steps: int) -> float:
        return learning_rate(self.lr, self.schedule_kind, int(self.warmup), step, num_steps)

    def decayed(self, p: Traced, hyper: dict[str, Traced]) -> Traced:
        """p * (1 - lr_s * weight_decay): the decoupled weight decay (p itself without)."""
        if not self.weight_decay:
            return p
        return p * (1.0 - hyper["lr"] * self.weight_decay)


@dataclass(frozen=True)
class Adam(_Schedule):
    """Adam with eps inside the square root and a linearly decaying rate (microgpt's spec).

    With ``weight_decay`` > 0 it is AdamW (decoupled decay); ``lr_schedule``
    ("constant" | "linear" | "cosine"), when given, overrides ``decay``.
    """

    lr: float = 0.01
    beta1: float = 0.85
    beta2: float = 0.99
    eps: float = 1e-3
    decay: bool = True
    clip_norm: float | None = None  # clip the gradients to this global 2-norm first
    weight_decay: float = 0.0
    lr_schedule: str | None = None
    warmup: int = 0

    def __post_init__(self) -> None:
        self._check()

    def buffers(self, name: str) -> tuple[str, ...]:
        return (f"adam_m.{name}", f"adam_v.{name}")

    def schedule(self, step: int, num_steps: int) -> dict[str, float]:
        lr = self.rate(step, num_steps)
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
        p = self.decayed(p, hyper) - hyper["lr"] * mhat / sqrt(vhat + self.eps)
        return p, (m, v)


@dataclass(frozen=True)
class SGD(_Schedule):
    """SGD with (heavy-ball, or with ``nesterov`` Nesterov) momentum, as PyTorch's.

    velocity = momentum * velocity + g; the step is lr * velocity, or with
    Nesterov lr * (g + momentum * velocity).  Rate schedules and decoupled
    weight decay as Adam's.
    """

    lr: float = 0.1
    momentum: float = 0.9
    decay: bool = False
    clip_norm: float | None = None  # clip the gradients to this global 2-norm first
    nesterov: bool = False
    weight_decay: float = 0.0
    lr_schedule: str | None = None
    warmup: int = 0

    def __post_init__(self) -> None:
        self._check()
        if self.nesterov and not self.momentum:
            raise ValueError("Nesterov momentum needs a momentum > 0")

    def buffers(self, name: str) -> tuple[str, ...]:
        return (f"sgd_velocity.{name}",) if self.momentum else ()

    def schedule(self, step: int, num_steps: int) -> dict[str, float]:
        return {"lr": self.rate(step, num_steps)}

    def update(self, p: Traced, g: Traced, bufs: tuple[Traced, ...], hyper: dict[str, Traced]):
        p = self.decayed(p, hyper)
        if not self.momentum:
            return p - hyper["lr"] * g, ()
        (vel,) = bufs
        vel = self.momentum * vel + g
        if self.nesterov:
            return p - hyper["lr"] * (g + self.momentum * vel), (vel,)
        return p - hyper["lr"] * vel, (vel,)


def init_buffers(opt, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Zero state buffers of an optimizer for the given parameters."""
    return {b: np.zeros_like(v) for name, v in params.items() for b in opt.buffers(name)}
