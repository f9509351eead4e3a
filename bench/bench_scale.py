"""Growth of circuitsketch's cost with microgpt's size, side by side with JAX (issue 18).

Run from the repository root (JAX is the optional extra: pip install -e '.[bench]'):
    python bench/bench_scale.py [--sizes 1x16 2x32 4x64 4x128] [--batches 1 8] [--rounds 3]
                                [--no-compile | --compile-only]

For each size (n_layer x n_embd, 4 heads) and batch size, on the same shuffled
names (one epoch of `--docs` names; the series runs its first steps):
  * parameters;
  * real training, ms per step, circuitsketch's compiled trainer against a
    `jax.jit` step of the same model (bench/jax_microgpt.py, written from the
    spec), same initial parameters, data, weights and Adam; and the same
    trainer with its products by fused multiply-adds (``fma=True``, other bits:
    what training does not run, measured for the choice whether it may;
    ``ratio_real_fma``);
  * K = 3 series training along 8 complex directions, ms per step per
    direction, against `jax.experimental.jet` of the same step vmapped over
    the directions: the time of a run of LEAD + n steps less that of a run of
    LEAD steps (best of the rounds, each), so that what a run pays once is not
    spread over its few steps; in wall, process CPU and user CPU time.  The
    ratio (``ratio_k3``, ``batch_ratio_k3``) is of user CPU time, without the
    kernel's: the fresh pages of a series state (0.2 GB at 4 x 64 batch 8,
    0.9 GB at 4 x 128) cost the kernel up to 4 s of system time in some runs
    and none in others, enough to make the wall-time difference negative
    (run 15); ``ratio_k3_wall`` and ``ratio_k3_cpu`` keep the others;
  * circuitsketch's compile time, cold (an empty kernel cache, in a fresh
    process) and warm (a fresh process on that cache), real and K = 3, and the
    peak RSS of each process (the warm one trains: a real epoch and series steps);
  * JAX's compile time (its first calls, one per length bucket);
  * a floor under any real step: one compiled pass of Adam's update alone over
    the parameters (read the parameters, both moments and the gradient, write
    the new three, float64, the old state kept as the trainers keep it), best
    of 20, ms: what the state's memory traffic costs on this machine.
Before anything is timed, both trainers run the first steps and their states
(parameters and Adam's buffers; for the series every coefficient of orders
1..3) are checked equal to 1e-10 relative.  The two are then timed in
alternation, `--rounds` times each, in this one process (the machine's speed
drifts): the medians of the real epochs and the best series runs are
reported, with wall and process CPU time (JAX runs on one thread, as
circuitsketch's code).  One JSON object on stdout; copy
the numbers into bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

K, DIRECTIONS, TOL = 3, 8, 1e-10
LEAD = 1  # series steps of the run whose time is subtracted


def names(n: int) -> list[str]:
    from circuitsketch.models import microgpt as m

    docs = m.read_docs(m.corpus_path())
    return [docs[i] for i in np.random.default_rng(0).permutation(len(docs))[:n]]


def build(size: tuple[int, int], batch: int, ndocs: int):
    from circuitsketch.models import microgpt as m

    return m.build(names(ndocs), batch_size=batch, n_layer=size[0], n_embd=size[1], n_head=4)


def directions(n: int) -> np.ndarray:
    rng = np.random.default_rng(1)
    psi = rng.normal(size=(DIRECTIONS, n)) + 1j * rng.normal(size=(DIRECTIONS, n))
    return psi / np.linalg.norm(psi, axis=1, keepdims=True)


def first_steps(keys: list) -> list[int]:
    """The first step of each distinct key (length bucket): where its code is compiled."""
    first: dict = {}
    for s, key in enumerate(keys):
        first.setdefault(key, s)
    return sorted(first.values())


# ---------------------------------------------------------------- compile, in a fresh process
def compile_child(size: tuple[int, int], batch: int, ndocs: int, series_steps: int) -> dict:
    """Compile (real, then K = 3) and train once; times and this process's peak RSS."""
    from compiler.compiled import CompiledProgram

    prog = build(size, batch, ndocs)
    series_steps = min(series_steps, prog.num_steps)
    out = {}
    t = time.perf_counter()
    cp = CompiledProgram(prog, 0)
    cp.train(stop=1)
    out["real_s"] = time.perf_counter() - t
    cp.train()
    t = time.perf_counter()
    cs = CompiledProgram(prog, K)
    psi = directions(prog.num_docs)
    for s in first_steps(list(cs.keys)):
        cs.train_series(psi, start=s, stop=s + 1)
    out["series_s"] = time.perf_counter() - t
    cs.train_series(psi, stop=series_steps)
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def peak_rss_mb() -> float:
    """This process's peak RSS: VmHWM where there is /proc (getrusage's ru_maxrss
    survives exec on Linux, so a child forked from a large parent would report the
    parent's size), else ru_maxrss."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def compile_times(size, batch, ndocs, series_steps) -> dict:
    cache = tempfile.mkdtemp(prefix="bench-scale-cache-")
    env = {**os.environ, "CIRCUITSKETCH_CACHE": cache, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, __file__, "--child", f"{size[0]}x{size[1]}", str(batch),
            str(ndocs), str(series_steps)]
    res = {}
    for phase in ("cold", "warm"):
        out = subprocess.run(args, env=env, capture_output=True, text=True, check=True)
        res[phase] = json.loads(out.stdout.strip().splitlines()[-1])
    subprocess.run(["rm", "-rf", cache], check=True)
    return res


# ---------------------------------------------------------------- the JAX peer
class JaxRun:
    """The same training run in JAX: state dict, per-step data, jitted steps."""

    def __init__(self, prog, size: tuple[int, int]):
        import jax
        import jax.numpy as jnp

        from bench import jax_microgpt as jm
        from circuitsketch.models import microgpt as m

        self.jnp = jnp
        self.prog = prog
        self.names = jm.param_names(size[0])
        T = prog.num_steps
        self.data = []
        for s, st in enumerate(prog.steps):
            # a minibatch's documents are packed; this peer pads them to the step's bucket
            data = m.padded_batch(st.data, st.key[1]) if "rows" in st.data else st.data
            lead = (1,) if data["tokens"].ndim == 1 else ()
            tok = np.asarray(data["tokens"]).reshape(lead + data["tokens"].shape)
            tgt = np.asarray(data["targets"]).reshape(tok.shape)
            npos = np.asarray(data["n_positions"], float).reshape(tok.shape[:1])
            hyper = np.array([0.01 * (1.0 - s / T), 1.0 - 0.85 ** (s + 1), 1.0 - 0.99 ** (s + 1)])
            self.data.append((np.array(st.docs), hyper, jnp.asarray(tok), jnp.asarray(tgt),
                              jnp.asarray(npos)))
        self.init = {n: jnp.asarray(prog.init_state[n]) for n in self.names}
        for n in self.names:
            self.init["m." + n] = jnp.zeros_like(self.init[n])
            self.init["v." + n] = jnp.zeros_like(self.init[n])
        self.step = jax.jit(jm.make_step(size[0], 4))
        self.series_step = jax.jit(jm.make_series_step(size[0], 4, K))
        self.to_complex = jm.to_complex
        self.compile_s = {"real": 0.0, "series": 0.0}

    def warm(self, psi: np.ndarray, series_stop: int) -> None:
        """First calls (compilation) of every shape, timed: all of real training's, and
        the series' among its first `series_stop` steps (what is timed)."""
        for s in first_steps([tuple(d[2].shape) for d in self.data]):
            t = time.perf_counter()
            self.train(start=s, stop=s + 1)
            self.compile_s["real"] += time.perf_counter() - t
            if s < series_stop:
                t = time.perf_counter()
                self.train_series(psi, start=s, stop=s + 1)
                self.compile_s["series"] += time.perf_counter() - t

    def train(self, weights=None, start=0, stop=None):
        w = np.zeros(self.prog.num_docs) if weights is None else weights
        state = self.init
        for docs, hyper, tok, tgt, npos in self.data[start:stop]:
            state, _ = self.step(state, w[docs], hyper, tok, tgt, npos)
        state[self.names[0]].block_until_ready()
        return state

    def train_series(self, psi: np.ndarray, start=0, stop=None):
        jnp = self.jnp
        state = self.to_complex(self.init)
        series = {n: jnp.zeros((psi.shape[0], K, *v.shape), jnp.complex128)
                  for n, v in state.items()}
        w0 = np.zeros(self.prog.num_docs, complex)
        for docs, hyper, tok, tgt, npos in self.data[start:stop]:
            state, series, _ = self.series_step(state, series, w0[docs], psi[:, docs],
                                                hyper + 0j, tok, tgt, npos + 0j)
        series[self.names[0]].block_until_ready()
        return state, series


