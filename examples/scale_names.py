"""An example at scale (issue 18): a 2-layer, 32-wide microgpt on 4,000 names, sketched.

Training: the first 4,000 names of ``default_rng(0).permutation`` of the corpus,
batches of 8, 2 epochs (1,000 steps) shuffled with seed 0, AdamW (weight decay
0.1) with 50 warmup steps and a cosine schedule.  A K = 3 sketch of 64
directions; 50 deletion sets, one of each size 1..50 (``rt.sample_sets``),
predicted with the sketch (``--estimator``, any name of ``rt.estimators()``)
and retrained exactly, for a few test names.  Prints and plots prediction
against truth per test name, Spearman's rank correlation over the sets, the
coverage of the 2-standard-error bands, and the wall-clock of one query
against one retraining.  Run from the repository root:

    python -m examples.scale_names [--workers 2] [--estimator sketch] [--quick]

The sketch is stored in ``examples/out/scale_names/sketch`` (resumable) and the
numbers in ``examples/out/scale_names.json``; the figure is
``examples/figures/scale_names.png`` (with another ``--estimator E``:
``scale_names_E.json`` and ``.png``, on the same sketch and retrained truth, which
are then read back).  ``--quick``: 200 names, 8 directions, sizes 1..10 (a smoke
test).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
TESTS = ["max", "olivia", "xavier", "emma"]


def names(n: int) -> list[str]:
    from circuitsketch.models import microgpt as m

    docs = m.read_docs(m.corpus_path())
    return [docs[i] for i in np.random.default_rng(0).permutation(len(docs))[:n]]


def plot(pred, stderr, truth, c0, rho, estimator: str, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(TESTS), figsize=(4 * len(TESTS), 4))
    for j, ax in enumerate(np.atleast_1d(axes)):
        dp, dt = pred[:, j] - c0[j], truth[:, j] - c0[j]
        ax.errorbar(dt, dp, yerr=2 * stderr[:, j], fmt="o", ms=3, alpha=0.7, elinewidth=0.8)
        lo, hi = min(dt.min(), dp.min()), max(dt.max(), dp.max())
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_title(f"{TESTS[j]!r}: Spearman {rho[j]:.2f}")
        ax.set_xlabel("true change of the test loss (retrained)")
        if j == 0:
            ax.set_ylabel(f"predicted change ({estimator}, K = 3, +- 2 s.e.)")
    fig.suptitle("microgpt 2 x 32 on 4,000 names: 50 deletion sets of sizes 1-50")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--estimator", default="sketch")
    ap.add_argument("--directions", type=int, default=64)
    ap.add_argument("--out", type=Path, default=HERE / "out")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    import runtime.api as rt

    t_start = time.perf_counter()
    n_docs, M, sizes = (200, 8, range(1, 11)) if args.quick else (4000, args.directions,
                                                                   range(1, 51))
    tag = "scale_names_quick" if args.quick else "scale_names"
    src = rt.microgpt(
        names(n_docs), epochs=2, seed=0, model={"n_layer": 2, "n_embd": 32},
        training={"batch_size": 8, "shuffle_seed": 0, "weight_decay": 0.1,
                  "warmup": 5 if args.quick else 50, "lr_schedule": "cosine"},
    )
    t = time.perf_counter()
    sk = rt.precompute(src, args.out / tag / "sketch", degree=3, directions=M,
                       workers=args.workers)
    sketch_s = time.perf_counter() - t
    sets = rt.sample_sets(n_docs, list(sizes), 1, seed=0)

    t = time.perf_counter()
    res = sk.query(sets, TESTS, estimator=args.estimator)
    query_all_s = time.perf_counter() - t
    t = time.perf_counter()
    sk.query(sets.subset([len(sets) - 1]), TESTS, estimator=args.estimator)  # the largest
    query_one_s = time.perf_counter() - t

    t = time.perf_counter()
    truth = sk.retrain(sets, TESTS, workers=args.workers,
                       out=args.out / tag / "truth.jsonl")
    retrain_all_s = time.perf_counter() - t
    # one retraining alone, in this process: compiled (cached) real training without a
    # set, then the test outputs
    cp = rt.compile_program(src, degree=0)
    w = sets.weight_vector(len(sets) - 1)
    t = time.perf_counter()
    state, _ = cp.train(w)
    for d in TESTS:
        cp.output(state, d)
    retrain_one_s = time.perf_counter() - t

    from runtime.metrics import spearman

    c0 = res.c0
    pred, se = res.prediction, res.stderr
    rho = spearman((pred - c0).T, (truth - c0).T)
    covered = np.abs(pred - truth) <= 2 * se
    out = {
        "docs": n_docs, "steps": src.steps, "directions": M, "degree": 3,
        "params": int(sum(np.asarray(v).size for k, v in cp.program.init_state.items()
                          if k in cp.program.params)),
        "estimator": args.estimator, "tests": TESTS, "sizes": list(sizes),
        "c0": c0.tolist(),
        "spearman": dict(zip(TESTS, np.round(rho, 4).tolist(), strict=True)),
        "spearman_mean": float(np.nanmean(rho)),
        "coverage_2se": dict(zip(TESTS, covered.mean(axis=0).round(3).tolist(), strict=True)),
        "coverage_2se_all": float(covered.mean()),
        "mae": dict(zip(TESTS, np.abs(pred - truth).mean(axis=0).round(5).tolist(),
                        strict=True)),
        "mean_abs_true_change": dict(zip(TESTS, np.abs(truth - c0).mean(axis=0).round(5)
                                         .tolist(), strict=True)),
        "seconds": {
            "sketch": round(sketch_s, 1), "query_all_sets": round(query_all_s, 3),
            "query_one_set": round(query_one_s, 4), "retrain_all_sets": round(retrain_all_s, 1),
            "retrain_one_set": round(retrain_one_s, 3),
            "total": round(time.perf_counter() - t_start, 1),
        },
        "workers": args.workers,
    }
    out["query_over_retrain"] = out["seconds"]["query_one_set"] / retrain_one_s
    args.out.mkdir(parents=True, exist_ok=True)
    # the sketch and the retrained truth are shared; each estimator has its own results
    name = tag if args.estimator == "sketch" else f"{tag}_{args.estimator}"
    (args.out / f"{name}.json").write_text(json.dumps(out, indent=1) + "\n")
    plot(pred, se, truth, c0, rho, args.estimator,
         (HERE / "figures" if not args.quick else args.out) / f"{name}.png")
    print(f"{'size':>4} " + " ".join(f"{d + ' pred':>12} {d + ' true':>12}" for d in TESTS))
    for i, z in enumerate(sizes):
        print(f"{z:4d} " + " ".join(f"{pred[i, j] - c0[j]:12.5f} {truth[i, j] - c0[j]:12.5f}"
                                     for j in range(len(TESTS))))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
