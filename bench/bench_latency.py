"""Latency (issue 20): a CLI query, a worker's start-up, the demo; wall and process time.

    python bench/bench_latency.py [--repeat 5] [--demo] [--cold]

Every measurement runs in a fresh process, the way a user meets it; process
time is user + system CPU of that process and its children (getrusage), so
it is less sensitive than wall time to other jobs on a shared machine.

* query: ``circuitsketch query SKETCH --doc D --delete-contains f`` on the demo's
  sketch (made first with ``circuitsketch demo --out``), for a test name asked
  before (its coefficients cached beside the sketch) and for a new one (its
  output function loaded from the kernel cache, evaluated on every direction);
* worker start-up: the phases of a fresh spawned worker process up to its
  first chunk (imports, tracing, passes and generated module, Numba loading
  the cached step functions), measured inside that process, as where workers
  cannot be forked; a forked worker's (``fork``): from the pool's start to the
  worker's first task, wall and the worker's own CPU time, after the parent
  has loaded the step functions (timed too: that load is what moved to the
  parent); and a whole ``precompute`` of two one-direction chunks on two
  workers (T = 250, K = 3), whose wall time less one chunk's is the start-up a
  compile waits for;
* directions (``--parts directions``): ``circuitsketch compile`` of 16 and of
  500 directions at K = 3 on bench_compiler's setting (1000 names, T = 1000)
  with 2 workers on the warm cache, wall time per direction of the whole command;
* kept (``--parts kept``): in a process running a thread of its own (as a notebook's
  kernel does, so workers are spawned), four ``precompute`` calls of two one-direction
  chunks on two workers: the first starts the workers, the next two find them kept,
  the last starts them again after ``parallel.shutdown_workers()``;
* demo (``--demo``): ``circuitsketch demo`` on the warm cache; with ``--cold``
  first on an empty ``CIRCUITSKETCH_CACHE`` (a first run: everything compiles).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

WORKER = r"""
import json, resource, sys, time
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
t0 = (time.perf_counter(), cpu())
marks = []
def mark(name):
    marks.append((name, time.perf_counter(), cpu()))
import numpy as np
mark("import numpy")
from runtime.precompute import ChunkJob, compute_chunk
from runtime.sources.microgpt import MicrogptSource
mark("import runtime")
import compiler.compiled
mark("import numba and the compiler")
from circuitsketch.models import microgpt
docs = tuple(microgpt.read_docs(microgpt.corpus_path())[:250])
src = MicrogptSource(docs, 250, seed=0)
from runtime.spec import build_program, compiled
import runtime.spec as spec
prog = build_program(src)
mark("trace the training program")
cp = compiler.compiled.CompiledProgram(prog, 3)
spec._COMPILED[(src.key, 3)] = cp
mark("passes, generated module")
from runtime.directions import gaussian_directions
job = ChunkJob(src, 3, 0, 0, gaussian_directions(0, 0, 1, 250))
compute_chunk(job)
mark("first chunk (1 direction)")
compute_chunk(job)
mark("second chunk (1 direction)")
out, prev = [], t0
for name, w, c in marks:
    out.append([name, w - prev[0], c - prev[1]])
    prev = (w, c)
print(json.dumps(out))
"""


POOL = r"""
import json, resource, sys, tempfile, time
from pathlib import Path
from circuitsketch.models import microgpt
from runtime.directions import gaussian_directions
from runtime.precompute import precompute
from runtime.sources.microgpt import MicrogptSource
from runtime.spec import compiled
def cpu(who):
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime
docs = tuple(microgpt.read_docs(microgpt.corpus_path())[:250])
src = MicrogptSource(docs, 250, seed=0)
with tempfile.TemporaryDirectory() as tmp:
    t0, c0 = time.perf_counter(), cpu(resource.RUSAGE_SELF) + cpu(resource.RUSAGE_CHILDREN)
    precompute(Path(tmp) / "sk", src, 3, num_directions=2, chunk_size=1, workers=2,
               progress=False)
    wall = time.perf_counter() - t0
    total_cpu = cpu(resource.RUSAGE_SELF) + cpu(resource.RUSAGE_CHILDREN) - c0
