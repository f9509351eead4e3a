"""The README's main job, end to end, in a couple of minutes on two cores.

Train microgpt on the first few hundred names of the shipped corpus, compile
a degree-K sketch along M random directions, predict the test loss of a name
if every training name containing a chosen letter were deleted, then retrain
without those names to get the truth, and show both side by side.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DEFAULTS", "format_result", "run"]

DEFAULTS: dict[str, Any] = {
    "num_docs": 250,
    "directions": 64,
    "degree": 3,
    "letter": "f",
    "test": "fiona",
}


def run(
    out: str | None = None,
    num_docs: int | None = None,
    directions: int | None = None,
    degree: int | None = None,
    letter: str | None = None,
    test: str | None = None,
    workers: int | None = None,
    seed: int = 0,
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    from circuitsketch.models import microgpt
    from runtime.parallel import default_workers
    from runtime.precompute import precompute
    from runtime.query import counted, deletion_weights, predict
    from runtime.retrain import retrain
    from runtime.sources.microgpt import MicrogptSource, check_test_docs, read_training_docs
    from runtime.store import Sketch

    log = log or (lambda s: None)
    n = num_docs or DEFAULTS["num_docs"]
    m = directions or DEFAULTS["directions"]
    k = degree or DEFAULTS["degree"]
    letter = DEFAULTS["letter"] if letter is None else letter
    test = test or DEFAULTS["test"]
    workers = workers or default_workers()
    if not test.strip():
        raise ValueError("--test: empty test name")
    try:
        check_test_docs([test])
    except ValueError as e:
        raise ValueError(f"--test {test!r}: {e}") from None
    if len(letter) != 1:
        raise ValueError(f"--letter must be a single character, got {letter!r}")

    t_start = time.perf_counter()
    corpus = microgpt.read_docs(microgpt.corpus_path())
    if n > len(corpus):
        raise ValueError(f"--num-docs {n}: the corpus has {len(corpus)} names")
    temp = out is None
    work = Path(tempfile.mkdtemp(prefix="circuitsketch-demo-") if temp else out)
    try:
        work.mkdir(parents=True, exist_ok=True)
        docs_file = work / "docs.txt"
        text = "".join(d + "\n" for d in corpus[:n])
        if not docs_file.is_file() or docs_file.read_text(encoding="utf-8") != text:
            docs_file.write_text(text, encoding="utf-8")
        docs, docs_sha = read_training_docs(docs_file)
        source = MicrogptSource(tuple(docs), len(docs), seed=seed)
        if not any(letter in d for d in docs):
            raise ValueError(
                f"--letter {letter!r}: none of the first {n} names contains it, so there is "
                "nothing to delete (choose a letter a-z)"
            )
        w, sel, what = deletion_weights(docs, contains=letter)

        log(
            f"[1/3] sketch: microgpt on the first {n} names, T = {n} steps, degree K = {k}, "
            f"M = {m} directions, {workers} worker(s) (the first run compiles the Numba "
            "kernels once, about a minute; they are cached on disk)"
        )
        t0 = time.perf_counter()
        report = precompute(
            work / "sketch",
            source,
            k,
            num_directions=m,
            seed=seed,
            workers=workers,
            docs_sha256=docs_sha,
            info={"docs_file": str(docs_file.resolve()), "made_by": "circuitsketch demo"},
            progress=progress,
            warn=warn,
        )
        t_sketch = time.perf_counter() - t0

        log(f"[2/3] predict: test loss of {test!r} without the {counted(len(sel), what)}")
        t0 = time.perf_counter()
        sketch = Sketch.open(work / "sketch")
        pred = predict(sketch, [test], w, warn=warn)[0]
        t_query = time.perf_counter() - t0
        t0 = time.perf_counter()
        pred_again = predict(sketch, [test], w, warn=warn)[0]  # cached coefficients
        t_query_cached = time.perf_counter() - t0
        assert pred_again["prediction"] == pred["prediction"]

        log(f"[3/3] truth: retrain {n} steps without those names")
        t0 = time.perf_counter()
        (truth,), _ = retrain(source, w, [test])
        t_retrain = time.perf_counter() - t0
    finally:
        if temp:
            shutil.rmtree(work, ignore_errors=True)

    change = pred["prediction"] - pred["c0"]
    true_change = truth - pred["c0"]
    return {
        "num_docs": n,
        "steps": n,
        "degree": k,
        "directions": m,
        "workers": workers,
        "letter": letter,
        "deleted": [docs[i] for i in sel],
        "n_deleted": len(sel),
        "test": test,
        "c0": pred["c0"],
        "prediction": pred["prediction"],
        "stderr": pred["stderr"]["total"],
        "terms": pred["terms"],
        "term_stderr": pred["stderr"]["terms"],
        "median_of_means": pred["median_of_means"],
        "groups": pred["groups"],
        "reliable": pred["reliable"],
        "retrained": truth,
        "predicted_change": change,
        "true_change": true_change,
        "error": pred["prediction"] - truth,
        "error_in_stderrs": (pred["prediction"] - truth) / pred["stderr"]["total"]
        if np.isfinite(pred["stderr"]["total"]) and pred["stderr"]["total"] > 0
        else None,
        "chunks_reused": report.reused,
        "sketch_dir": None if temp else str((work / "sketch").resolve()),
        "seconds": {
            "sketch": t_sketch,
            "sketch_per_direction": t_sketch / m,
            "query": t_query,
            "query_cached": t_query_cached,
            "retrain": t_retrain,
            "total": time.perf_counter() - t_start,
        },
    }


def format_result(r: dict[str, Any]) -> str:
    s = r["seconds"]
    shown = ", ".join(r["deleted"][:8]) + (", ..." if r["n_deleted"] > 8 else "")
    lines = [
        f"microgpt trained on the first {r['num_docs']} names ({r['steps']} steps); "
        f"sketch of degree {r['degree']} along {r['directions']} directions",
        f"deleting the {r['n_deleted']} name{'' if r['n_deleted'] == 1 else 's'} containing "
        f"{r['letter']!r} ({shown})",
        f"effect on the test loss of {r['test']!r}:",
        "",
        f"  {'':<28}{'test loss':>12}{'change':>12}",
        f"  {'trained on all names':<28}{r['c0']:>12.6f}",
        f"  {'predicted by the sketch':<28}{r['prediction']:>12.6f}{r['predicted_change']:>+12.6f}"
        f"  ± {r['stderr']:.6f} (1 s.e.)",
        f"  {'retrained without them':<28}{r['retrained']:>12.6f}{r['true_change']:>+12.6f}",
        f"  {'prediction - truth':<28}{r['error']:>+12.6f}"
        + (
            f"{'':12}  = {r['error_in_stderrs']:+.2f} standard errors"
            if r["error_in_stderrs"] is not None
            else ""
        ),
        "",
        "  terms of the prediction: "
        + ", ".join(
            f"r={i + 1}: {t:+.6f} ± {e:.6f}"
            for i, (t, e) in enumerate(zip(r["terms"], r["term_stderr"], strict=True))
        ),
        f"  median of means over {r['groups']} groups: {r['median_of_means']:.6f}",
        "",
        f"time: sketch {s['sketch']:.1f} s ({s['sketch_per_direction']:.2f} s per direction), "
        f"first query {s['query']:.2f} s, cached query {s['query_cached'] * 1e3:.1f} ms, "
        f"retrain {s['retrain']:.1f} s, total {s['total']:.1f} s",
    ]
    if not r["reliable"]:
        lines.append("warning: the sketch flags this prediction as unreliable (error bar too wide)")
    if r["sketch_dir"]:
        lines.append(f"sketch kept in {r['sketch_dir']} (try: circuitsketch influence ...)")
    return "\n".join(lines)
