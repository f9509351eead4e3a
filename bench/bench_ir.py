"""IR interpreter vs the scalar oracle: time per microgpt training step, measured in one run.

Run from the repository root:  python bench/bench_ir.py
"""

from __future__ import annotations

import json
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(steps: int = 20) -> None:
    from bench.machine import describe
    from circuitsketch.models import microgpt as m
    from circuitsketch.program import train
    from tests.oracle import microgpt as OM

    docs = m.read_docs(m.corpus_path())
    docs = [docs[i] for i in np.random.default_rng(0).permutation(len(docs))[:steps]]
    prog = m.build(docs)
    train(prog)  # warm numpy
    t = time.perf_counter()
    train(prog)
    ir_ms = (time.perf_counter() - t) / steps * 1e3
    chars = OM.vocab_from_corpus(m.corpus_path().read_text().splitlines())
    toks = [OM.tokenize(d, chars) for d in docs]
    t = time.perf_counter()
    OM.train(m.init_params(0), toks, steps, [0.0] * steps)
    oracle_ms = (time.perf_counter() - t) / steps * 1e3
    c = prog.step_circuits[8]
    print(
        json.dumps(
            {
                "date": str(date.today()),
                "machine": describe(),
                "steps": steps,
                "ir_interpreter_ms_per_step": ir_ms,
                "oracle_ms_per_step": oracle_ms,
                "oracle_over_ir": oracle_ms / ir_ms,
                "step_circuit_L8_nodes": len(c),
                "step_circuit_L8_ops": c.op_counts(),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
