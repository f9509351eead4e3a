"""Per-kernel profile of one compiled real training step of microgpt (length bucket 8).

Each kernel call of the generated step is re-run 200 times in its own compiled
loop and timed; the table groups the time by kernel and by part of the step
(forward, gradient, Adam).  Run from the repository root:
    python bench/profile_step.py
"""

from __future__ import annotations

import collections
import re
import sys
import time
from pathlib import Path

import numpy as np
from numba import njit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _repeat(fn):
    @njit
    def loop(n, *a):
        for _ in range(n):
            fn(*a)

    return loop


def main() -> None:
    from circuitsketch.models import microgpt as m
    from compiler import kernels as k
    from compiler.compiled import CompiledProgram

    docs = m.read_docs(m.corpus_path())
    docs = [docs[i] for i in np.random.default_rng(0).permutation(len(docs))[:1000]]
    cp = CompiledProgram(m.build(docs), 0)
    s0, _ = cp.train(stop=50)
    s = next(i for i in range(50, 1000) if cp.keys[i] == 0)
    src = cp.source
    body = src[src.index("def step_0_part0") : src.index("def step_0(")]
    r = int(re.search(r"r = code.shape\[0\] \* 0 \+ (\d+)", src[src.index("def step_0(") :])[1])
    env = {"s_in": s0, "s_out": np.empty_like(s0), "ws": np.zeros(cp.ws_size), "tab": cp.tab,
           "cst": cp.cst, "ii": cp.II[s], "ff": cp.FF[s], "w0": 0.0, "res0": np.zeros(1),
           "code": cp.instr}
    loops: dict = {}
    cost: collections.Counter = collections.Counter()
    count: collections.Counter = collections.Counter()
    comment = ""
    for line in (x.strip() for x in body.splitlines()):
        if line.startswith("#"):
            comment = line
            continue
        if not line.startswith("k."):
            continue
        call = line.split("; ")[0]
        name = call[2 : call.index("(")]
        args = [a.strip() for a in call[call.index("(") + 1 : -1].split(",")]
        vals = [env.get(a, r) for a in args]
        if name not in loops:
            loops[name] = _repeat(getattr(k, name))
        loops[name](1, *vals)
        t = time.perf_counter()
        loops[name](200, *vals)
        part = "adam" if "adam" in comment else "grad" if "grad" in comment else "forward"
        cost[f"{name}/{part}"] += (time.perf_counter() - t) / 200
        count[f"{name}/{part}"] += 1
        r += 1
    total = sum(cost.values())
    print(f"sum of kernel times: {total * 1e6:.1f} us per step")
    for key, c in cost.most_common(20):
        print(f"{key:22s} {count[key]:4d} calls {c * 1e6:8.2f} us {100 * c / total:5.1f}%")


if __name__ == "__main__":
    main()
