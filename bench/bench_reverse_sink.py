"""The reverse step (a metagradient's) compiled with and without ``sink_elementwise``.

Run from the repository root, pinned to one core for steadier figures:

    taskset -c 1 python bench/bench_reverse_sink.py

microgpt 2 layers x 32 wide on 1500 shuffled names; its reverse run (every
forward state in the step data, as ``runtime.metagrad.full_trajectory_metagradient``
builds it) compiled both ways in this process, checked equal bit for bit, then
timed by process time, alternating, four runs each.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    from circuitsketch.models import microgpt as m
    from compiler.compiled import CompiledProgram
    from runtime.metagrad import reverse_program, trajectory

    docs = m.read_docs(m.corpus_path())
    docs = [docs[i] for i in np.random.default_rng(0).permutation(len(docs))[:1500]]
    prog = m.build(docs, n_layer=2, n_embd=32)
    cp = CompiledProgram(prog, 0)
    rp = reverse_program(prog, cp, trajectory(cp, None))
    revs = {s: CompiledProgram(rp, 0, sink=s) for s in (False, True)}
    state0 = np.random.default_rng(1).normal(size=cp.state_size)
    finals = {s: r.train(state=state0)[0] for s, r in revs.items()}
    print("the same bits:", np.array_equal(finals[False], finals[True]))
    times: dict[bool, list[float]] = {False: [], True: []}
    for rep in range(4):
        for s in (False, True) if rep % 2 == 0 else (True, False):
            t = time.process_time()
            revs[s].train(state=state0)
            times[s].append((time.process_time() - t) * 1e3 / prog.num_steps)
    for s in (False, True):
        print(f"{'sunk' if s else 'as traced'}: {[round(x, 4) for x in times[s]]} ms per step")
    print(f"sunk / as traced (medians): {np.median(times[True]) / np.median(times[False]):.3f}")


if __name__ == "__main__":
    main()
