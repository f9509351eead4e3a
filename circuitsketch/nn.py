"""Composite functions written from primitives at the trace level (no ops of their own).

Each is an ordinary traced expression, so its gradient and series come from
its primitives' rules, and compiled code fuses its elementwise parts by the
passes.  The piecewise ones (relu, abs, maximum, minimum, clip,
clip_by_global_norm) select with comparisons of real order-0 parts: their
series are exact wherever the order-0 point is off a kink (see
``circuitsketch/ops/piecewise.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from circuitsketch import tracing as T
from circuitsketch.ops import elementwise as E
from circuitsketch.ops import piecewise as P
from circuitsketch.ops import structure as S
from circuitsketch.tracing import Traced

__all__ = [
    "abs",
    "clip",
    "clip_by_global_norm",
    "cross_entropy",
    "gelu",
    "layer_norm",
    "log_softmax",
    "logsumexp",
    "maximum",
    "minimum",
    "relu",
    "rmsnorm",
    "softmax",
]


def relu(x: Traced) -> Traced:
    """max(x, 0); at x = 0 the value and series are those of 0."""
    return T.where(x > 0.0, x, 0.0)


def abs(x: Traced) -> Traced:
    """|x|; at x = 0 the series is that of x."""
    return T.where(x >= 0.0, x, -x)


def maximum(a, b) -> Traced:
    """Elementwise max; where a == b the series is a's."""
    return T.where(a >= b, a, b)


def minimum(a, b) -> Traced:
    """Elementwise min; where a == b the series is a's."""
    return T.where(a <= b, a, b)


def clip(x: Traced, lo: float | Traced, hi: float | Traced) -> Traced:
    """x limited to [lo, hi]."""
    return minimum(maximum(x, lo), hi)


def clip_by_global_norm(grads: Sequence[Traced], max_norm: float) -> list[Traced]:
    """Scale all arrays by min(1, max_norm / ||grads||), ||.|| the 2-norm of them all."""
    total = None
    for g in grads:
        s = (g * g).sum()
        total = s if total is None else total + s
    norm = E.sqrt(total)
    scale = T.where(norm > max_norm, max_norm / norm, 1.0)
    return [g * scale for g in grads]


def gelu(x: Traced) -> Traced:
    """The exact GELU, x * Phi(x), through erf."""
    return x * (0.5 * (1.0 + E.erf(x * (1.0 / math.sqrt(2.0)))))


def rmsnorm(x: Traced, eps: float = 1e-5) -> Traced:
    """x / sqrt(mean(x^2) + eps) over the last axis."""
    return x * E.rsqrt((x * x).mean(axis=-1, keepdims=True) + eps)


def layer_norm(x: Traced, eps: float = 1e-5) -> Traced:
    """(x - mean) / sqrt(var + eps) over the last axis (no affine part)."""
    centred = x - x.mean(axis=-1, keepdims=True)
    return centred * E.rsqrt((centred * centred).mean(axis=-1, keepdims=True) + eps)


def logsumexp(x: Traced, axis: int = -1, keepdims: bool = False) -> Traced:
    """log sum exp over an axis, shifted by the order-0 max for stability."""
    shift = P.shift_max(x, axis=axis)
    out = E.log(E.exp(x - shift).sum(axis=axis, keepdims=True)) + shift
    return out if keepdims else out.reshape(tuple(s for i, s in enumerate(out.shape)
                                                  if i != axis % x.ndim))


def log_softmax(x: Traced, axis: int = -1) -> Traced:
    """x - logsumexp(x) over an axis."""
    z = x - P.shift_max(x, axis=axis)
    return z - E.log(E.exp(z).sum(axis=axis, keepdims=True))


def softmax(x: Traced, axis: int = -1) -> Traced:
    """exp(x) / sum exp(x) over an axis, shifted by the order-0 max."""
    e = E.exp(x - P.shift_max(x, axis=axis))
    return e / e.sum(axis=axis, keepdims=True)


def cross_entropy(logits: Traced, targets: Traced) -> Traced:
    """Summed -log softmax(logits)[target] over rows; a target of -1 contributes 0."""
    logp = log_softmax(logits, axis=-1)
    return -(S.one_hot(targets, logits.shape[-1]) * logp).sum()


