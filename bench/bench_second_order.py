"""The second-order estimator's data: a sketch's first call against a later one.

The diagonal's series passes serve every test input; their parameter series are
stored beside the sketch by the first call (``runtime.unit_series``).  Timed in
one process, at the paper's setting (the first N shuffled names, T steps, batch 1):

1. the first call, for 8 test names (series passes, outputs, row sums);
2. a later call, for 8 other names (outputs and row sums only);
3. the peer: what every call cost before the passes were stored, the diagonal by
   ``hessian.hessian_diagonal`` and the row sums, for the later names; its diagonal
   must equal the later call's bit for bit;
4. before all of them, on the fresh sketch, the windowed data of the first names
   (``runtime.windowed_diagonal``: window and sample passes, the sweep, the row sums),
   with how well its diagonal matches the exact one (R^2 over the documents).

Costs are also given in training runs (one plain run, timed in the same process).
Run from the repository root:

    python bench/bench_second_order.py            # N = 1000, T = 1000
    python bench/bench_second_order.py --quick    # N = 100, T = 100
    python bench/bench_second_order.py --workers 2   # the first call's passes on 2 processes
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FIRST = ["max", "emma", "olivia", "jackson", "sophia", "liam", "noah", "ava"]
LATER = ["anna", "mia", "lucas", "ethan", "zoe", "leo", "ella", "jack"]


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    from bench.machine import describe

    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="N = 100, T = 100")
    ap.add_argument("--out", default=None, help="where the sketch goes (default: a temp dir)")
    ap.add_argument("--workers", type=int, default=1, help="processes for the first call's passes")
    args = ap.parse_args()
    import runtime.api as rt
    from circuitsketch.models import microgpt as m
    from compiler.compiled import CompiledProgram
    from runtime.hessian import hessian_diagonal, row_sums
    from runtime.second_order import Windowed, sketch_second_order
    from runtime.sources import sketch_source
    from runtime.spec import build_program

    n = steps = 100 if args.quick else 1000
    docs = m.read_docs(m.corpus_path())
    docs = [docs[i] for i in np.random.default_rng(0).permutation(len(docs))[:n]]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.out or tmp) / f"second_order_n{n}_t{steps}"
        # the second-order data do not depend on the sketch's directions: a small sketch
        sk = rt.precompute(rt.microgpt(docs, steps=steps, seed=0), path, degree=1,
                           directions=8, progress=None)
        program = build_program(sketch_source(sk.store, full=True))
        real = CompiledProgram(program, 0)
        real.train(stop=1)
        _, run = timed(real.train)
        windowed, t_win = timed(lambda: sketch_second_order(sk.store, FIRST, workers=args.workers,
                                                            windowed=Windowed()))
        first, t_first = timed(lambda: sketch_second_order(sk.store, FIRST, workers=args.workers))
        r2 = [1.0 - np.mean((first[k].diag - windowed[k].diag) ** 2) / np.var(first[k].diag)
              for k in first]
        later, t_later = timed(lambda: sketch_second_order(sk.store, LATER))
        tests = sketch_source(sk.store).check_tests(LATER)
        values = [t.value for t in tests]
        (diag, _), t_diag = timed(lambda: hessian_diagonal(program, values, real=real))
        _, t_rows = timed(lambda: row_sums(program, values, real=real))
        same = all(np.array_equal(later[t.key].diag, diag[q])
                   for q, t in enumerate(tests))
        stored = sum(f.stat().st_size for f in (path / "unit_series").glob("*.npy"))
    res = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{describe()}, numpy {np.__version__}",
        "load_average": os.getloadavg()[0],
        "setting": {"N": n, "T": steps, "tests_per_call": len(FIRST), "workers": args.workers},
        "training_run_seconds": run,
        "first_call": {"seconds": t_first, "runs": t_first / run},
        "windowed_first_call": {"seconds": t_win, "runs": t_win / run,
                                "settings": Windowed().meta(),
                                "diagonal_r2_min_median_max": [min(r2), float(np.median(r2)),
                                                               max(r2)]},
        "later_call": {"seconds": t_later, "runs": t_later / run},
        "every_call_before": {"seconds": t_diag + t_rows, "runs": (t_diag + t_rows) / run,
                              "diagonal_seconds": t_diag, "row_sums_seconds": t_rows},
        "later_diagonal_same_bits": same,
        "stored_megabytes": stored / 1e6,
    }
    print(json.dumps(res, indent=1))
    if not same:
        raise SystemExit("the stored diagonal differs from the direct one")


if __name__ == "__main__":
    main()
