"""The plain numpy interpreter of the IR: the living definition of every op.

``evaluate`` runs a circuit on concrete arrays (float64, or complex128 for a
complex step) with each op's registry ``eval``; ``evaluate_series`` runs it
on truncated power series (arrays of shape (K+1, *shape)) with each op's
``series`` rule.  Both are slow and obvious: they are the oracle that compiled
kernels are tested against, and what constant folding calls.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from circuitsketch.ir import Circuit, IRError, Op, opdef
from circuitsketch.series_math import constant_series

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
            env[i] = np.asarray(opdef(node.op).eval([env[j] for j in node.inputs], node))
    return {name: env[nid] for name, nid in c.outputs.items()}


def evaluate_series(c: Circuit, inputs: Mapping[str, object], degree: int) -> dict[str, np.ndarray]:
    """Run c on truncated power series of the given degree (complex128).

    A float input may be given as a plain array (a constant series) or as an
    array of shape (degree+1, *shape) of normalised Taylor coefficients.
    Float outputs come back with shape (degree+1, *shape).
    """
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
        elif node.dtype != "float" and all(c.nodes[j].dtype != "float" for j in node.inputs):
            # integer or boolean data moved around (a minibatch's token ids): no series
            env[i] = np.asarray(opdef(node.op).eval([env[j] for j in node.inputs], node))
        else:
            env[i] = opdef(node.op).series([env[j] for j in node.inputs], node, degree)
    return {name: env[nid] for name, nid in c.outputs.items()}