def relative_error(ours: dict, theirs: dict) -> float:
    """max |a - b| / max |b| over every state entry."""
    worst = 0.0
    for n, b in theirs.items():
        a = ours[n.replace("m.", "adam_m.", 1).replace("v.", "adam_v.", 1)
                 if n[:2] in ("m.", "v.") else n]
        b = np.asarray(b)
        if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
            return float("inf")  # max() would drop a NaN
        worst = max(worst, float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300)))
    return worst


# ---------------------------------------------------------------- a floor: Adam's traffic alone
def adam_floor_ms(n: int, repeats: int = 20) -> float:
    """Best time of one fused Adam update of n float64 parameters into new arrays."""
    from numba import njit

    @njit(cache=False, error_model="numpy")
    def adam(p, m, v, g, p2, m2, v2, lr, b1, b2, c1, c2):
        for i in range(p.shape[0]):
            mi = b1 * m[i] + (1.0 - b1) * g[i]
            vi = b2 * v[i] + (1.0 - b2) * g[i] * g[i]
            m2[i], v2[i] = mi, vi
            p2[i] = p[i] - lr * (mi / c1) / (np.sqrt(vi / c2) + 1e-8)

    rng = np.random.default_rng(0)
    old = [rng.random(n) for _ in range(4)]
    new = [np.empty(n) for _ in range(3)]
    best = float("inf")
    for i in range(repeats + 1):
        a, b = (old[:3], new) if i % 2 == 0 else (new, old[:3])  # ping-pong, as a trainer
        t = time.perf_counter()
        adam(*a, old[3], *b, 0.01, 0.85, 0.99, 0.5, 0.5)
        if i:  # the first call compiles
            best = min(best, time.perf_counter() - t)
    return 1e3 * best


