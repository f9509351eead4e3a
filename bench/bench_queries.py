"""Batch-query throughput (issue 19): 10,000 deletion sets of 10 documents, 8 test names.

Run from the repository root:  python bench/bench_queries.py [--quick] [--steps T]

The sketch is microgpt on the first N = 1000 names of
``default_rng(0).permutation`` of the corpus, K = 3, M = 500 directions of
seed 0, compiled (or resumed) in ``bench/out/`` with ``--workers``
processes.  A query's cost depends on M, N, K and the sets, not on the
number of training steps, so ``--steps`` (default 1000, the paper's
setting) only changes how long the sketch takes to build.  Timed, after the
sketch, its coefficients and the metagradients are loaded: the vectorised
work of ``Sketch.query`` (``BatchResult.seconds``) per estimator, the
median and minimum of ``--repeats`` runs, and the whole call for context;
then ``circuitsketch query --sets --out`` end to end in a fresh process.
Prints one JSON object; the numbers go to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TESTS = ("max", "olivia", "xavier", "emma", "jacqueline", "zoe", "liam", "ana")


def setting(n_docs: int) -> list[str]:
    from circuitsketch.models import microgpt as m

    docs = m.read_docs(m.corpus_path())
    order = np.random.default_rng(0).permutation(len(docs))[:n_docs]
    return [docs[i] for i in order]


def main() -> None:
    from bench.machine import describe

    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="N = 100, T = 20, M = 32, 1000 sets")
    ap.add_argument("--steps", type=int, default=None, help="training steps (default 1000)")
    ap.add_argument("--workers", type=int, default=2, help="processes building the sketch")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "bench" / "out"))
    args = ap.parse_args()
    import runtime.api as rt

    n, m, sets_n, size = (100, 32, 1000, 10) if args.quick else (1000, 500, 10_000, 10)
    steps = args.steps or (20 if args.quick else 1000)
    path = Path(args.out) / f"queries_n{n}_t{steps}_k3_m{m}"
    docs = setting(n)
    t0 = time.perf_counter()
    sk = rt.precompute(
        rt.microgpt(docs, steps=steps, seed=0),
        path,
        degree=3,
        directions=m,
        workers=args.workers,
        progress=None,
    )
    build = time.perf_counter() - t0
    t0 = time.perf_counter()
    sk = rt.open_sketch(path)
    coefs = sk.coefficients(TESTS)  # cached in the sketch after the first run
    sk.metagradient(TESTS)  # stored beside it after the first run
    load = time.perf_counter() - t0
    rng = np.random.default_rng(1)
    index = np.array([rng.choice(n, size, replace=False) for _ in range(sets_n)])
    sets = sk.sets(index)
    res: dict = {
        "date": str(date.today()),
        "machine": f"{describe()}, numpy {np.__version__}",
        "load_average": os.getloadavg()[0],
        "setting": {
            "N": n,
            "T": steps,
            "K": 3,
            "M": m,
            "sets": sets_n,
            "set_size": size,
            "tests": len(TESTS),
        },
        "sketch_seconds": build,
        "load_seconds": load,
        "coefficients_shape": list(coefs.shape),
        "query": {},
    }
    for name in ("sketch", "first-order", "hybrid", "auto"):
        work, calls = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            r = sk.query(sets, TESTS, estimator=name)
            calls.append(time.perf_counter() - t0)
            work.append(r.seconds)
        res["query"][name] = {
            "work_median": float(np.median(work)),
            "work_min": float(np.min(work)),
            "call_median": float(np.median(calls)),
            "answers_per_second": sets_n * len(TESTS) / float(np.median(work)),
        }
    f = path.parent / "queries_sets.jsonl"
    f.write_text("".join(json.dumps({"delete": row.tolist()}) + "\n" for row in index))
    argv = [
        sys.executable,
        "-m",
        "circuitsketch",
        "query",
        str(path),
        "--sets",
        str(f),
        "--out",
        str(path.parent / "queries_out.jsonl"),
        "--json",
    ]
    for t in TESTS:
        argv += ["--doc", t]
    t0 = time.perf_counter()
    out = subprocess.run(
        argv,
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    res["cli"] = {
        "wall_seconds": time.perf_counter() - t0,
        "work_seconds": json.loads(out.stdout)["seconds"],
    }
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
