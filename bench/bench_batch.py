"""Cost per document of minibatch steps against one-document steps, microgpt at several sizes.

Run from the repository root:  python bench/bench_batch.py [--sizes 1x16 2x32 4x64] [--quick]
For each size and batch size 1 and 8 it trains on the same shuffled names (one
epoch) and prints, as one JSON object: the real ms per document (best of 3 runs
of the compiled trainer) and the K = 3 ms per document per direction (8 directions,
the first 256 names), and the ratio batch 8 / batch 1.  Batches of 8 run packed (their
positions one after another; attention pads them to the bucket of their longest name,
8, 10, 12 or 16); one-document steps run in length buckets (8, 16).
One core (Numba code is single-threaded); copy the numbers into bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def real_ms_per_doc(docs: list[str], batch: int, size: tuple[int, int]) -> float:
    from circuitsketch.models import microgpt as m
    from compiler.compiled import CompiledProgram

    cp = CompiledProgram(m.build(docs, batch_size=batch, n_layer=size[0], n_embd=size[1]), 0)
    cp.train(stop=2)  # load or compile
    best = np.inf
    for _ in range(3):
        t = time.perf_counter()
        cp.train()
        best = min(best, time.perf_counter() - t)
    return 1e3 * best / len(docs)


def series_ms_per_doc(docs: list[str], batch: int, size: tuple[int, int], k: int = 3) -> float:
    from circuitsketch.models import microgpt as m
    from compiler.compiled import CompiledProgram

    cp = CompiledProgram(m.build(docs, batch_size=batch, n_layer=size[0], n_embd=size[1]), k)
    psi = np.random.default_rng(1).normal(size=(8, len(docs))) + 0j
    psi /= np.linalg.norm(psi, axis=1, keepdims=True)
    cp.train_series(psi)  # every step circuit's parts are compiled (or loaded) on first use
    best = np.inf
    for _ in range(2):
        t = time.perf_counter()
        cp.train_series(psi)
        best = min(best, time.perf_counter() - t)
    return 1e3 * best / len(docs) / psi.shape[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", nargs="+", default=["1x16", "2x32", "4x64"])
    ap.add_argument("--quick", action="store_true", help="200 names, real mode only")
    args = ap.parse_args()
    from bench.bench_scale import names  # the same shuffled names as bench_scale's models
    from bench.machine import describe

    out = {"date": str(date.today()), "machine": describe(), "sizes": {}}
    for text in args.sizes:
        size = tuple(int(x) for x in text.split("x"))
        row: dict = {}
        docs = names(200 if args.quick else 1000)
        for b in (1, 8):
            row[f"real_ms_per_doc_b{b}"] = real_ms_per_doc(docs, b, size)
            if not args.quick:
                row[f"k3_ms_per_doc_dir_b{b}"] = series_ms_per_doc(docs[:256], b, size)
        row["real_ratio"] = row["real_ms_per_doc_b8"] / row["real_ms_per_doc_b1"]
        if not args.quick:
            row["k3_ratio"] = row["k3_ms_per_doc_dir_b8"] / row["k3_ms_per_doc_dir_b1"]
        out["sizes"][text] = row
        print(json.dumps({text: row}), file=sys.stderr, flush=True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
