"""circuitsketch: answer "what if these training documents were left out?" without retraining.

Training programs are traced into arithmetic circuits (``trace``), differentiated
as an IR transformation (``grad``), and compiled to Taylor-mode kernels that
push truncated power series along random directions over the data weights.
"""

from circuitsketch import ops
from circuitsketch.grad import grad, gradients
from circuitsketch.ir import Circuit, IRError, Op
from circuitsketch.nn import (
    abs,
    clip,
    clip_by_global_norm,
    cross_entropy,
    gelu,
    layer_norm,
    log_softmax,
    logsumexp,
    maximum,
    minimum,
    relu,
    rmsnorm,
    softmax,
)
from circuitsketch.ops import *  # noqa: F403 - every primitive's function (ops.__all__)
from circuitsketch.optim import SGD, Adam
from circuitsketch.program import (
    Program,
    build_output_circuit,
    build_step_circuit,
    training_program,
)
from circuitsketch.tracing import Input, Traced, TracingError, matmul, trace, where

__all__ = [
    "SGD",
    "Adam",
    "Circuit",
    "IRError",
    "Input",
    "Op",
    "Program",
    "Traced",
    "TracingError",
    "abs",
    "build_output_circuit",
    "build_step_circuit",
    "clip",
    "clip_by_global_norm",
    "cross_entropy",
    "gelu",
    "grad",
    "gradients",
    "layer_norm",
    "log_softmax",
    "logsumexp",
    "matmul",
    "maximum",
    "minimum",
    "relu",
    "rmsnorm",
    "softmax",
    "trace",
    "training_program",
    "where",
    *ops.__all__,
]
