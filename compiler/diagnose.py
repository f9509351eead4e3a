"""Find where a computation first went non-finite, with the reference interpreter.

Compiled code only notices a blow-up at the end of a step; this replays that
one step node by node to name the equation (op, scope, shape) that made the
first infinity or NaN out of finite operands.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from circuitsketch.interpret import check_inputs
from circuitsketch.ir import Circuit, Family, Op, opdef
from circuitsketch.series_math import constant_series


class NonFiniteError(FloatingPointError):
    """A value (or a series coefficient) became infinite or NaN."""


def _finite(x: np.ndarray) -> bool:
    return x.dtype.kind not in "fc" or bool(np.all(np.isfinite(x)))


def locate_nonfinite(c: Circuit, inputs: Mapping[str, object], degree: int | None) -> str:
    """Describe the first equation whose output is non-finite while its operands are finite."""
    values = check_inputs(c, inputs, degree)
    env: list[np.ndarray] = []
    with np.errstate(all="ignore"):
        for i, node in c:
            if node.op is Op.INPUT:
                v = np.asarray(values[node.attrs[0]])
                if degree is not None and node.dtype == "float" and v.shape == node.shape:
                    v = constant_series(v, degree)
                env.append(v)
                continue
            if node.op is Op.CONST:
                v = c.consts[i]
                env.append(
                    constant_series(v, degree)
                    if degree is not None and node.dtype == "float"
                    else v
                )
                continue
            ins = [env[j] for j in node.inputs]
            try:
                entry = opdef(node.op)
                out = (
                    entry.eval(ins, node) if degree is None else entry.series(ins, node, degree)
                )
            except (ValueError, ZeroDivisionError) as e:
                return f"node {c.format_node(i)} failed: {e}"
            out = np.asarray(out)
            env.append(out)
            source = opdef(node.op).family is Family.SOURCE
            if not source and not _finite(out) and all(map(_finite, ins)):
                bad = np.argwhere(~np.isfinite(out))[0]
                where = "coefficient of order " + str(bad[0]) if degree is not None else "element"
                return (
                    f"node {c.format_node(i)} produced a non-finite value "
                    f"({where}, index {tuple(int(b) for b in bad)})"
                )
    return "no single node produced it from finite operands (state may already be non-finite)"
