"""``evaluate``: every estimator against exact retraining, on sampled or given deletion sets.

Steps, all resumable (``out``, default ``SKETCH/evaluate``):

1. the deletion sets: ``sizes`` x ``sets_per_size`` sampled with ``seed``
   (``deletion_sets.sample_sets``) or read from a file; written to
   ``sets.jsonl`` (a directory holding other sets is refused);
2. the truth: ``batch_retrain`` into ``truth.jsonl`` (a rerun retrains only
   the sets still missing);
3. the metagradient of each test input, if an estimator needs it (computed
   once, stored beside the sketch);
4. every estimator's predictions (``batch_query``), written to
   ``predictions.jsonl``; their scores per set size (``metrics.score``: LDS
   with a bootstrap interval, MAE, 2-s.e. coverage) and their precompute
   cost in training runs (``measure_costs``);
5. ``evaluation.json``, the figure ``evaluation.png`` and, unless told not
   to, the findings ``auto`` reads (``findings.write_findings``): per size,
   the estimators ranked by LDS (ties and undefined LDS after, by MAE).

Costs are measured in the run, in units of one real (degree-0) training run
timed here: the sketch, M directions of series training, from a probe of
``chunk_size`` directions over the first ``probe_steps`` steps against real
training over the same steps; the metagradient from the timings stored with
it (reverse sweep over one training run); retraining from one set's
retraining (and its test outputs) timed beside the unit, since the workers'
own timings (reported too) share the cores with each other.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from runtime import estimators as E
from runtime import metrics
from runtime.batch_query import query_sets
from runtime.batch_retrain import RetrainResult, batch_retrain
from runtime.deletion_sets import DeletionSets, sample_sets
from runtime.findings import write_findings
from runtime.second_order import DATA, second_order_data
from runtime.store import Sketch, atomic_write_bytes, atomic_write_json

__all__ = ["PROBE_STEPS", "evaluate", "measure_costs", "rank_estimators"]

PROBE_STEPS = 200  # steps of the series-training probe that prices a direction
RESAMPLES = 1000


def _write_sets(path: Path, sets: DeletionSets) -> None:
    text = "".join(ln + "\n" for ln in sets.lines()).encode()
    if path.exists():
        if path.read_bytes() == text:
            return
        raise ValueError(
            f"{str(path.parent)!r} holds an evaluation of other deletion sets ({path.name} "
            "differs): choose another --out directory (or delete that one)"
        )
    atomic_write_bytes(path, text)


def measure_costs(
    sketch: Sketch,
    source: Any,
    metagrads: dict[str, Any],
    retrained: RetrainResult | None,
    second: dict[str, dict[str, Any]] | None,
    sets: DeletionSets,
    tests: Sequence[Any],
    probe_steps: int = PROBE_STEPS,
) -> dict[str, Any]:
    """Precompute costs in training runs (module docstring), with what they were made of."""
    from runtime.query import sketch_program
    from runtime.retrain import retrain
    from runtime.spec import compiled

    def best(fn: Callable[[], Any], repeats: int = 3) -> float:
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    cp0 = compiled(source, 0)
    cp0.train(stop=1)  # load the compiled code before timing it
    train = best(lambda: cp0.train())
    steps = min(sketch.steps, probe_steps)
    cpk = sketch_program(sketch)
    b = min(sketch.chunk_size, sketch.num_directions)
    rows = np.ascontiguousarray(sketch.directions()[:b])
    cpk.train_series(rows, stop=1)
    series = best(lambda: cpk.train_series(rows, stop=steps), repeats=2)
    real = best(lambda: cp0.train(stop=steps))
    per_direction = series / b / real
    fo = [r.cost for r in metagrads.values() if r is not None and r.cost is not None]
    so = {need: [r.cost for r in (second or {}).get(need, {}).values()
                 if r is not None and r.cost is not None] for need in DATA}
    # one set's retraining and its outputs, here, beside the unit (workers share the cores)
    one = best(lambda: retrain(source, sets.weight_vector(0), tests))
    workers = retrained.train_seconds if retrained is not None else []
    return {
        "train_seconds": train,
        "probe": {"directions": b, "steps": steps, "series_seconds": series, "real_seconds": real},
        "sketch_direction_runs": per_direction,
        "sketch_runs": per_direction * sketch.num_directions,
        "first_order_runs_per_test": float(np.mean(fo)) if fo else None,
        **{f"{need}_runs_per_test": float(np.mean(c)) if c else None for need, c in so.items()},
        "retrain_runs_per_set": one / train,
        "retrain_worker_seconds": float(np.median(workers)) if workers else None,
    }


def estimator_cost(needs: Sequence[str], costs: dict[str, Any], tests: int) -> dict[str, Any]:
    """An estimator's precompute in training runs: shared by all test inputs, per test input,
    and in total for `tests` test inputs."""
    shared = costs["sketch_runs"] if "coefficients" in needs else 0.0
    parts = [costs[f"{need}_runs_per_test"] for need in ("first_order", *DATA) if need in needs]
    per_test = None if None in parts else float(sum(parts))
    total = None if per_test is None else shared + tests * per_test
    return {"shared_runs": shared, "per_test_runs": per_test, "total_runs": total}


def rank_estimators(by_size: dict[str, dict[str, dict[str, Any]]]) -> dict[str, list[str]]:
    """size -> estimator names, best LDS first (undefined LDS last; ties by lower MAE)."""
    out = {}
    for z, scores in by_size.items():

        def key(name: str, scores: dict[str, dict[str, Any]] = scores) -> tuple:
            s = scores[name]
            lds = s["lds"]
            ok = lds is not None and np.isfinite(lds)
            return (not ok, -lds if ok else 0.0, s["mae"], name)

        out[z] = sorted(scores, key=key)
    return out


def _json(obj: Any) -> Any:
    """NaN/inf -> None, numpy scalars -> Python: strict JSON."""
    if isinstance(obj, dict):
        return {str(k): _json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def evaluate(
    sketch: Sketch,
    tests: Sequence[Any],
    sets: DeletionSets | None = None,
    sizes: Sequence[int] | None = None,
    sets_per_size: int = 50,
    seed: int = 0,
    estimators: Sequence[str] | None = None,
    out: str | Path | None = None,
    workers: int = 1,
    scheduler: str | None = None,
    options: E.Options | None = None,
    resamples: int = RESAMPLES,
    store_findings: bool = True,
    figure: bool = True,
    warn: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Evaluate estimators on `sketch` for `tests` (module docstring); returns the report."""
    from runtime.metagrad import sketch_metagradients
    from runtime.query import check_tests
    from runtime.sources import sketch_source

    warn = warn or (lambda msg: None)
    options = options or E.Options()
    names = list(estimators) if estimators else E.defaults()
    from runtime.findings import read_findings
    for name in names:
        if name != E.AUTO:
            E.get(name)
    if E.AUTO in names:  # auto is judged on other sets than those that informed it
        if read_findings(sketch) is None:
            raise ValueError(
                "--estimators auto: this sketch has no findings yet: evaluate the other "
                "estimators first (auto is then judged on other sets, e.g. another --seed)"
            )
        store_findings = False
    if (sets is None) == (sizes is None):
        raise ValueError("give the deletion sets either as --sizes (sampled) or as --sets FILE")
    if sets_per_size < 2:
        raise ValueError(f"--sets-per-size must be >= 2 (LDS ranks sets), got {sets_per_size}")
    source = sketch_source(sketch, full=True)
    items = check_tests(sketch, tests)
    if sets is None:
        sets = sample_sets(sketch.num_docs, list(sizes or ()), sets_per_size, seed)
    elif sets.num_docs != sketch.num_docs:
        raise ValueError(
            f"the sets are over {sets.num_docs} documents, the sketch has {sketch.num_docs}"
        )
    outdir = Path(out) if out is not None else Path(sketch.path) / "evaluate"
    outdir.mkdir(parents=True, exist_ok=True)
    _write_sets(outdir / "sets.jsonl", sets)

    retrained = batch_retrain(source, sets, items, outdir / "truth.jsonl", workers, scheduler, warn)
    truth = retrained.losses
    needs = {x for n in names if n != E.AUTO for x in E.get(n).needs}
    mgs = sketch_metagradients(sketch, items, compute=True, warn=warn) if (
        "first_order" in needs) else {}
    second = {need: second_order_data(sketch, need, items, True, warn, workers, scheduler)
              for need in DATA if need in needs}
    results = {n: query_sets(sketch, items, sets, n, options, warn=warn) for n in names}
    lines = [  # records are set-major: record i is test input i % D; auto's name its pick
        json.dumps(_json({
            **r,
            "estimator": n,
            **({"chosen": r["estimator"]} if n == E.AUTO else {}),
            "truth": float(truth[r["set"], i % len(items)]),
        })) + "\n"
        for n, res in results.items()
        for i, r in enumerate(res.records())
    ]
    atomic_write_bytes(outdir / "predictions.jsonl", "".join(lines).encode())
    costs = measure_costs(sketch, source, mgs, retrained, second, sets, items)
    size_list = sorted({int(z) for z in sets.sizes})
    by_size: dict[str, dict[str, dict[str, Any]]] = {}
    for z in size_list:
        rows = np.flatnonzero(sets.sizes == z)
        by_size[str(z)] = {
            n: metrics.score(
                results[n].prediction[rows],
                results[n].stderr[rows],
                truth[rows],
                resamples,
                [seed, z, k],
            )
            for k, n in enumerate(names)
        }
    ranking = rank_estimators(by_size)
    report = {
        "sketch": str(sketch.path),
        "num_docs": sketch.num_docs,
        "steps": sketch.steps,
        "degree": sketch.degree,
        "directions": sketch.num_directions,
        "options": {"degree": options.degree, "groups": options.groups},
        "tests": [t.label for t in items],
        "sets": {
            "count": len(sets),
            "sizes": size_list,
            "seed": seed,
            "sets_per_size": sets_per_size if sizes else None,
            "file": str(outdir / "sets.jsonl"),
        },
        "retrain": {
            "computed": retrained.computed,
            "reused": retrained.reused,
            "seconds": retrained.seconds,
            "file": str(outdir / "truth.jsonl"),
        },
        "costs": costs,
        "estimators": {
            n: {
                "summary": "the estimator the findings rank best at the nearest size"
                if n == E.AUTO else E.get(n).summary,
                "needs": [] if n == E.AUTO else list(E.get(n).needs),
                "cost": None if n == E.AUTO else estimator_cost(E.get(n).needs, costs, len(items)),
                "by_size": {z: by_size[z][n] for z in by_size},
            }
            for n in names
        },
        "ranking": ranking,
        "predictions": str(outdir / "predictions.jsonl"),
        "figure": None,
        "findings": None,
    }
    report = _json(report)
    if figure:
        from runtime.evaluate_plot import plot_evaluation

        fig = outdir / "evaluation.png"
        plot_evaluation(
            fig,
            report,
            {n: r.prediction for n, r in results.items()},
            truth,
            sets.sizes,
            next(iter(results.values())).c0,
        )
        report["figure"] = str(fig)
    if store_findings:
        body = {
            "sizes": {
                z: {
                    "ranking": ranking[z],
                    "lds": {n: by_size[z][n]["lds"] for n in names},
                    "scale": {n: by_size[z][n]["scale"] for n in names},
                    "lds_ci": {n: by_size[z][n]["lds_ci"] for n in names},
                }
                for z in by_size
            },
            "tests": report["tests"],
            "options": report["options"],
            "sets": {k: report["sets"][k] for k in ("count", "seed", "sets_per_size")},
        }
        report["findings"] = str(write_findings(sketch, _json(body)))
    atomic_write_json(outdir / "evaluation.json", report)
    return report
