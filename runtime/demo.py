"""The README's main job, end to end, in seconds on two cores (half a minute cold).

Train microgpt on the first few hundred names of the shipped corpus, compile
a degree-K sketch along M random directions, predict the test loss of a name
if every training name containing a chosen letter were deleted, then retrain
without those names to get the truth, show both side by side and draw one
picture (the prediction by degree against the truth).

What overlaps (2 cores): a helper process retrains without the names
(compiling the real-mode code on a first run) and loads matplotlib, while this
process compiles the series step code and computes the sketch.  The test
name's degree-K output function is compiled by whichever process is free
first (``_claim``): usually the helper, once it has retrained, while this
process still sketches; by then the series kernels it shares with the step are
cached (compiling it at the start, beside the step, would compile them twice at
once).  The picture is drawn in the helper.  The sketch is small, so by default
it is computed here (``workers=1``): a worker process would spend longer
starting than it saves (bench/RESULTS.md, "Latency (issue 20)").
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DEFAULTS", "PICTURE", "format_result", "run"]

DEFAULTS: dict[str, Any] = {
    "num_docs": 250,
    "directions": 32,
    "degree": 3,
    "letter": "f",
    "test": "fiona",
    "workers": 1,
}
PICTURE = "circuitsketch-demo.png"
"""The picture's name: in --out DIR if given, else in the working directory."""


