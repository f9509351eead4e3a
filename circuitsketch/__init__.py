"""circuitsketch: answer "what if these training documents were left out?" without retraining.

Training programs are traced into arithmetic circuits (``trace``), differentiated
as an IR transformation (``grad``), and compiled to Taylor-mode kernels that
push truncated power series along random directions over the data weights.
"""

from circuitsketch.grad import grad, gradients
from circuitsketch.ir import Circuit, IRError, Op
from circuitsketch.optim import SGD, Adam
from circuitsketch.program import (
    Program,
    build_output_circuit,
    build_step_circuit,
    training_program,
)
from circuitsketch.tracing import (
    Input,
    Traced,
    TracingError,
    concat,
    erf,
    exp,
    gather,
    log,
    matmul,
    one_hot,
    pad,
    power,
    rsqrt,
    scatter_add,
    shift_max,
    sqrt,
    stack,
    trace,
    where,
)

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
    "build_output_circuit",
    "build_step_circuit",
    "concat",
    "erf",
    "exp",
    "gather",
    "grad",
    "gradients",
    "log",
    "matmul",
    "one_hot",
    "pad",
    "power",
    "rsqrt",
    "scatter_add",
    "shift_max",
    "sqrt",
    "stack",
    "trace",
    "training_program",
    "where",
]