# ---------------------------------------------------------------- one size, one batch size
def timed(fn) -> tuple[float, float, float]:
    """Wall time, process CPU time and its user part (the kernel's share left out)."""
    w, c = time.perf_counter(), time.process_time()
    u = resource.getrusage(resource.RUSAGE_SELF).ru_utime
    fn()
    return (time.perf_counter() - w, time.process_time() - c,
            resource.getrusage(resource.RUSAGE_SELF).ru_utime - u)


def measure(size, batch, ndocs, rounds, series_steps) -> dict:
    from compiler.compiled import CompiledProgram

    prog = build(size, batch, ndocs)
    series_steps = min(series_steps, prog.num_steps - LEAD)
    psi = directions(prog.num_docs)
    cp, cs = CompiledProgram(prog, 0), CompiledProgram(prog, K)
    cf = CompiledProgram(prog, 0, fma=True)  # the same generated code, other table rows
    for s in first_steps(list(cs.keys)):  # series parts are compiled on first use
        cs.train_series(psi, start=s, stop=s + 1)
    jx = JaxRun(prog, size)
    jx.warm(psi, max(3, LEAD + series_steps))
    row: dict = {"params": int(sum(np.asarray(prog.init_state[n]).size for n in prog.params)),
                 "steps_real": prog.num_steps, "steps_series": series_steps,
                 "jax_compile_s": jx.compile_s}
    # equal before timed: 20 real steps, 3 series steps
    n_check = min(20, prog.num_steps)
    ours = cp.unpack_state(cp.train(stop=n_check)[0])
    theirs = jx.train(stop=n_check)
    row["check_real"] = relative_error(ours, theirs)
    row["check_real_fma"] = relative_error(cf.unpack_state(cf.train(stop=n_check)[0]), theirs)
    s0, hi, _ = cs.train_series(psi, stop=3)
    st, ser = jx.train_series(psi, stop=3)
    ours0, ours_hi = cs.unpack_state(s0), cs.unpack_hi(hi, DIRECTIONS)
    row["check_series"] = max(relative_error(ours0, st), relative_error(ours_hi, ser))
    if max(row["check_real"], row["check_real_fma"], row["check_series"]) > TOL:
        raise SystemExit(f"{size} batch {batch}: JAX and circuitsketch differ: {row}")
    for _ in range(2):  # warm caches
        cp.train()
        cf.train()
        jx.train()
    runs = {k: [] for k in ("cs_real", "cs_real_fma", "jax_real", "cs_k3", "jax_k3", "cs_lead",
                            "jax_lead")}  # fmt: skip
    for _ in range(rounds):
        runs["cs_real"].append(timed(cp.train))
        runs["cs_real_fma"].append(timed(cf.train))
        runs["jax_real"].append(timed(jx.train))
        for peer, run in (("cs", cs), ("jax", jx)):
            runs[f"{peer}_lead"].append(timed(lambda run=run: run.train_series(psi, stop=LEAD)))
            runs[f"{peer}_k3"].append(
                timed(lambda run=run: run.train_series(psi, stop=LEAD + series_steps)))
    for name in ("cs_real", "cs_real_fma", "jax_real"):  # whole epochs: medians
        for i, kind in enumerate(("", "_cpu")):
            row[f"{name}{kind}_ms_per_step"] = (
                1e3 * float(np.median([t[i] for t in runs[name]])) / prog.num_steps)
    for peer in ("cs", "jax"):  # the steps after the lead: best runs
        for i, kind in enumerate(("", "_cpu", "_user")):
            extra = min(t[i] for t in runs[f"{peer}_k3"]) - min(t[i] for t in runs[f"{peer}_lead"])
            row[f"{peer}_k3{kind}_ms_per_step_dir"] = 1e3 * extra / (series_steps * DIRECTIONS)
    row["adam_floor_ms"] = adam_floor_ms(row["params"])
    row["ratio_real"] = row["cs_real_ms_per_step"] / row["jax_real_ms_per_step"]
    row["ratio_real_fma"] = row["cs_real_fma_ms_per_step"] / row["jax_real_ms_per_step"]
    row["ratio_k3"] = row["cs_k3_user_ms_per_step_dir"] / row["jax_k3_user_ms_per_step_dir"]
    row["ratio_real_cpu"] = row["cs_real_cpu_ms_per_step"] / row["jax_real_cpu_ms_per_step"]
    row["ratio_k3_wall"] = row["cs_k3_ms_per_step_dir"] / row["jax_k3_ms_per_step_dir"]
    row["ratio_k3_cpu"] = row["cs_k3_cpu_ms_per_step_dir"] / row["jax_k3_cpu_ms_per_step_dir"]
    return row