def _cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _claim(flag: Path) -> bool:
    """True for the one process (this or the helper) that creates `flag` first: it compiles
    the test name's output function; the other waits for it or leaves it."""
    try:
        os.close(os.open(flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def _truth(source, weights: np.ndarray, test: str, degree: int, flag: str) -> dict[str, Any]:
    """In the helper process: retrain without the names (compiling real mode on a first
    run); compile the test name's degree-`degree` output function unless the main process
    has claimed it (`flag`)."""
    from runtime.retrain import retrain
    from runtime.spec import compiled

    t0 = time.perf_counter()
    (truth,), _ = retrain(source, weights, [test])
    t_retrain = time.perf_counter() - t0
    compiled_output = _claim(Path(flag))
    if compiled_output:
        cp = compiled(source, degree)
        hi = np.zeros(degree * cp.state_size, np.complex128)  # one direction, zeros
        cp.output(cp.initial_state(), test, hi)
    return {"truth": truth, "seconds": t_retrain, "compiled_output": compiled_output}


def _load_pyplot() -> float:
    """In the helper process, after `_truth` (while the main process predicts): load
    matplotlib for the picture drawn there later; returns the helper's CPU time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # loaded now, for the picture drawn here later

    return _cpu()


def _bar(total: int, progress: bool | None):
    """One tqdm bar over the directions whose description names the stage (None: off;
    default: when stderr is a terminal)."""
    import sys

    if progress is False or (progress is None and not sys.stderr.isatty()):
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="dir", file=sys.stderr, ncols=100, desc="starting",
                bar_format="{desc:<44} {bar} {n_fmt}/{total_fmt} dir [{elapsed}]")


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
    model_config: dict[str, Any] | None = None,
    train_config: dict[str, Any] | None = None,
    epochs: int | None = None,
    plot: str | None = None,
) -> dict[str, Any]:
    """The demo's result; `model_config` / `train_config` / `epochs`: microgpt's size and
    training (``runtime.sources.microgpt_settings``; default: the spec's, one epoch).
    `plot`: where to draw the picture (None: ``PICTURE`` in `out`, else in the working
    directory; "": no picture)."""
    from circuitsketch.models import microgpt
    from runtime.parallel import helper_process
    from runtime.precompute import load_series_code, precompute
    from runtime.query import counted, deletion_weights, predict
    from runtime.sources.microgpt import MicrogptSource, check_test_docs, read_training_docs
    from runtime.sources.microgpt_settings import normalized_train, num_steps
    from runtime.spec import compiled
    from runtime.store import Sketch

    log = log or (lambda s: None)
    n = num_docs or DEFAULTS["num_docs"]
    m = directions or DEFAULTS["directions"]
    k = degree or DEFAULTS["degree"]
    letter = DEFAULTS["letter"] if letter is None else letter
    test = DEFAULTS["test"] if test is None else test  # "" is refused below, not the default
    workers = workers or DEFAULTS["workers"]
    if not test.strip():
        raise ValueError("--test: empty test name")
    try:
        check_test_docs([test])
    except ValueError as e:
        raise ValueError(f"--test {test!r}: {e}") from None
    if len(letter) != 1:
        raise ValueError(f"--letter must be a single character, got {letter!r}")
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise ValueError(f"--out {out!r} is a file, not a directory")
    if plot and (not Path(plot).parent.is_dir() or Path(plot).is_dir()):
        raise ValueError(f"--plot {plot!r}: no such directory, or a directory (give a "
                         "file name in an existing directory)")

    t_start = time.perf_counter()
    corpus = microgpt.read_docs(microgpt.corpus_path())
    if n > len(corpus):
        raise ValueError(f"--num-docs {n}: the corpus has {len(corpus)} names")
    temp = out is None
    work = Path(tempfile.mkdtemp(prefix="circuitsketch-demo-") if temp else out)
    picture = (Path(plot) if plot else None) if plot is not None else (
        Path(PICTURE) if temp else work / PICTURE)
    bar = None
    flag = work / f".output-{os.getpid()}-{time.time_ns()}"  # see _claim
    try:
        work.mkdir(parents=True, exist_ok=True)
        docs_file = work / "docs.txt"
        text = "".join(d + "\n" for d in corpus[:n])
        if not docs_file.is_file() or docs_file.read_text(encoding="utf-8") != text:
            docs_file.write_text(text, encoding="utf-8")
        docs, docs_sha = read_training_docs(docs_file)
        train = normalized_train(train_config or {})
        steps = num_steps(len(docs), None, epochs, train.get("batch_size", 1))
        source = MicrogptSource(tuple(docs), steps, seed=seed, model_config=model_config or {},
                                train_config=train)
        if not any(letter in d for d in docs):
            raise ValueError(
                f"--letter {letter!r}: none of the first {n} names contains it, so there is "
                "nothing to delete (choose a letter a-z)"
            )
        w, sel, what = deletion_weights(docs, contains=letter)
        with helper_process() as helper:
            truth_job = helper.submit(_truth, source, w, test, k, str(flag))
            pyplot_job = helper.submit(_load_pyplot)  # runs after it, while this predicts
            bar = _bar(m, progress)
            stage = _stages(bar, log)

            stage(f"[1/4] compile: microgpt's series code, K = {k} (a first run compiles "
                  "the Numba kernels, cached on disk; a second process retrains meanwhile)",
                  f"compile series code (K = {k})")
            t0 = time.perf_counter()
            load_series_code(compiled(source, k))
            t_compile = time.perf_counter() - t0

            stage(f"[2/4] sketch: {n} names, T = {steps} steps, M = {m} directions, "
                  f"{workers} worker(s)", f"sketch: {m} directions")
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
                progress=False,
                warn=warn,
                bar=bar,
            )
            t_sketch = time.perf_counter() - t0

            stage(f"[3/4] predict: test loss of {test!r} without the "
                  f"{counted(len(sel), what)}", f"predict {test!r}")
            t0 = time.perf_counter()
            if not _claim(flag):  # the helper compiles the output function: wait for it
                truth_job.result()
            sketch = Sketch.open(work / "sketch")
            pred = predict(sketch, [test], w, warn=warn)[0]
            t_query = time.perf_counter() - t0
            t0 = time.perf_counter()
            pred_again = predict(sketch, [test], w, warn=warn)[0]  # cached coefficients
            t_query_cached = time.perf_counter() - t0
            assert pred_again["prediction"] == pred["prediction"]

            stage(f"[4/4] truth: retrained {steps} steps without those names "
                  "(in the second process)" + (f"; picture {picture}" if picture else ""),
                  "retrain" + (" and draw" if picture else ""))
            t0 = time.perf_counter()
            done = truth_job.result()
            truth = done["truth"]
            helper_cpu = pyplot_job.result()
            if picture is not None:
                from runtime.demo_plot import plot_demo

                helper.submit(plot_demo, str(picture), pred, truth, test, len(sel),
                              letter).result()
            t_wait = time.perf_counter() - t0
            if bar is not None:
                bar.set_description_str("done")
    finally:
        if bar is not None:
            bar.close()
        flag.unlink(missing_ok=True)
        if temp:
            shutil.rmtree(work, ignore_errors=True)

    change = pred["prediction"] - pred["c0"]
    true_change = truth - pred["c0"]
    return {
        "num_docs": n,
        "steps": steps,
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
        "picture": None if picture is None else str(picture.resolve()),
        "seconds": {
            "compile": t_compile,
            "sketch": t_sketch,
            "sketch_per_direction": t_sketch / m,
            "query": t_query,
            "query_cached": t_query_cached,
            "retrain": done["seconds"],
            "finish": t_wait,
            "total": time.perf_counter() - t_start,
        },
        # process time (user + system) of this process and of the helper: less sensitive
        # than the wall times above to other jobs on the machine
        "cpu_seconds": {"main": _cpu(), "helper": helper_cpu},
        "output_compiled_in": "helper" if done["compiled_output"] else "main",
    }


def _stages(bar, log: Callable[[str], None]) -> Callable[[str, str], None]:
    """stage(line, short): log the line, and name the stage on the bar."""

    def stage(line: str, short: str) -> None:
        if bar is not None:
            bar.set_description_str(short)
        else:
            log(line)

    return stage


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
        f"time: compile {s['compile']:.1f} s, sketch {s['sketch']:.1f} s "
        f"({s['sketch_per_direction']:.2f} s per direction), first query {s['query']:.2f} s, "
        f"cached query {s['query_cached'] * 1e3:.1f} ms, retrain {s['retrain']:.1f} s (in a "
        f"second process, overlapped), total {s['total']:.1f} s",
    ]
    if not r["reliable"]:
        lines.append("warning: the sketch flags this prediction as unreliable (error bar too wide)")
    if r["picture"]:
        lines.append(f"picture: {r['picture']} (the prediction by degree against the truth)")
    if r["sketch_dir"]:
        lines.append(f"sketch kept in {r['sketch_dir']} (try: circuitsketch influence ...)")
    return "\n".join(lines)
