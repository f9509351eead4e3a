"""Peak memory and time of a series training run of microgpt at a given size.

A series run keeps B x K complex coefficients per state entry (0.87 GB at 4 x 128
for 8 directions at K = 3); this measures what a run holds at its peak (the
process's ``ru_maxrss``) and its CPU time per step, system time included (a
fresh buffer's pages are paid for there).  Run from a checkout's root, once per
checkout to compare two (``bench/RESULTS.md``, run 9):

    taskset -c 1 python bench/bench_series_memory.py --n-layer 4 --n-embd 128 --steps 16
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--n-embd", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--degree", type=int, default=3)
    ap.add_argument("--directions", type=int, default=8)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--docs", type=int, default=200)
    args = ap.parse_args()
    from bench.bench_scale import build  # bench_scale's model: shuffled names, 4 heads
    from compiler.compiled import CompiledProgram

    prog = build((args.n_layer, args.n_embd), args.batch_size, args.docs)
    cp = CompiledProgram(prog, args.degree)
    psi = np.random.default_rng(1).normal(size=(args.directions, prog.num_docs)) + 0j
    cp.train_series(psi[:1], stop=1)  # compiled (or loaded) before the measurement
    before = resource.getrusage(resource.RUSAGE_SELF)
    t = time.process_time()
    _, hi, _ = cp.train_series(psi, stop=args.steps)
    seconds = time.process_time() - t
    after = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({
        "size": f"{args.n_layer}x{args.n_embd}", "batch_size": args.batch_size,
        "degree": args.degree, "directions": args.directions, "steps": args.steps,
        "higher_orders_mib": round(hi.nbytes / 2**20),
        "in_place": bool(getattr(cp.build, "in_place", False)),
        "peak_rss_mib_before": round(before.ru_maxrss / 1024),
        "peak_rss_mib": round(after.ru_maxrss / 1024),
        "cpu_ms_per_step": round(seconds / args.steps * 1e3, 1),
        "system_seconds": round(after.ru_stime - before.ru_stime, 2),
    }))


if __name__ == "__main__":
    main()
