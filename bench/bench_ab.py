"""Two checkouts' compiler, timed in alternation on this machine by CPU time.

Run from the repository root:
    python bench/bench_ab.py OLD_CHECKOUT NEW_CHECKOUT [--rounds 2]

On a shared 2-core machine wall-clock figures of one process move by 2x
between runs (other jobs take the cores), so `bench/bench_compiler.py` run
once per side cannot show a 5% difference.  Here each round runs the old side
and then the new side (the other way round in odd rounds, so that a machine
slowing down over the run does not fall on one side), each a fresh process
importing its own checkout's code
(PYTHONPATH) with its own kernel cache (an old checkout may not key its cache
soundly), and every figure is process CPU time, which a busy machine inflates
far less: on bench_compiler's setting (1000 names, T = 1000) the real step, the
K = 3 and K = 6 steps per direction (8 directions), a cold compile of the real
and of the K = 3 program (CPU time of the compiling process and its children,
an empty cache), and loading the compiled K = 6 program from a warm cache.
With ``--real-sizes 4x128:1 4x64:8 ...`` also the real step of those model sizes
(layers x width, 4 heads) and batch sizes over one epoch of 1,000 names, as
``bench/bench_scale.py`` builds them; ``--only-sizes`` leaves out the rest.
Prints one JSON object with both sides' runs, medians and new / old.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

N_DOCS = 1000


def _cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def probe(what: str) -> dict:
    """Run in the child, inside one checkout: the figures of `what` (steps | cold0 | cold3)."""
    from bench.bench_compiler import setting
    from circuitsketch.models import microgpt as m
    from compiler.compiled import CompiledProgram

    if what.startswith("real:"):  # one model size and batch size
        from bench.bench_scale import build

        size, batch = what[5:].split(":")
        prog = build(tuple(int(x) for x in size.split("x")), int(batch), N_DOCS)
        cp0 = CompiledProgram(prog, 0)
        cp0.train(stop=2)
        return {f"real_ms_per_step_{what[5:]}": _best(cp0.train, 5, prog.num_steps)}
    t0 = time.process_time()
    prog = m.build(setting(N_DOCS))
    psi = np.random.default_rng(1).normal(size=(8, N_DOCS)) * (1 + 1j)
    if what.startswith("cold"):
        cp = CompiledProgram(prog, int(what[4:]))
        cp.train(stop=1) if cp.degree == 0 else cp.train_series(psi[:1], stop=1)
        return {}
    out = {}
    cp6 = CompiledProgram(prog, 6)
    cp6.train_series(psi, stop=1)
    out["load_k6_cpu_s"] = time.process_time() - t0

    cp0 = CompiledProgram(prog, 0)
    cp0.train(stop=2)
    out["real_ms_per_step"] = _best(cp0.train, 7, prog.num_steps)
    for K, steps in ((3, 300), (6, 100)):
        cp = cp6 if K == 6 else CompiledProgram(prog, K)
        keys = [int(k) for k in cp.keys]
        cp.train_series(psi, stop=1 + max(keys.index(k) for k in set(keys)))  # every bucket
        out[f"k{K}_ms_per_step_per_direction"] = _best(
            lambda cp=cp, steps=steps: cp.train_series(psi, stop=steps), 3, steps * 8
        )
    return out


def _best(fn, reps: int, per: float) -> float:
    """The least CPU time of `reps` calls of fn, in ms per `per`."""
    runs = []
    for _ in range(reps):
        t = time.process_time()
        fn()
        runs.append((time.process_time() - t) / per * 1e3)
    return min(runs)


def run_side(root: Path, cache: str, what: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(root), CIRCUITSKETCH_CACHE=cache, NUMBA_CACHE_DIR=cache)
    before = _cpu_children()
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--probe", what],
        env=env, cwd=root, check=True, capture_output=True, text=True,
    )  # fmt: skip
    got = json.loads(out.stdout)
    if what.startswith("cold"):
        got = {f"compile_cold_{what[4:]}_cpu_s": _cpu_children() - before}
    return got


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("old", type=Path, nargs="?")
    ap.add_argument("new", type=Path, nargs="?")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--real-sizes", nargs="*", default=[], metavar="LxW:B",
                    help="real steps of these sizes and batch sizes too (e.g. 4x128:1)")
    ap.add_argument("--only-sizes", action="store_true",
                    help="only the --real-sizes (no compiles, no default-size steps)")
    ap.add_argument("--probe", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.probe:
        print(json.dumps(probe(args.probe)))
        return
    sides = {"old": args.old.resolve(), "new": args.new.resolve()}
    warm = {k: tempfile.mkdtemp(prefix=f"ab_{k}_") for k in sides}
    probes = [f"real:{s}" for s in args.real_sizes] + ([] if args.only_sizes else ["steps"])
    colds = () if args.only_sizes else ("cold0", "cold3")
    for k, root in sides.items():  # fill the warm caches (not timed)
        for what in probes:
            run_side(root, warm[k], what)
    runs: dict[str, list[dict]] = {k: [] for k in sides}
    for r in range(args.rounds):
        order = list(sides.items())
        for k, root in order if r % 2 == 0 else order[::-1]:  # ABBA: a drift falls on both
            figures: dict = {}
            for what in colds:
                cold = tempfile.mkdtemp(prefix="ab_cold_")
                figures.update(run_side(root, cold, what))
                shutil.rmtree(cold, ignore_errors=True)
            for what in probes:
                figures.update(run_side(root, warm[k], what))
            runs[k].append(figures)
            print(f"round {r + 1}/{args.rounds}: {k} {figures}", file=sys.stderr, flush=True)
    for d in warm.values():
        shutil.rmtree(d, ignore_errors=True)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench.machine import describe

    report: dict = {
        "date": str(date.today()),
        "machine": describe(),
        "checkouts": {k: str(v) for k, v in sides.items()},
        "rounds": args.rounds,
        "figures": {},
    }
    for name in runs["old"][0]:
        vals = {k: [f[name] for f in runs[k]] for k in sides}
        med = {k: float(np.median(v)) for k, v in vals.items()}
        report["figures"][name] = {**med, "runs": vals, "new_over_old": med["new"] / med["old"]}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
