"""Shared setting and sketch store of the paper experiments (issue #5, issue #7).

The setting: the corpus names, shuffled once with ``np.random.default_rng(0)``
(``SHUFFLE_SEED``), the first N = 1000 of them as training documents, T = 1000
training steps (step s trains on document s mod N), the deletion set D_x of
the names containing the letter "x", and the test document "max".  ``--quick``
shrinks it to N = T = 20.

A sketch is the (M, K+1) test-loss coefficients along M Gaussian directions
(``runtime.directions.gaussian_directions(seed, 0, M, N)``).  It is computed
in chunks of consecutive directions, each chunk written to
``<out>/<tag>/`` at once (its parameter series ``phi_XXXX.npy`` and the
coefficients of every test document asked for), so an interrupted run resumes
and another test document costs only an output evaluation per chunk.
Chunks run in up to two worker processes (spawned; each compiles once).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import platform
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from circuitsketch.models import microgpt
from circuitsketch.program import Program
from compiler.compiled import CompiledProgram, output_from_params, params_of
from runtime.directions import gaussian_directions
from runtime.estimate import term_samples

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
FIGURES = HERE / "figures"

SHUFFLE_SEED = 0  # np.random.default_rng(SHUFFLE_SEED).permutation(32033)[:N]
DIRECTION_SEED = 0  # gaussian_directions(DIRECTION_SEED, j, ...) for direction j
TEST_DOC = "max"
LETTER = "x"
FULL = {"n": 1000, "steps": 1000, "letter": LETTER}
# none of the first 20 shuffled names holds an "x"; quick mode deletes the 6 with an "o"
QUICK = {"n": 20, "steps": 20, "letter": "o"}
# the shared sketch of experiments 3-5
SKETCH_M, SKETCH_K = 500, 3
QUICK_M, QUICK_K = 8, 3


@dataclass
class Setting:
    """Training documents and their microgpt program."""

    n: int
    steps: int
    docs: list[str]
    program: Program
    quick: bool
    letter: str  # the deletion set of experiments 2, 3 and 5: names containing it
    _compiled: dict[int, CompiledProgram] = field(default_factory=dict, repr=False)

    def compiled(self, degree: int) -> CompiledProgram:
        """The CompiledProgram of this degree, built once per process."""
        if degree not in self._compiled:
            self._compiled[degree] = CompiledProgram(self.program, degree)
        return self._compiled[degree]

    def letter_weights(self, letter: str | None = None) -> np.ndarray:
        """1_D for D = the documents containing `letter` (default: the setting's letter)."""
        letter = self.letter if letter is None else letter
        return np.array([letter in d for d in self.docs], np.float64)

    def retrain(self, weights: np.ndarray, test: str = TEST_DOC) -> np.ndarray:
        """Exact test loss after real training with each row of weights (Q, N) -> (Q,)."""
        cp = self.compiled(0)
        w = np.atleast_2d(weights)
        out = np.empty(w.shape[0])
        for q in range(w.shape[0]):
            state, _ = cp.train(w[q])
            out[q] = cp.output(state, test)
        return out

    def describe(self) -> dict:
        return {
            "N": self.n,
            "T": self.steps,
            "shuffle": f"np.random.default_rng({SHUFFLE_SEED}).permutation(32033)[:{self.n}]",
            "quick": self.quick,
            "deletion_letter": self.letter,
        }


def make_setting(quick: bool = False) -> Setting:
    size = QUICK if quick else FULL
    docs = microgpt.read_docs(microgpt.corpus_path())
    order = np.random.default_rng(SHUFFLE_SEED).permutation(len(docs))[: size["n"]]
    sub = [docs[i] for i in order]
    program = microgpt.build(sub, steps=size["steps"])
    return Setting(size["n"], size["steps"], sub, program, quick, size["letter"])


# ---------------------------------------------------------------- small helpers
def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties), numpy only."""

    def ranks(x: np.ndarray) -> np.ndarray:
        _, inv, counts = np.unique(
            np.asarray(x, np.float64), return_inverse=True, return_counts=True
        )
        first = np.cumsum(counts) - counts
        return (first + (counts - 1) / 2.0)[inv]

    ra, rb = ranks(a), ranks(b)
    if np.std(ra) == 0 or np.std(rb) == 0:
        return math.nan
    return float(np.corrcoef(ra, rb)[0, 1])


def finite_json(obj: Any) -> Any:
    """Plain-Python copy of obj with numpy scalars/arrays converted (NaN -> None)."""
    if isinstance(obj, dict):
        return {str(k): finite_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite_json(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return finite_json(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def machine() -> str:
    return f"{platform.machine()}, {multiprocessing.cpu_count()} cores, {platform.processor()}"


def parse_args(doc: str, argv: Sequence[str] | None, extra: Callable | None = None):
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small N, T, M, K: runs in seconds")
    ap.add_argument("--out", type=Path, default=None, help="output dir (examples/out)")
    ap.add_argument("--workers", type=int, default=2, help="processes for sketch chunks (<= 2)")
    if extra is not None:
        extra(ap)
    args = ap.parse_args(argv)
    args.out = (args.out or OUT).resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    args.workers = max(1, min(2, args.workers))
    return args


def write_result(args, name: str, result: dict) -> Path:
    """examples/out/<name>[_quick].json"""
    path = args.out / f"{name}{'_quick' if args.quick else ''}.json"
    path.write_text(json.dumps(finite_json(result), indent=1))
    print(f"wrote {path}")
    return path


def figure_path(args, name: str) -> Path:
    """Full runs: examples/figures/<name>.png; quick runs: <out>/<name>_quick.png."""
    if args.quick:
        return args.out / f"{name}_quick.png"
    FIGURES.mkdir(parents=True, exist_ok=True)
    return FIGURES / f"{name}.png"


def save_figure(fig, args, name: str) -> Path:
    """Lay out, write (see ``figure_path``) and close a figure; returns its path."""
    fig.tight_layout()
    path = figure_path(args, name)
    fig.savefig(path, dpi=120)
    pyplot().close(fig)
    return path


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ---------------------------------------------------------------- the sketch store
_WORKER: dict[str, Any] = {}


def _init_worker(quick: bool, degree: int) -> None:
    setting = make_setting(quick)
    _WORKER["setting"] = setting
    _WORKER["cp"] = setting.compiled(degree)


def _chunk(seed: int, start: int, stop: int, tests: Sequence[str], folder: str, index: int):
    """Series training along directions [start, stop): writes phi, returns coefficients."""
    setting, cp = _WORKER["setting"], _WORKER["cp"]
    t0 = time.perf_counter()
    psi = gaussian_directions(seed, start, stop, setting.n)
    s0, hi, _ = cp.train_series(psi)
    p0, phi = params_of(cp, s0, hi, psi.shape[0])
    coeffs = {t: output_from_params(cp, p0, phi, t) for t in tests}
    d = Path(folder)
    _save(d / f"phi_{index:04d}.npy", phi)
    if not (d / "p0.npy").exists():
        _save(d / "p0.npy", p0)
    for t, c in coeffs.items():
        _save(d / f"coeffs_{t}_{index:04d}.npy", c)
    return index, coeffs, time.perf_counter() - t0


def _save(path: Path, arr: np.ndarray) -> None:
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, arr)
    tmp.replace(path)


@dataclass
class Sketch:
    """Coefficients (M, K+1) per test document and the directions (M, N)."""

    coeffs: dict[str, np.ndarray]
    psi: np.ndarray
    degree: int
    seconds: float  # wall time of the chunks computed by this call (0 if all reused)
    chunk_seconds: list[float]  # per computed chunk (worker time)
    folder: Path


def sketch(
    setting: Setting,
    degree: int,
    m: int,
    tests: Sequence[str] = (TEST_DOC,),
    seed: int = DIRECTION_SEED,
    batch: int = 8,
    workers: int = 2,
    out: Path = OUT,
    name: str = "sketch",
) -> Sketch:
    """The degree-K sketch along directions 0..M-1 of `seed`, computing only missing chunks."""
    folder = out / f"{name}_n{setting.n}_t{setting.steps}_k{degree}_seed{seed}_b{batch}"
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {
        "setting": setting.describe(),
        "degree": degree,
        "direction_seed": seed,
        "batch": batch,
        "docs_head": setting.docs[:5],
    }
    mpath = folder / "manifest.json"
    if mpath.exists():
        old = json.loads(mpath.read_text())
        if old != manifest:
            raise ValueError(f"{folder} holds a different sketch ({old}); delete it to recompute")
    else:
        mpath.write_text(json.dumps(manifest, indent=1))
    bounds = [(a, min(a + batch, m)) for a in range(0, m, batch)]
    coeffs: dict[str, list[np.ndarray | None]] = {t: [None] * len(bounds) for t in tests}
    todo = []
    for i, (a, b) in enumerate(bounds):
        files = {t: folder / f"coeffs_{t}_{i:04d}.npy" for t in tests}
        phi_file = folder / f"phi_{i:04d}.npy"
        ok = True
        for t, f in files.items():
            if f.exists() and np.load(f).shape == (b - a, degree + 1):
                coeffs[t][i] = np.load(f)
            elif phi_file.exists():  # finished chunk, new test document: one output evaluation
                cp = setting.compiled(degree)
                c = output_from_params(cp, np.load(folder / "p0.npy"), np.load(phi_file), t)
                _save(f, c)
                coeffs[t][i] = c
            else:
                ok = False
        if not ok or not phi_file.exists():
            todo.append(i)
    chunk_seconds: list[float] = []
    t0 = time.perf_counter()
    if todo:
        desc = f"sketch K={degree} M={m} ({len(todo)}/{len(bounds)} chunks to do)"
        jobs = [(seed, *bounds[i], tuple(tests), str(folder), i) for i in todo]
        bar = tqdm(total=len(todo), desc=desc, unit="chunk")
        if workers <= 1 or len(todo) == 1:
            _init_worker(setting.quick, degree)
            for job in jobs:
                i, c, dt = _chunk(*job)
                for t in tests:
                    coeffs[t][i] = c[t]
                chunk_seconds.append(dt)
                bar.update()
        else:
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(
                workers, mp_context=ctx, initializer=_init_worker, initargs=(setting.quick, degree)
            ) as pool:
                futures = [pool.submit(_chunk, *job) for job in jobs]
                for fut in as_completed(futures):
                    i, c, dt = fut.result()
                    for t in tests:
                        coeffs[t][i] = c[t]
                    chunk_seconds.append(dt)
                    bar.update()
        bar.close()
    seconds = time.perf_counter() - t0 if todo else 0.0
    psi = gaussian_directions(seed, 0, m, setting.n)
    return Sketch(
        {t: np.concatenate(v) for t, v in coeffs.items()},  # type: ignore[arg-type]
        psi,
        degree,
        seconds,
        chunk_seconds,
        folder,
    )


def shared_sketch(
    setting: Setting, workers: int = 2, out: Path = OUT, tests: Sequence[str] = (TEST_DOC,)
) -> Sketch:
    """The M = 500, K = 3 sketch of experiments 3-5 (M = 8, K = 3 in quick mode)."""
    m, k = (QUICK_M, QUICK_K) if setting.quick else (SKETCH_M, SKETCH_K)
    return sketch(setting, k, m, tests, workers=workers, out=out)


def u_of(psi: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """u = conj(psi) @ w.T for real weights (Q, N) -> (M, Q), as two real products."""
    w = np.atleast_2d(weights)
    return psi.real @ w.T - 1j * (psi.imag @ w.T)


def exact_series(setting: Setting, weights: np.ndarray, degree: int, test: str = TEST_DOC):
    """Coefficients c_0..c_K (K+1,) of F(t w) in t: one series run along the direction w itself."""
    cp = setting.compiled(degree)
    d = np.asarray(weights, np.complex128)[None]
    s0, hi, _ = cp.train_series(d)
    p0, phi = params_of(cp, s0, hi, 1)
    return output_from_params(cp, p0, phi, test)[0]


def hybrid(
    coeffs: np.ndarray,
    psi: np.ndarray,
    g: np.ndarray,
    weights: np.ndarray,
    degree: int | None = None,
):
    """Exact first order + sketched orders 2..K: (predicted change (Q,), stderr (Q,)).

    K is the sketch's degree unless `degree` is given.  The standard error
    comes from the sketched orders >= 2 only (the first order is exact).
    """
    m, kp1 = coeffs.shape
    k = kp1 - 1 if degree is None else degree
    w = np.atleast_2d(weights)
    t = term_samples(coeffs, u_of(psi, w), psi.shape[1], k)[1:].sum(axis=0)  # (M, Q)
    se = t.std(axis=0, ddof=1) / math.sqrt(m) if m > 1 else np.full(w.shape[0], math.nan)
    return w @ g + t.mean(axis=0), se


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table; floats in 4 significant digits."""

    def fmt(v: Any) -> str:
        if isinstance(v, float | np.floating):
            return "-" if not math.isfinite(v) else f"{v:.4g}"
        return "-" if v is None else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
