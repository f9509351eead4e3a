"""Compile time against microgpt's number of layers and width (issue 20), real and K = 3.

Run from the repository root:
    python bench/bench_layers.py [--layers 1 2 4] [--width 24] [--new 3x48] [--checkout DIR]

Each measurement builds microgpt (4 heads, 50 names) and compiles its every step
circuit (the real trainer's first step; a series step of each length bucket) in a
fresh process, timed by that process's CPU time (user + system, less sensitive
than wall time to other jobs).  For each layer count L, at L x `--width`:
  * empty: an empty kernel cache (everything compiles: the library kernels and
    the generated code);
  * shared: one cache shared by the runs, in order: first a 1-layer model 8
    wider (the library kernels), then each row's model, so that a row finds the
    code of the smaller depths before it (but never its own);
  * warm: the same model again on that cache (everything loads);
  * other width: L x (`--width` + 16) on that cache, a width never compiled.
Last, `--new` (L x E, a size the shared cache has never seen) on the shared
cache: the "new model size once the library kernels are cached" of issue 20.
`--checkout`: time another checkout's compiler (default: this one), for a
before-and-after comparison.  One JSON object on stdout; copy the numbers into
bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = r"""
import json, resource, sys
import numpy as np
from circuitsketch.models import microgpt as m
from compiler.compiled import CompiledProgram
L, E, K = (int(a) for a in sys.argv[1:4])
docs = m.read_docs(m.corpus_path())[:50]
cp = CompiledProgram(m.build(docs, n_layer=L, n_embd=E, n_head=4), K)
if K:  # one step of every step circuit (length bucket), as `compile` does before its sketch
    from runtime.precompute import load_series_code
    load_series_code(cp)
else:  # the real trainer is one compiled loop over every step circuit
    cp.train(stop=1)
r = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"cpu_s": r.ru_utime + r.ru_stime, "lines": cp.source.count("\n")}))
"""


def probe(root: Path, cache: Path, layers: int, width: int, degree: int) -> dict:
    env = {**os.environ, "CIRCUITSKETCH_CACHE": str(cache), "PYTHONPATH": str(root)}
    args = [sys.executable, "-c", PROBE, str(layers), str(width), str(degree)]
    res = subprocess.run(args, env=env, capture_output=True, text=True, cwd=root)
    if res.returncode != 0:
        raise SystemExit(res.stderr)
    return json.loads(res.stdout)


def main() -> None:
    sys.path.insert(0, str(ROOT))  # this process only reads the machine (bench.machine)
    from bench.machine import describe

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--width", type=int, default=24)
    ap.add_argument("--new", default="3x48", help="a size never compiled: LAYERSxWIDTH")
    ap.add_argument("--checkout", type=Path, default=ROOT)
    args = ap.parse_args()
    root = args.checkout.resolve()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        shared = Path(tmp) / "shared"
        for degree in (0, 3):
            probe(root, shared, 1, args.width + 8, degree)  # the library kernels, once
        for i, layers in enumerate(args.layers):
            for degree in (0, 3):
                row = {"layers": layers, "degree": degree}
                empty = probe(root, Path(tmp) / f"empty{i}{degree}", layers, args.width, degree)
                row["lines"] = empty["lines"]
                row["empty_cpu_s"] = empty["cpu_s"]
                for name in ("shared_cpu_s", "warm_cpu_s"):  # the second run: warm
                    row[name] = probe(root, shared, layers, args.width, degree)["cpu_s"]
                other = probe(root, shared, layers, args.width + 16, degree)
                row["other_width_cpu_s"] = other["cpu_s"]
                print(json.dumps(row), file=sys.stderr, flush=True)
                rows.append(row)
        layers, width = (int(v) for v in args.new.split("x"))
        new = {f"degree_{d}_cpu_s": probe(root, shared, layers, width, d)["cpu_s"]
               for d in (0, 3)}  # fmt: skip
        print(json.dumps({"new": args.new, **new}), file=sys.stderr, flush=True)
    print(json.dumps({
        "date": datetime.now(timezone.utc).isoformat(timespec="minutes"),
        "machine": describe(),
        "checkout": str(root),
        "width": args.width,
        "rows": rows,
        "new_size": {"size": args.new, **new},
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
