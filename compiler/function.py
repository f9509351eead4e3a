"""Compile a single circuit into a callable, for tests and for user circuits.

Float inputs and outputs all live in one flat state layout (inputs read from
s_in, outputs written to s_out); the inputs named in ``series`` carry
higher orders.  Used to test every generated kernel against the interpreter,
op by op and on whole circuits.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from circuitsketch.ir import Circuit, IRError
from compiler.diagnose import NonFiniteError, locate_nonfinite
from compiler.layout import hi_block
from compiler.pipeline import Build, Unit, run
from compiler.pointers import AddressTables
from compiler.slots import Interface, workspace


def circuit_build(
    c: Circuit, degree: int = 0, series: Iterable[str] = (), optimize: bool = True,
    fused: bool = True,
) -> Build:
    """The pipeline's one unit for a circuit: float inputs, then outputs, in one flat
    state layout; int inputs in the int vector; the inputs in `series` carry series."""
    if "loss" in c.outputs:
        raise IRError("CompiledCircuit: rename the output 'loss' (reserved for step circuits)")
    layout: dict[str, tuple[int, int]] = {}
    ints: dict[str, tuple[int, int]] = {}
    off = ioff = 0
    for name, nid in c.inputs.items():
        node = c.nodes[nid]
        if node.dtype == "float":
            layout[name] = (off, node.size)
            off += node.size
        else:
            ints[name] = (ioff, node.size)
            ioff += node.size
    for name, nid in c.outputs.items():
        layout[name] = (off, c.nodes[nid].size)
        off += c.nodes[nid].size
    unit = Unit("f", c, Interface(layout, ints, {}, None), tuple(series), True)
    return Build([unit], degree, optimize, fused)


class CompiledCircuit:
    """c compiled at degree K (0: real) with the given inputs as series."""

    def __init__(
        self,
        c: Circuit,
        degree: int = 0,
        series: Iterable[str] = (),
        optimize: bool = True,
        fused: bool = True,
    ):
        self.build = run(circuit_build(c, degree, series, optimize, fused))
        (unit,) = self.build.units
        self.circuit, self.degree, self.series_inputs = unit.circuit, degree, unit.series_inputs
        self.layout, self.ints = dict(unit.iface.state), dict(unit.iface.ints)
        # an output named like an input takes over its name: sizes are where slots end
        self.size = max((o + n for o, n in self.layout.values()), default=0)
        self.int_size = max((o + n for o, n in self.ints.values()), default=0)
        self.act = unit.act
        self.source, self.module = self.build.source, self.build.module
        self.instr, self.tab, self.cst = self.build.tables.arrays()
        self.tables = AddressTables(self.module)

    def __call__(self, inputs: Mapping[str, np.ndarray], directions: int = 1):
        """Real mode: name -> array.  Series mode: inputs in `series` may be given
        as (B, K+1, *shape) coefficient arrays; outputs come back as (B, K+1, *shape)."""
        cc, K = self.circuit, self.degree
        s_in = np.zeros(max(self.size, 1))
        ii = np.zeros(max(self.int_size, 1), np.int64)
        B = directions
        h_in = np.zeros(max(B * K * self.size, 1), np.complex128)
        for name, nid in cc.inputs.items():
            node = cc.nodes[nid]
            v = np.asarray(inputs[name])
            if node.dtype != "float":
                off, n = self.ints[name]
                ii[off : off + n] = v.ravel()
                continue
            off, n = self.layout[name]
            if K and name in self.series_inputs and v.shape != node.shape:
                s_in[off : off + n] = v[0, 0].real.ravel()
                hi_block(h_in, B, K, off, n)[:] = v[:, 1:].reshape(B, K, n)
            else:
                s_in[off : off + n] = v.ravel()
        s_out = s_in.copy()
        h_out = h_in.copy()
        ws = workspace(self.module.f_WS)
        ws[:] = 0.0
        res0 = np.zeros(2)  # the output "loss", and what fused loops return (emit.py)
        if K:
            wh = workspace(B * K * self.module.f_WH, np.complex128)
            wh[:] = 0.0
            ok = self.tables.call("f", s_in, s_out, h_in, h_out, ws, wh, self.tab, self.cst,
                                  ii, np.zeros(1), 0.0, np.zeros(B, np.complex128), res0,
                                  np.zeros(B * K, np.complex128), self.instr, B, K)  # fmt: skip
        else:
            ok = self.tables.call("f", s_in, s_out, ws, self.tab, self.cst, ii, np.zeros(1), 0.0,
                                  res0, self.instr)
        if not ok:
            where = locate_nonfinite(cc, self._series_inputs_for_diagnosis(inputs, B), K or None)
            raise NonFiniteError(f"non-finite value: {where}")
        out = {}
        for name, nid in cc.outputs.items():
            off, n = self.layout[name]
            shape = cc.nodes[nid].shape
            if not K:
                out[name] = s_out[off : off + n].reshape(shape)
                continue
            series = np.empty((B, K + 1, n), np.complex128)
            series[:, 0] = s_out[off : off + n]
            series[:, 1:] = hi_block(h_out, B, K, off, n)
            out[name] = series.reshape((B, K + 1, *shape))
        return out

    def _series_inputs_for_diagnosis(self, inputs: Mapping[str, np.ndarray], B: int) -> dict:
        """Direction 0's inputs in the interpreter's form (series as (K+1, *shape))."""
        out = {}
        for name, v in inputs.items():
            v = np.asarray(v)
            node = self.circuit.nodes[self.circuit.inputs[name]]
            out[name] = (
                v[0] if self.degree and v.shape != node.shape and node.dtype == "float" else v
            )
        return out
