"""Two checkouts' bench/bench_compiler.py, run in alternation on this machine.

Run from the repository root:
    python bench/bench_ab.py OLD_CHECKOUT NEW_CHECKOUT [--rounds 3] [--quick]

A machine's speed drifts over minutes (other jobs, clocks), so one run of each
side compared is noise.  Here each round runs the old side's benchmark and
then the new side's, each a fresh process importing its own checkout's code
with its own kernel cache (an old checkout may not key its cache soundly), and
the report gives, per figure, both sides' medians over the rounds and the
ratio new / old.  Prints one JSON object; copy it into bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

import numpy as np

FIGURES = {  # name -> path into bench_compiler's JSON
    "real_ms_per_step": ("real_ms_per_step",),
    "k3_ms_per_step_per_direction": ("sketch", "3", "ms_per_step_per_direction"),
    "k6_ms_per_step_per_direction": ("sketch", "6", "ms_per_step_per_direction"),
    "k100_ms_per_step": ("sketch", "100", "ms_per_step_per_direction"),
    "compile_cold_real_s": ("compile_cold_s", "0"),
    "compile_cold_k3_s": ("compile_cold_s", "3"),
    "compile_warm_real_s": ("compile_warm_s", "0"),
    "compile_warm_k3_s": ("compile_warm_s", "3"),
}


def run_side(root: Path, cache: str, quick: bool) -> dict:
    env = dict(os.environ, PYTHONPATH=str(root), CIRCUITSKETCH_CACHE=cache, NUMBA_CACHE_DIR=cache)
    cmd = [sys.executable, str(root / "bench" / "bench_compiler.py"), *(["--quick"] * quick)]
    out = subprocess.run(cmd, env=env, cwd=root, check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def figure(res: dict, path: tuple[str, ...]) -> float:
    for key in path:
        res = res[key]
    return float(res)  # type: ignore[arg-type]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    sides = {"old": args.old.resolve(), "new": args.new.resolve()}
    caches = {k: tempfile.mkdtemp(prefix=f"ab_{k}_") for k in sides}
    got: dict[str, list[dict]] = {k: [] for k in sides}
    for r in range(args.rounds):
        for k, root in sides.items():
            got[k].append(run_side(root, caches[k], args.quick))
            print(f"round {r + 1}/{args.rounds}: {k} done", file=sys.stderr, flush=True)
    report: dict = {
        "date": str(date.today()),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.python_version()}",
        "checkouts": {k: str(v) for k, v in sides.items()},
        "rounds": args.rounds,
        "figures": {},
    }
    for name, path in FIGURES.items():
        vals = {k: [figure(res, path) for res in got[k]] for k in sides}
        med = {k: float(np.median(v)) for k, v in vals.items()}
        report["figures"][name] = {**med, "runs": vals, "new_over_old": med["new"] / med["old"]}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
