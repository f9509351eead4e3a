"""The higher-order (series) rules compiled code uses, one entry per rule name.

An op's registry entry names its rule (``Code.series``); several ops share one
(``take`` serves transpose, slice, pad and broadcast; ``ode`` serves every
f with f' = P(f)).  Each rule gives the call of its ``h_*`` kernel in
``compiler/kernels.py`` (any degree), optionally its fused form
(``compiler/series_fusion.py``, unrolled for a fixed degree) and which
order-0 values the rule reads.  Kernel and fused form compute the same
recurrence in the same order, so they give the same bits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from circuitsketch.ir import IRError
from compiler import series_fusion as F

HARGS = "code, r, B, K"

# (operand order-0 arrays, operand hi arrays ('' = not a series), result order-0 array,
# result hi array) -> the kernel call
Call = Callable[[list[str], list[str], str, str], str]


def _none(hi: Sequence[bool]) -> tuple[tuple[int, ...], bool]:
    return (), False


@dataclass(frozen=True)
class SeriesRule:
    call: Call
    fused: F.Rule | None = None
    # (which operands are series) -> (operands whose order 0 the rule reads, reads its own)
    needs0: Callable[[Sequence[bool]], tuple[tuple[int, ...], bool]] = _none
    # a kernel of one series operand reads it from HA even when it is the second operand
    first_series_in_ha: bool = False


def _add(x, h, z, hz):
    if h[0] and h[1]:
        return f"k.h_add({h[0]}, {h[1]}, {hz}, {HARGS})"
    return f"k.h_copy({h[0] or h[1]}, {hz}, {HARGS})"


def _sub(x, h, z, hz):
    if h[0] and h[1]:
        return f"k.h_sub({h[0]}, {h[1]}, {hz}, {HARGS})"
    return f"k.h_copy({h[0]}, {hz}, {HARGS})" if h[0] else f"k.h_neg({h[1]}, {hz}, {HARGS})"


def _mul(x, h, z, hz):
    if h[0] and h[1]:
        return f"k.h_mul({x[0]}, {h[0]}, {x[1]}, {h[1]}, {hz}, {HARGS})"
    return (
        f"k.h_scale({h[0]}, {x[1]}, {hz}, {HARGS})"
        if h[0]
        else f"k.h_scale({h[1]}, {x[0]}, {hz}, {HARGS})"
    )


def _div(x, h, z, hz):
    if h[1]:
        return f"k.h_div({h[0] or h[1]}, {x[1]}, {h[1]}, {z}, {hz}, {HARGS})"
    return f"k.h_div_const({h[0]}, {x[1]}, {hz}, {HARGS})"


def _mul_needs(hi):
    return ((0, 1) if hi[0] and hi[1] else (1,) if hi[0] else (0,)), False


SERIES: dict[str, SeriesRule] = {
    "copy": SeriesRule(lambda x, h, z, hz: f"k.h_copy({h[0]}, {hz}, {HARGS})"),
    "add": SeriesRule(_add, F.add, first_series_in_ha=True),
    "sub": SeriesRule(_sub, F.sub, first_series_in_ha=True),
    "neg": SeriesRule(lambda x, h, z, hz: f"k.h_neg({h[0]}, {hz}, {HARGS})", F.neg),
    "mul": SeriesRule(_mul, F.mul, _mul_needs),
    "div": SeriesRule(_div, F.div, lambda hi: ((1,), hi[1])),
    "exp": SeriesRule(lambda x, h, z, hz: f"k.h_exp({h[0]}, {z}, {hz}, {HARGS})", F.exp,
                      lambda hi: ((), True)),
    "log": SeriesRule(lambda x, h, z, hz: f"k.h_log({x[0]}, {h[0]}, {hz}, {HARGS})", F.log,
                      lambda hi: ((0,), False)),
    "pow": SeriesRule(lambda x, h, z, hz: f"k.h_pow({x[0]}, {h[0]}, {z}, {hz}, {HARGS}, cst)",
                      F.power, lambda hi: ((0,), True)),
    "erf": SeriesRule(lambda x, h, z, hz: f"k.h_erf({x[0]}, {h[0]}, {hz}, {HARGS})"),
    "ode": SeriesRule(lambda x, h, z, hz: f"k.h_ode({h[0]}, {z}, {hz}, {HARGS}, cst)", F.ode,
                      lambda hi: ((), True)),
    "reduce_sum": SeriesRule(lambda x, h, z, hz: f"k.h_reduce_sum({h[0]}, {hz}, {HARGS}, tab)"),
    "matmul": SeriesRule(lambda x, h, z, hz: (
        f"k.h_matmul({x[0]}, {h[0] or h[1]}, {x[1]}, {h[1] or h[0]}, {hz}, {HARGS})")),
    "gather": SeriesRule(lambda x, h, z, hz: f"k.h_gather({h[0]}, {x[1]}, {hz}, {HARGS})"),
    "scatter_add": SeriesRule(
        lambda x, h, z, hz: f"k.h_scatter_add({h[0]}, {x[1]}, {hz}, {HARGS})"),
    "where": SeriesRule(lambda x, h, z, hz: (
        f"k.h_where({x[0]}, {h[1] or h[2]}, {h[2] or h[1]}, {hz}, {HARGS})")),
    "take": SeriesRule(lambda x, h, z, hz: f"k.h_take({h[0]}, {hz}, {HARGS}, tab)"),
}


def series_rule(name: str | None, op_name: str) -> SeriesRule:
    """The rule an op names (IRError naming the op when it has none)."""
    rule = SERIES.get(name) if name is not None else None
    if rule is None:
        raise IRError(f"no series code for op {op_name!r} (rule {name!r})")
    return rule
