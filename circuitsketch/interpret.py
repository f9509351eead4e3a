"""The plain numpy interpreter of the IR: the living definition of every op.

``EVAL[op](ins, node)`` computes one equation on real (float64) or complex
arrays.  ``evaluate`` runs a circuit on concrete arrays; ``evaluate_series``
runs it on truncated power series (arrays of shape (K+1, *shape)) using the
Taylor rules of ``circuitsketch.taylor``.  Both are slow and obvious: they
are the oracle that compiled kernels are tested against, and what constant
folding calls.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np

from circuitsketch.ir import Circuit, IRError, Node, Op

_erf = np.frompyfunc(math.erf, 1, 1)


def _eval_erf(x: np.ndarray) -> np.ndarray:
    if np.iscomplexobj(x):
        raise IRError("erf of a complex array is not defined in real evaluation")
    return _erf(x).astype(np.float64)


def _scatter_add(vals: np.ndarray, idx: np.ndarray, rows: int) -> np.ndarray:
    out = np.zeros((rows, *vals.shape[1:]), dtype=vals.dtype)
    np.add.at(out, idx, vals)
    return out


def _check_index(idx: np.ndarray, rows: int, op: str) -> np.ndarray:
    if idx.size and (idx.min() < 0 or idx.max() >= rows):
        bad = int(idx[(idx < 0) | (idx >= rows)][0])
        raise IRError(f"{op}: index {bad} out of range for {rows} rows")
    return idx


EVAL: dict[Op, Callable[[list[np.ndarray], Node], np.ndarray]] = {
    Op.ADD: lambda x, n: x[0] + x[1],
    Op.SUB: lambda x, n: x[0] - x[1],
    Op.MUL: lambda x, n: x[0] * x[1],
    Op.DIV: lambda x, n: x[0] / x[1],
    Op.NEG: lambda x, n: -x[0],
    Op.EXP: lambda x, n: np.exp(x[0]),
    Op.LOG: lambda x, n: np.log(x[0]),
    Op.POW: lambda x, n: np.power(x[0], n.attrs[0]),
    Op.ERF: lambda x, n: _eval_erf(x[0]),
    Op.SUM: lambda x, n: np.sum(x[0], axis=n.attrs[0]),
    Op.MATMUL: lambda x, n: np.matmul(x[0], x[1]),
    Op.GATHER: lambda x, n: x[0][_check_index(x[1], x[0].shape[0], "gather")],
    Op.SCATTER_ADD: lambda x, n: _scatter_add(
        x[0], _check_index(x[1], n.attrs[0], "scatter_add"), n.attrs[0]
    ),
    Op.RESHAPE: lambda x, n: np.reshape(x[0], n.attrs[0]),
    Op.TRANSPOSE: lambda x, n: np.transpose(x[0], n.attrs[0]),
    Op.SLICE: lambda x, n: x[0][tuple(slice(a, b) for a, b in zip(*n.attrs, strict=True))],
    Op.PAD: lambda x, n: np.pad(x[0], list(zip(*n.attrs, strict=True))),
    Op.CONCAT: lambda x, n: np.concatenate(x, axis=n.attrs[0]),
    Op.BROADCAST: lambda x, n: np.broadcast_to(x[0], n.attrs[0]).copy(),
    Op.WHERE: lambda x, n: np.where(x[0], x[1], x[2]),
    Op.SHIFT_MAX: lambda x, n: np.max(np.real(x[0]), axis=n.attrs[0]),
    Op.ONE_HOT: lambda x, n: (x[0][..., None] == np.arange(n.attrs[0])).astype(np.float64),
}

_NP = {"float": np.float64, "int": np.int64, "bool": np.bool_}


def check_inputs(c: Circuit, inputs: Mapping[str, object], series_degree: int | None = None):
    """Validate names, shapes and dtypes of the values given for c's inputs."""
    missing = [name for name in c.inputs if name not in inputs]
    if missing:
        raise IRError(f"missing value for input {missing[0]!r}")
    extra = [name for name in inputs if name not in c.inputs]
    if extra:
        raise IRError(f"unknown input {extra[0]!r}")
    out = {}
    for name, nid in c.inputs.items():
        node = c.nodes[nid]
        value = np.asarray(inputs[name])
        shape = value.shape
        if series_degree is not None and node.dtype == "float" and value.shape != node.shape:
            shape = value.shape[1:]
            if value.shape[:1] != (series_degree + 1,):
                raise IRError(
                    f"input {name!r}: series of shape {value.shape}, "
                    f"expected ({series_degree + 1}, *{node.shape}) or {node.shape}"
                )
        if shape != node.shape:
            raise IRError(f"input {name!r}: shape {value.shape}, expected {node.shape}")
        if node.dtype != "float" and value.dtype.kind not in (
            "b" if node.dtype == "bool" else "iu"
        ):
            raise IRError(f"input {name!r}: dtype {value.dtype}, expected {node.dtype}")
        out[name] = value
    return out


def evaluate(
    c: Circuit, inputs: Mapping[str, object], dtype: type = np.float64
) -> dict[str, np.ndarray]:
    """Run c on concrete arrays (float64, or complex128 with dtype=np.complex128)."""
    values = check_inputs(c, inputs)
    env: list[np.ndarray | None] = [None] * len(c.nodes)
    for i, node in c:
        if node.op is Op.INPUT:
            v = values[node.attrs[0]]
            env[i] = v.astype(dtype) if node.dtype == "float" else v
        elif node.op is Op.CONST:
            env[i] = c.consts[i]
        else:
            env[i] = np.asarray(EVAL[node.op]([env[j] for j in node.inputs], node))
    return {name: env[nid] for name, nid in c.outputs.items()}


def evaluate_series(c: Circuit, inputs: Mapping[str, object], degree: int) -> dict[str, np.ndarray]:
    """Run c on truncated power series of the given degree (complex128).

    A float input may be given as a plain array (a constant series) or as an
    array of shape (degree+1, *shape) of normalised Taylor coefficients.
    Float outputs come back with shape (degree+1, *shape).
    """
    from circuitsketch.taylor import TAYLOR, constant_series

    values = check_inputs(c, inputs, degree)
    env: list[np.ndarray | None] = [None] * len(c.nodes)
    for i, node in c:
        if node.op is Op.INPUT:
            v = values[node.attrs[0]]
            if node.dtype == "float":
                v = v.astype(np.complex128) if v.shape != node.shape else constant_series(v, degree)
            env[i] = v
        elif node.op is Op.CONST:
            v = c.consts[i]
            env[i] = constant_series(v, degree) if node.dtype == "float" else v
        else:
            env[i] = TAYLOR[node.op]([env[j] for j in node.inputs], node, degree)
    return {name: env[nid] for name, nid in c.outputs.items()}
