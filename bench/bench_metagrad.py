"""Metagradient in bounded memory: peak RSS and wall time against one real training run.

Each configuration runs in a fresh process (so its peak RSS is its own):
compile (warm cache), one plain training run, then the checkpointed sweep
(forward pass keeping checkpoints, recomputation, reverse steps) for one test
name, timed; with --check, also the full-trajectory method on the same run,
whose g must equal the sweep's to 1e-12 (only for runs small enough to hold
the trajectory).  Run from the repository root:

    python bench/bench_metagrad.py                      # all 32,032 names, sqrt, 1 and 2 threads
    python bench/bench_metagrad.py --docs 2000 --check  # small, against the full trajectory
    python bench/bench_metagrad.py --schedule binomial tree --budget 100MB
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def one(args: argparse.Namespace) -> dict:
    """One configuration, in this process."""
    from circuitsketch.models import microgpt as m
    from compiler.compiled import CompiledProgram
    from runtime.checkpoints import parse_bytes
    from runtime.metagrad import Metagradient, full_trajectory_metagradient, peak_rss_bytes

    docs = m.read_docs(m.corpus_path())
    if args.docs:
        docs = docs[: args.docs]
    size = {k: v for k, v in (("n_layer", args.n_layer), ("n_embd", args.n_embd)) if v}
    if size and not set(size) <= set(inspect.signature(m.build).parameters):
        raise SystemExit("this microgpt has no configurable size yet (branch `batch`)")
    program = m.build(docs, **size)
    if args.schedule[0] == "full":  # the full-trajectory method, for comparison
        t1 = time.perf_counter()
        CompiledProgram(program, 0).train()
        t2 = time.perf_counter()
        full_trajectory_metagradient(program, args.test)
        return {"docs": len(docs), "steps": program.num_steps, "plan": {"schedule": "full"},
                "full_seconds_with_compile": time.perf_counter() - t2,
                "train_seconds_with_compile": t2 - t1, "peak_rss_bytes": peak_rss_bytes()}
    t0 = time.perf_counter()
    budget = parse_bytes(args.budget) if args.budget else None
    mg = Metagradient(program, schedule=args.schedule[0], memory_budget=budget,
                      threads=args.threads[0])  # fmt: skip
    mg.warm()
    setup = time.perf_counter() - t0
    rss_setup = peak_rss_bytes()
    # alternate one plain training run and one sweep, so that both see the same machine
    trains, train_cpus, sweeps, cpus, parts = [], [], [], [], []
    for _ in range(args.pairs):
        c1 = time.process_time()
        t1 = time.perf_counter()
        mg.forward.train()
        trains.append(time.perf_counter() - t1)
        train_cpus.append(time.process_time() - c1)
        cpu0 = time.process_time()
        t2 = time.perf_counter()
        g = mg(args.test)
        sweeps.append(time.perf_counter() - t2)
        cpus.append(time.process_time() - cpu0)
        parts.append({k: round(v, 3) for k, v in mg.sweep.seconds.items()})
    ratios = [s / t for s, t in zip(sweeps, trains, strict=True)]
    out = {
        "docs": len(docs),
        "steps": program.num_steps,
        "state_floats": mg.forward.state_size,
        "plan": mg.summary(),
        "setup_seconds": setup,
        "train_seconds": trains,
        "train_cpu_seconds": train_cpus,
        "sweep_seconds": sweeps,
        "sweep_cpu_seconds": cpus,
        "parts_seconds": parts,
        "ratios": ratios,
        "peak_rss_before_sweep_bytes": rss_setup,
        "peak_rss_bytes": peak_rss_bytes(),
        "g_norm": float(np.linalg.norm(g)),
    }
    if args.check:
        ref = full_trajectory_metagradient(program, args.test)
        out["max_rel_diff_vs_full_trajectory"] = float(
            np.max(np.abs(g - ref)) / np.max(np.abs(ref))
        )
        out["bitwise_equal_full_trajectory"] = bool(np.array_equal(g, ref))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=0, help="first N names (0: all)")
    ap.add_argument("--schedule", nargs="+", default=["sqrt"],
                    help="sqrt, binomial, tree, or full (the full-trajectory method)")
    ap.add_argument("--n-layer", type=int, default=0, help="microgpt's size, once configurable")
    ap.add_argument("--n-embd", type=int, default=0)
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--budget", default=None, help="--memory-budget, e.g. 100MB")
    ap.add_argument("--pairs", type=int, default=3, help="training runs and sweeps, alternated")
    ap.add_argument("--repeat", type=int, default=1, help="processes per configuration")
    ap.add_argument("--test", default="max")
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args)))
        return
    from bench.machine import describe

    print(f"# {describe()}, "
          f"load {os.getloadavg()}, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")  # fmt: skip
    for schedule in args.schedule:
        for threads in args.threads if schedule != "full" else [1]:
            for _ in range(args.repeat):
                cmd = [sys.executable, __file__, "--one", "--docs", str(args.docs),
                       "--schedule", schedule, "--threads", str(threads),
                       "--pairs", str(args.pairs), "--test", args.test]  # fmt: skip
                if args.budget:
                    cmd += ["--budget", args.budget]
                if args.n_layer or args.n_embd:
                    cmd += ["--n-layer", str(args.n_layer), "--n-embd", str(args.n_embd)]
                if args.check:
                    cmd.append("--check")
                res = json.loads(subprocess.run(cmd, check=True, capture_output=True,
                                                text=True).stdout.strip().splitlines()[-1])
                p = res["plan"]
                if p["schedule"] == "full":
                    print(f"    full: {res}")
                    continue
                best = int(np.argmin(res["ratios"]))
                print(
                    f"{schedule:>8} threads {threads}: {res['steps']} steps, "
                    f"{p['leaves']} leaves of <= {p['leaf_steps']}, {p['checkpoints']} kept, "
                    f"{p['forward_passes']:.2f} forward passes; estimate "
                    f"{p['memory_estimate_bytes'] / 1e6:.0f} MB, peak RSS "
                    f"{res['peak_rss_bytes'] / 1e6:.0f} MB (before the sweep "
                    f"{res['peak_rss_before_sweep_bytes'] / 1e6:.0f} MB); sweep / training "
                    + ", ".join(f"{r:.2f}" for r in res["ratios"])
                    + f" (best: {res['sweep_seconds'][best]:.2f} s / "
                    f"{res['train_seconds'][best]:.2f} s, "
                    f"cpu {res['sweep_cpu_seconds'][best]:.2f} s; "
                    + ", ".join(f"{k} {v:.2f}" for k, v in res["parts_seconds"][best].items())
                    + ")"
                    + (f"; vs full trajectory {res['max_rel_diff_vs_full_trajectory']:.1e}"
                       if args.check else "")
                )
                print("  " + json.dumps(res))


if __name__ == "__main__":
    main()
