"""A/B of two settings of the compiler, both built in one process and timed in turn.

This machine's speed drifts by more than most changes are worth, even between two
processes started a minute apart, so a change is measured here: each variant sets
module attributes (``module.NAME=value``, a Python literal) before its program is
generated, and again before each of its timed runs (for settings read at run
time, like ``compiler.compiled.PASS_ORDERS``); the runs alternate.  The variants'
results are checked to be the same bits.  Example (from the repository root):

    python bench/ab_step.py --degree 3 compiler.compiled.PASS_ORDERS=12 \\
        compiler.compiled.PASS_ORDERS=48

Kernel constants (``compiler.kernels``) are compiled into cached code and cannot
differ within one process: compare those with alternating processes instead.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_setting(text: str) -> tuple[object, str, object]:
    """'package.module.NAME=value' -> (module, NAME, value)."""
    target, sep, value = text.partition("=")
    module_name, _, attr = target.rpartition(".")
    if not sep or not module_name:
        raise SystemExit(f"setting {text!r}: expected module.NAME=value")
    module = importlib.import_module(module_name)
    if not hasattr(module, attr):
        raise SystemExit(f"setting {text!r}: {module_name} has no attribute {attr!r}")
    return module, attr, ast.literal_eval(value)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("variant", nargs=2, help="module.NAME=value[,module.NAME=value...]")
    ap.add_argument("--degree", type=int, default=3)
    ap.add_argument("--directions", type=int, default=8)
    ap.add_argument("--steps", type=int, default=200, help="steps per timed run")
    ap.add_argument("--pairs", type=int, default=5)
    args = ap.parse_args()
    from bench.bench_compiler import setting
    from circuitsketch.models import microgpt as m
    from compiler.compiled import CompiledProgram

    variants = [[parse_setting(s) for s in v.split(",")] for v in args.variant]
    saved = {(mod, attr): getattr(mod, attr) for v in variants for mod, attr, _ in v}

    def apply(v) -> None:
        for (mod, attr), value in saved.items():
            setattr(mod, attr, value)
        for mod, attr, value in v:
            setattr(mod, attr, value)

    prog = m.build(setting(1000))
    rng = np.random.default_rng(1)
    B, K = args.directions, args.degree
    psi = rng.normal(size=(B, 1000)) + 1j * rng.normal(size=(B, 1000))
    programs = []
    for v in variants:
        apply(v)
        cp = CompiledProgram(prog, K)
        keys = [int(k) for k in cp.keys]  # compile every bucket's step before timing
        cp.train_series(psi, stop=1 + max(keys.index(k) for k in set(keys)))
        programs.append(cp)
    first = []
    for v, cp in zip(variants, programs, strict=True):
        apply(v)
        first.append(cp.train_series(psi, stop=20))
    for a, b in zip(*first, strict=True):
        if not np.array_equal(a, b):
            print("note: the two variants' results differ (not the same bits)")
            break
    times: list[list[float]] = [[], []]
    for _ in range(args.pairs):
        for i, (v, cp) in enumerate(zip(variants, programs, strict=True)):
            apply(v)
            t = time.perf_counter()
            cp.train_series(psi, stop=args.steps)
            times[i].append((time.perf_counter() - t) / args.steps / B * 1e3)
    apply([])
    for name, t in zip(args.variant, times, strict=True):
        runs = " ".join(f"{x:.3f}" for x in t)
        print(f"{name}: K={K}, B={B}, ms/step/direction {runs}, median {np.median(t):.4f}")
    ratio = np.array(times[1]) / np.array(times[0])
    print("second / first, per pair:", " ".join(f"{x:.3f}" for x in ratio))


if __name__ == "__main__":
    main()
