"""The run-time data of a generated module: instruction rows, int and float tables.

Generated code holds no offsets, sizes or constants: each equation's row of
the instruction table ``code`` holds them (columns in ``compiler/layout.py``),
index maps and integer constants live in ``tab`` and float constants in
``cst``.  So every kernel is compiled once for all circuits and call sites.
``loops`` maps the body of each generated loop (fused chains, elementwise ops
without a library kernel) to its function name, so equal loops are defined
once per module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from compiler.layout import WIDTH


@dataclass
class Tables:
    """Run-time data of a module: instruction rows, int maps/masks, float constants."""

    rows: list[list[int]] = field(default_factory=list)
    ints: list[np.ndarray] = field(default_factory=list)
    floats: list[np.ndarray] = field(default_factory=list)
    int_size: int = 0
    float_size: int = 0
    loops: dict[str, str] = field(default_factory=dict)  # generated loop body -> its name

    def add_int(self, arr: np.ndarray) -> int:
        a = np.ascontiguousarray(arr, dtype=np.int64).ravel()
        self.ints.append(a)
        self.int_size += a.size
        return self.int_size - a.size

    def add_float(self, arr) -> int:
        a = np.ascontiguousarray(arr, dtype=np.float64).ravel()
        self.floats.append(a)
        self.float_size += a.size
        return self.float_size - a.size

    def add_row(self, values: Mapping[int, int]) -> int:
        row = [-1] * WIDTH
        for col, v in values.items():
            row[col] = int(v)
        self.rows.append(row)
        return len(self.rows) - 1

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        instr = np.array(self.rows or [[-1] * WIDTH], dtype=np.int64)
        ints = np.concatenate(self.ints) if self.ints else np.zeros(1, np.int64)
        floats = np.concatenate(self.floats) if self.floats else np.zeros(1, np.float64)
        return instr, ints, floats