cp = compiled(src, 3)
psi = gaussian_directions(0, 0, 1, 250)
cp.train_series(psi)
t0 = time.perf_counter()
cp.train_series(psi)
chunk = time.perf_counter() - t0
print(json.dumps({"precompute_wall_s": wall, "precompute_cpu_s": total_cpu, "chunk_s": chunk}))
"""


KEPT = r"""
import json, threading, tempfile, time
from pathlib import Path
from circuitsketch.models import microgpt
from runtime import parallel
from runtime.precompute import precompute
from runtime.sources.microgpt import MicrogptSource
# a notebook's kernel runs threads of its own, so workers are spawned, not forked
threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()
assert not parallel.forks()
docs = tuple(microgpt.read_docs(microgpt.corpus_path())[:250])
walls = []
with tempfile.TemporaryDirectory() as tmp:
    for i, seed in enumerate((0, 1, 2, 3)):
        if i == 3:
            parallel.shutdown_workers()  # the last call starts its workers again
        t0 = time.perf_counter()
        precompute(Path(tmp) / f"sk{i}", MicrogptSource(docs, 250, seed=seed), 3,
                   num_directions=2, chunk_size=1, workers=2, progress=False)
        walls.append(time.perf_counter() - t0)
print(json.dumps({"first_s": walls[0], "kept_s": walls[1:3], "restarted_s": walls[3]}))
"""


FORKED = r"""
import json, resource, time
from circuitsketch.models import microgpt
from runtime import parallel
from runtime.precompute import load_series_code
from runtime.sources.microgpt import MicrogptSource
from runtime.spec import compiled
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)  # a forked child's count starts at 0
    return r.ru_utime + r.ru_stime
def entered(task):
    return time.perf_counter(), cpu()
docs = tuple(microgpt.read_docs(microgpt.corpus_path())[:250])
cp = compiled(MicrogptSource(docs, 250, seed=0), 3)
t0, c0 = time.perf_counter(), cpu()
load_series_code(cp)
load = (time.perf_counter() - t0, cpu() - c0)
assert parallel.forks()
got = []
t0 = time.perf_counter()
parallel.run_tasks(entered, [0, 1], lambda t, r: got.append(r), workers=2)
print(json.dumps({"parent_load_wall_s": load[0], "parent_load_cpu_s": load[1],
                  "startup_wall_s": max(w for w, _ in got) - t0,
                  "startup_cpu_s": max(c for _, c in got)}))
