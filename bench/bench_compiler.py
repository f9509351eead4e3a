"""Benchmark of the Taylor compiler on microgpt's 1000-document, 1000-step setting.

Run from the repository root:  python bench/bench_compiler.py [--quick]
Prints one JSON object and appends nothing; copy the numbers into bench/RESULTS.md.
Every figure is measured in this one run, on one core (Numba code is single-threaded).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def setting(n_docs: int):
    from circuitsketch.models import microgpt as m

    docs = m.read_docs(m.corpus_path())
    order = np.random.default_rng(0).permutation(len(docs))[:n_docs]
    return [docs[i] for i in order]


def time_compile(degree: int, n_docs: int, cache: str) -> float:
    """Wall time of building + first step in a fresh process with the given cache dir."""
    code = (
        "import time, numpy as np;"
        "t = time.perf_counter();"
        "from bench.bench_compiler import setting;"
        "from circuitsketch.models import microgpt as m;"
        "from compiler.compiled import CompiledProgram;"
        f"p = m.build(setting({n_docs}));"
        f"cp = CompiledProgram(p, {degree});"
        + (
            "cp.train(stop=1);"
            if degree == 0
            else f"cp.train_series(np.ones((1, {n_docs}), complex), stop=1);"
        )
        + "print(time.perf_counter() - t)"
    )
    env = dict(os.environ, CIRCUITSKETCH_CACHE=cache, NUMBA_CACHE_DIR=cache, PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, check=True, capture_output=True, text=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer steps (for a smoke run)")
    ap.add_argument("--oracle-steps", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=5, help="timed runs of real and K=3 (median)")
    args = ap.parse_args()
    from circuitsketch.models import microgpt as m
    from compiler.compiled import CompiledProgram
    from compiler.passes import activity, simplify

    n_docs = 1000
    docs = setting(n_docs)
    prog = m.build(docs)
    from bench.machine import describe

    res: dict = {
        "date": str(date.today()),
        "machine": describe(),
        "setting": "first 1000 names of default_rng(0).permutation(corpus), T = 1000",
    }
    lens = [min(16, len(d) + 1) for d in docs]
    res["mean_positions"] = float(np.mean(lens))

    # op table and activity
    c = prog.step_circuits[8]
    s = simplify(c)
    act = activity(s, [n for n in s.inputs if n in prog.init_state or n == "w"])
    res["step_circuit_L8"] = {
        "traced_nodes": len(c),
        "traced_ops": c.op_counts(),
        "simplified_nodes": len(s),
        "simplified_ops": s.op_counts(),
        "activity": act.summary(s),
    }

    # compile times (fresh processes)
    cold = tempfile.mkdtemp()
    res["compile_cold_s"] = {k: time_compile(k, n_docs, cold) for k in (0, 3)}
    res["compile_warm_s"] = {k: time_compile(k, n_docs, cold) for k in (0, 3)}
    shutil.rmtree(cold, ignore_errors=True)
    alone = tempfile.mkdtemp()  # a first sketch on a fresh machine: no real-mode kernels cached
    res["compile_cold_series_alone_s"] = time_compile(3, n_docs, alone)
    shutil.rmtree(alone, ignore_errors=True)

    steps = 100 if args.quick else 1000
    cp0 = CompiledProgram(prog, 0)
    cp0.train(stop=2)
    runs = []
    for _ in range(args.repeats):  # a whole training run is 50 ms: one run is noisy
        t = time.perf_counter()
        cp0.train()
        runs.append((time.perf_counter() - t) / prog.num_steps * 1e3)
    real_ms = float(np.median(runs))
    res["real_ms_per_step"] = real_ms
    res["real_ms_per_step_runs"] = {"min": min(runs), "max": max(runs), "n": len(runs)}

    rng = np.random.default_rng(1)
    sketch = {}
    for K, B, n in ((3, 8, steps), (6, 8, steps // 4), (100, 1, 3)):
        cp = CompiledProgram(prog, K)
        psi = rng.normal(size=(B, n_docs)) + 1j * rng.normal(size=(B, n_docs))
        psi /= np.linalg.norm(psi, axis=1, keepdims=True)
        # warm up through the first step of every length bucket: a step function
        # compiles on its first call, and a cold one must not land in the timed runs
        keys = [int(k) for k in cp.keys]
        cp.train_series(psi, stop=1 + max(keys.index(k) for k in set(keys)))
        runs = []
        for _ in range(args.repeats if K == 3 else 1):
            t = time.perf_counter()
            cp.train_series(psi, stop=n)
            runs.append((time.perf_counter() - t) / n / B * 1e3)
        per_dir = float(np.median(runs))
        sketch[K] = {
            "B": B,
            "steps_timed": n,
            "runs": len(runs),
            "ms_per_step_per_direction": per_dir,
            "range": [min(runs), max(runs)],
            "x_real_step": per_dir / real_ms,
        }
    res["sketch"] = sketch

    # the scalar oracle, same docs, a few steps
    from tests.oracle import microgpt as OM

    chars = OM.vocab_from_corpus(m.corpus_path().read_text().splitlines())
    toks = [OM.tokenize(d, chars) for d in docs]
    params = m.init_params(0)
    n = args.oracle_steps
    t = time.perf_counter()
    OM.train(params, toks[:n], n, [0.0] * n)
    oracle_real = (time.perf_counter() - t) / n * 1e3
    from tests.oracle.series import Series

    t = time.perf_counter()
    OM.train(params, toks[:n], n, [Series.var(0.1 + 0.1j, 3) for _ in range(n)], K=3)
    oracle_k3 = (time.perf_counter() - t) / n * 1e3
    res["oracle_ms_per_step"] = {"real": oracle_real, "K3": oracle_k3}
    res["speedup_vs_oracle"] = {
        "real": oracle_real / real_ms,
        "K3_per_direction": oracle_k3 / sketch[3]["ms_per_step_per_direction"],
    }
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
