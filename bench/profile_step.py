"""Per-kernel profile of one compiled training step of microgpt (length bucket 8).

Each kernel call of the generated step is re-run in its own compiled loop and
timed (warm caches, so the sum is below the step time of a real run); the
table groups the time by kernel and by part of the step (forward, gradient,
Adam; a fused loop of several elementwise equations counts as "fused").  Run
from the repository root:
    python bench/profile_step.py                 # real mode
    python bench/profile_step.py --degree 3      # series, 8 directions
    python bench/profile_step.py --degree 6 --directions 8 --bucket 16
    python bench/profile_step.py --n-layer 4 --n-embd 128   # another size (4 heads)
    python bench/profile_step.py --n-layer 4 --n-embd 128 --batch-size 8
    python bench/profile_step.py --n-layer 2 --n-embd 32 --reverse --top 20
--reverse profiles the metagradient's reverse step instead (the transposed step
circuit, compiled as ``runtime.sweep`` compiles it), from a random cotangent;
--top N also lists the N slowest calls with their operands' array sizes.
--in-sequence times each call once in the step's order instead (the caches as
the step before it leaves them, median of 20 passes): for the larger models its
sum is close to a real step's time, where the warm sum leaves out what moving
operands between kernels costs; for the smallest, the timer's cost per call shows.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
import time
from pathlib import Path

import numpy as np
from numba import njit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _repeat(fn):
    @njit
    def loop(n, *a):
        for _ in range(n):
            fn(*a)

    return loop


def _repeated(loop, vals, reps: int) -> float:
    """Seconds per call of one kernel call re-run `reps` times (warm caches)."""
    t = time.perf_counter()
    loop(reps, *vals)
    return (time.perf_counter() - t) / reps


def _in_sequence(seq: list, passes: int = 20) -> list[float]:
    """Seconds of each call run once in the step's order, median over passes, less the
    cost of calling an empty loop (zero repeats) with the same operands."""

    def medians(repeats: int) -> np.ndarray:
        runs = np.empty((passes, len(seq)))
        for p in range(passes):
            for i, (loop, vals, _, _) in enumerate(seq):
                t = time.perf_counter()
                loop(repeats, *vals)
                runs[p, i] = time.perf_counter() - t
        return np.median(runs, axis=0)

    return list(medians(1) - medians(0))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--degree", type=int, default=0)
    ap.add_argument("--directions", type=int, default=8)
    ap.add_argument("--bucket", type=int, default=8, choices=(8, 10, 12, 16),
                    help="length bucket (10 and 12 exist for minibatches only)")
    ap.add_argument("--n-layer", type=int, default=1)
    ap.add_argument("--n-embd", type=int, default=16)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--reverse", action="store_true", help="the metagradient's reverse step")
    ap.add_argument("--top", type=int, default=0, help="list the N slowest calls")
    ap.add_argument("--in-sequence", action="store_true",
                    help="time each call once, in the step's order (caches as a real step "
                         "leaves them), median of 20 passes, less an empty call's cost")
    args = ap.parse_args()
    if args.reverse and args.degree:
        raise SystemExit("--reverse runs in real mode only (degree 0)")
    from circuitsketch.models import microgpt as m
    from compiler import kernels as k
    from compiler.compiled import CompiledProgram
    from compiler.slots import workspace

    docs = m.read_docs(m.corpus_path())
    docs = [docs[i] for i in np.random.default_rng(0).permutation(len(docs))[:1000]]
    K, B = args.degree, args.directions
    size = {"n_layer": args.n_layer, "n_embd": args.n_embd, "n_head": args.n_head,
            "batch_size": args.batch_size}
    cp = CompiledProgram(m.build(docs, **size), K)
    state = None
    if args.reverse:  # its steps hold their forward states: a short run's are enough
        from runtime.metagrad import reverse_program, trajectory
        from runtime.sweep import REVERSE

        short = m.build(docs[: 40 * args.batch_size], **size)
        fwd = CompiledProgram(short, 0)
        cp = CompiledProgram(reverse_program(short, fwd, trajectory(fwd)), 0, **REVERSE)
        state = np.random.default_rng(1).normal(size=cp.state_size) * 0.01  # a cotangent
    # a key is the bucket, or for minibatches (batch size, bucket, packed rows): the one
    # of the bucket that most steps run
    key = (args.bucket if args.batch_size == 1 else
           m.busiest_packed_key(cp.program.steps, args.batch_size, args.bucket))
    if key not in cp.step_keys:
        raise SystemExit(f"no step of bucket {args.bucket}: try another")
    key = cp.step_keys.index(key)
    env: dict = {"ws": workspace(cp.ws_size), "tab": cp.tab, "cst": cp.cst, "code": cp.instr}
    warm = min(50, cp.program.num_steps // 2)  # steps run before the profiled one
    if K == 0:
        s0, _ = cp.train(state=state, stop=warm)
    else:
        psi = np.random.default_rng(1).normal(size=(B, len(docs))) + 0j
        s0, h0, _ = cp.train_series(psi, stop=warm)
        env.update(
            {
                "h_in": h0,
                "h_out": np.empty_like(h0),
                "B": B,
                "K": K,
                "wh": workspace(B * K * cp.wh_size, np.complex128),
                "resh": np.zeros(B * K, complex),
            }
        )
    s = next((i for i in range(warm, len(cp.keys)) if cp.keys[i] == key), None)
    if s is None:
        raise SystemExit(f"no step of bucket {args.bucket} after step {warm}: try another")
    env.update(
        {
            "s_in": s0,
            "s_out": np.empty_like(s0),
            "ii": cp.II[s],
            "ff": cp.FF[s],
            "w0": np.zeros(cp.ndocs[s]),  # the step's documents' weights (a vector)
            "wpsi": np.ascontiguousarray(psi.T[cp.docs[s, : cp.ndocs[s]]]) if K else None,
            "res0": np.zeros(max(2, cp.loss_width + 1)),  # losses (one per document: reverse)
        }
    )
    # the step's lines: its parts and blocks in order (a block at each place it runs)
    defs = {
        x.group(1): x.group(0)
        for x in re.finditer(r"^def ((?:part|block)_\w+)\(.*?(?=^@njit|^\w+ = |\Z)", cp.source,
                             re.M | re.S)
    }  # fmt: skip
    body = "".join(defs[f.py_func.__name__] for f in getattr(cp.module, f"step_{key}_PARTS"))
    r = getattr(cp.module, f"step_{key}_FIRST_ROW")
    reps = 200 if K == 0 else max(2, 400 // (B * K * K))
    loops: dict = {}
    cost: collections.Counter = collections.Counter()
    count: collections.Counter = collections.Counter()
    calls: list[tuple[float, str, list]] = []  # (seconds, call, operand array sizes)
    seq: list = []  # (loop, operands, label, call) in the step's order
    comment = ""
    for line in (x.strip() for x in body.splitlines()):
        if line.startswith("#"):
            comment = line
            continue
        line = line.removeprefix("res0[-1] += ")  # a fused loop that checks finiteness
        # a call through the part's table (compiler/pointers.py) as the direct call
        line = re.sub(r"p\.call\(P\[\d+\], ((?:k\.)?\w+), ", r"\1(", line)
        if not line.startswith(("k.", "fused_")):
            continue
        part = "adam" if "adam" in comment else "grad" if "grad" in comment else "forward"
        for call in line.split("; ")[:-1]:  # the last item is "r += 1"
            fused = call.startswith("fused_")
            name = call[0 if fused else 2 : call.index("(")]
            env["r"] = r  # arguments may be calls too (a fused loop's hi views)
            vals = eval(f"[{call[call.index('(') + 1 : -1]}]", {"k": k}, env)
            if name not in loops:
                loops[name] = _repeat(getattr(cp.module, name) if fused else getattr(k, name))
            loops[name](1, *vals)
            label = f"{'fused' if fused else name}/{part}"
            seq.append((loops[name], vals, label, call[: call.index("(")]))
        r += 1
    times = _in_sequence(seq) if args.in_sequence else [_repeated(f, v, reps) for f, v, _, _ in seq]
    for dt, (_, vals, label, call) in zip(times, seq, strict=True):
        cost[label] += dt
        count[label] += 1
        calls.append((dt, call, [v.size for v in vals if isinstance(v, np.ndarray)]))
    total = sum(cost.values())
    per = f", {total * 1e6 / B:.1f} us per direction" if K else ""
    print(f"bucket {args.bucket}, K={K}: sum of kernel times {total * 1e6:.1f} us per step{per}")
    for name, c in cost.most_common(20):
        print(f"{name:22s} {count[name]:4d} calls {c * 1e6:9.2f} us {100 * c / total:5.1f}%")
    for dt, call, sizes in sorted(calls, reverse=True)[: args.top]:
        print(f"{dt * 1e6:9.2f} us  {call:24s} arrays of {sizes}")


if __name__ == "__main__":
    main()