"""


QUERY_PHASES = r"""
import json, resource, sys
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
marks = [("start", cpu())]
from runtime.cli import main
marks.append(("interpreter, import runtime.cli", cpu()))
from runtime.query import deletion_weights, predict, sketch_program
from runtime.store import Sketch
sk = Sketch.open(sys.argv[1])
docs = sk.docs()
marks.append(("open the sketch, its documents", cpu()))
import compiler.compiled
marks.append(("import numba and the compiler", cpu()))
cp = sketch_program(sk)
marks.append(("trace, passes, generated module", cpu()))
compiler.compiled.output_from_params(cp, sk.params0(), sk.chunk(0)[:1].copy(), sys.argv[2])
marks.append(("Numba loads the output function", cpu()))
predict(sk, [sys.argv[2]], deletion_weights(docs, contains="f")[0])
marks.append(("coefficients on every direction, estimate", cpu()))
print(json.dumps([[b, t1 - t0] for (a, t0), (b, t1) in zip(marks, marks[1:])]))
"""


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed_run(argv: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """(wall s, process s, stdout) of one fresh process and its children."""
    c0, t0 = children_cpu(), time.perf_counter()
    res = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t0, children_cpu() - c0
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{res.stderr}")
    return wall, cpu, res.stdout


def median_of(runs: list[tuple[float, float, str]]) -> dict[str, float]:
    return {
        "wall_s": statistics.median(r[0] for r in runs),
        "cpu_s": statistics.median(r[1] for r in runs),
        "runs": len(runs),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--demo", action="store_true", help="time the demo (warm cache)")
    ap.add_argument("--cold", action="store_true", help="and first on an empty cache")
    ap.add_argument("--parts", default="query,worker,fork,pool",
                    help="which of query, worker, fork, pool, directions, kept to measure "
                    "(default: the first four)")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
    cs = [sys.executable, "-m", "circuitsketch"]
    out: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.cold:
            cold_env = {**env, "CIRCUITSKETCH_CACHE": str(Path(tmp) / "empty-cache")}
            wall, cpu, text = timed_run([*cs, "demo", "--out", f"{tmp}/cold", "--json"],
                                        cold_env)  # fmt: skip
            r = json.loads(text)
            out["demo_cold"] = {"wall_s": wall, "cpu_s": cpu, "stages_s": r["seconds"],
                                "cpu_by_process_s": r.get("cpu_seconds")}  # fmt: skip
            print(f"demo, empty cache: {wall:.1f} s wall, {cpu:.1f} s process", flush=True)
        # the demo's sketch (and a warm cache for everything below)
        wall, cpu, text = timed_run([*cs, "demo", "--out", f"{tmp}/demo", "--json"], env)
        sketch = json.loads(text)["sketch_dir"]
        if args.demo:
            runs = [timed_run([*cs, "demo", "--out", f"{tmp}/d{i}", "--json"], env)
                    for i in range(args.repeat)]  # fmt: skip
            out["demo_warm"] = median_of(runs)
            print(f"demo, warm cache: {out['demo_warm']}", flush=True)
        query = [*cs, "query", sketch, "--delete-contains", "f", "--doc"]
        if "query" in parts:
            measure_queries(query, args.repeat, env, out)
        if "worker" in parts:
            measure_worker(args.repeat, env, out)
        if "fork" in parts:
            measure_forked(args.repeat, env, out)
        if "pool" in parts:
            measure_pool(args.repeat, env, out)
        if "directions" in parts:
            measure_directions(Path(tmp), env, out)
        if "kept" in parts:
            runs = [json.loads(timed_run([sys.executable, "-c", KEPT], env)[2])
                    for _ in range(args.repeat)]  # fmt: skip
            out["kept_workers"] = runs
            print(f"spawned workers kept between calls: {runs}", flush=True)
    print(json.dumps(out, indent=1))


def measure_queries(query: list[str], repeat: int, env: dict[str, str], out: dict) -> None:
    out["query_asked_before"] = median_of(
        [timed_run([*query, "fiona"], env) for _ in range(repeat)]
    )
    print(f"query, input asked before: {out['query_asked_before']}", flush=True)
    names = ["emma", "olivia", "ava", "mia", "luna", "ella", "aria", "zoe", "ivy", "amy"]
    out["query_new_input"] = median_of(
        [timed_run([*query, names[i % len(names)]], env) for i in range(repeat)]
    )
    print(f"query, new input: {out['query_new_input']}", flush=True)
    # the same where scipy is not installed (it is no dependency of circuitsketch; jax, the
    # bench extra, brings it): Numba's BLAS check then skips importing scipy.linalg
    no_scipy = [sys.executable, "-c", "import sys; sys.modules['scipy'] = None; from "
                "runtime.cli import main; raise SystemExit(main(sys.argv[1:]))", *query[3:]]
    out["query_new_input_without_scipy"] = median_of(
        [timed_run([*no_scipy, f"{names[i % len(names)]}s"], env) for i in range(repeat)]
    )
    print(f"query, new input, scipy hidden: {out['query_new_input_without_scipy']}", flush=True)
    runs = []  # the same, phase by phase, inside the process (CPU time)
    for i in range(repeat):
        _, _, text = timed_run([sys.executable, "-c", QUERY_PHASES, query[4],
                                f"{names[i % len(names)]}x"], env)  # fmt: skip
        runs.append(json.loads(text))
    out["query_new_input_phases_cpu_s"] = {
        name: statistics.median(r[i][1] for r in runs) for i, (name, _) in enumerate(runs[0])
    }
    for name, t in out["query_new_input_phases_cpu_s"].items():
        print(f"  new-input query: {name:<42} {t:6.3f} s cpu")


def measure_worker(repeat: int, env: dict[str, str], out: dict) -> None:
    phases = []
    for _ in range(repeat):
        _, _, text = timed_run([sys.executable, "-c", WORKER], env)
        phases.append(json.loads(text))
    table = {
        name: {
            "wall_s": statistics.median(p[i][1] for p in phases),
            "cpu_s": statistics.median(p[i][2] for p in phases),
        }
        for i, (name, _, _) in enumerate(phases[0])
    }
    start = [
        sum(row[1] for row in p[:-2]) + p[-2][1] - p[-1][1] for p in phases
    ]  # everything before the first chunk, plus the first chunk's extra over the second
    start_cpu = [sum(row[2] for row in p[:-2]) + p[-2][2] - p[-1][2] for p in phases]
    out["worker_phases"] = table
    out["worker_startup"] = {
        "wall_s": statistics.median(start),
        "cpu_s": statistics.median(start_cpu),
    }
    for name, row in table.items():
        print(f"  worker {name:<34} {row['wall_s']:6.3f} s wall {row['cpu_s']:6.3f} s cpu")
    print(f"worker start-up: {out['worker_startup']}")


def measure_forked(repeat: int, env: dict[str, str], out: dict) -> None:
    runs = [json.loads(timed_run([sys.executable, "-c", FORKED], env)[2]) for _ in range(repeat)]
    out["forked_worker"] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(f"forked worker: {out['forked_worker']}", flush=True)


def measure_directions(tmp: Path, env: dict[str, str], out: dict) -> None:
    sys.path.insert(0, str(ROOT))
    from bench.bench_compiler import setting

    docs = tmp / "names1000.txt"
    docs.write_text("\n".join(setting(1000)) + "\n")
    base = [sys.executable, "-m", "circuitsketch", "compile", "--docs", str(docs),
            "--degree", "3", "--workers", "2", "--json"]  # fmt: skip
    timed_run([*base, "--directions", "2", "--out", str(tmp / "warm")], env)  # warm cache
    for m in (16, 500):
        wall, cpu, _ = timed_run([*base, "--directions", str(m), "--out", str(tmp / f"d{m}")],
                                 env)  # fmt: skip
        out[f"compile_{m}_directions"] = {"wall_s": wall, "cpu_s": cpu,
                                          "wall_s_per_direction": wall / m}  # fmt: skip
        print(f"compile {m} directions: {out[f'compile_{m}_directions']}", flush=True)


def measure_pool(repeat: int, env: dict[str, str], out: dict) -> None:
    pools = []
    for _ in range(repeat):
        _, _, text = timed_run([sys.executable, "-c", POOL], env)
        pools.append(json.loads(text))
    # two one-direction chunks on two workers: what is not the chunk is start-up
    out["pool_2_workers"] = {
        "precompute_wall_s": statistics.median(p["precompute_wall_s"] for p in pools),
        "precompute_cpu_s": statistics.median(p["precompute_cpu_s"] for p in pools),
        "chunk_s": statistics.median(p["chunk_s"] for p in pools),
        "startup_wall_s": statistics.median(
            p["precompute_wall_s"] - p["chunk_s"] for p in pools
        ),
    }
    print(f"precompute, 2 workers x 1 direction: {out['pool_2_workers']}")


if __name__ == "__main__":
    main()