SERIES_STEPS = {(1, 16): 64, (2, 32): 24, (4, 64): 8, (4, 128): 6}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        size = tuple(int(x) for x in sys.argv[2].split("x"))
        print(json.dumps(compile_child(size, int(sys.argv[3]), int(sys.argv[4]),
                                       int(sys.argv[5]))))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["1x16", "2x32", "4x64", "4x128"])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--docs", type=int, default=1000, help="names (one epoch of real training)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-compile", action="store_true", help="skip the cold/warm compiles")
    ap.add_argument("--compile-only", action="store_true",
                    help="only the cold/warm compiles and their peak RSS (no JAX, no timing)")
    args = ap.parse_args()
    from bench.machine import describe

    out = {"date": datetime.now(timezone.utc).isoformat(timespec="minutes"),
           "machine": describe(), "load_start": os.getloadavg()[0], "runs": {}}
    for text in args.sizes:
        size = tuple(int(x) for x in text.split("x"))
        for b in args.batches:
            # batch 8: a quarter of the steps (each trains 8 names) but at least 3, so that
            # the steps timed outweigh the noise of a run's fresh pages (run 15)
            steps = max(3, SERIES_STEPS.get(size, 4) // (1 if b == 1 else 4))
            row = {} if args.compile_only else measure(size, b, args.docs, args.rounds, steps)
            if not args.no_compile:
                row["compile"] = compile_times(size, b, args.docs, steps)
            row["load"] = os.getloadavg()[0]
            out["runs"][f"{text} b{b}"] = row
            print(json.dumps({f"{text} b{b}": row}), file=sys.stderr, flush=True)
    for text in args.sizes:  # per document: batch 8 against 8 one-document steps
        if {1, 8} <= set(args.batches) and not args.compile_only:
            r1, r8 = out["runs"][f"{text} b1"], out["runs"][f"{text} b8"]
            out["runs"][f"{text} b8"]["batch_ratio_real"] = (
                r8["cs_real_ms_per_step"] / (8 * r1["cs_real_ms_per_step"]))
            out["runs"][f"{text} b8"]["batch_ratio_k3"] = (
                r8["cs_k3_user_ms_per_step_dir"] / (8 * r1["cs_k3_user_ms_per_step_dir"]))
    out["load_end"] = os.getloadavg()[0]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
