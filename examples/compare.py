"""Sketch vs exact retraining for every single-document deletion of a small program.

Shared by the example programs: builds a degree-K sketch in memory, predicts
the change of the test output for deleting each training document, retrains
exactly without it, and reports mean absolute error, coverage of the
2-standard-error band, Spearman rank correlation and top-5 agreement.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np

from circuitsketch.program import Program
from compiler.compiled import CompiledProgram, output_from_params, params_of
from examples.paper_common import spearman
from runtime.directions import gaussian_directions
from runtime.estimate import influence, term_samples
from runtime.metagrad import Metagradient


def sketch_coefficients(
    program: Program, test: Any, degree: int, m: int, seed: int = 0, batch: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """(M, K+1) test-output coefficients and the (M, N) directions."""
    cp = CompiledProgram(program, degree)
    psi = gaussian_directions(seed, 0, m, program.num_docs)
    coeffs = []
    for a in range(0, m, batch):
        rows = psi[a : a + batch]
        s0, hi, _ = cp.train_series(rows)
        p0, phi = params_of(cp, s0, hi, rows.shape[0])
        coeffs.append(output_from_params(cp, p0, phi, test))
    return np.concatenate(coeffs), psi


def exact_single_deletions(program: Program, test: Any) -> tuple[float, np.ndarray]:
    cp = CompiledProgram(program, 0)
    base_state, _ = cp.train()
    base = cp.output(base_state, test)
    truth = np.empty(program.num_docs)
    for i in range(program.num_docs):
        w = np.zeros(program.num_docs)
        w[i] = 1.0
        state, _ = cp.train(w)
        truth[i] = cp.output(state, test) - base
    return base, truth


def compare_single_deletions(
    program: Program, test: Any, title: str, degree: int = 3, m: int = 500, seed: int = 0
) -> dict:
    t0 = time.perf_counter()
    coeffs, psi = sketch_coefficients(program, test, degree, m, seed)
    t_sketch = time.perf_counter() - t0
    t0 = time.perf_counter()
    base, truth = exact_single_deletions(program, test)
    t_truth = time.perf_counter() - t0
    first_order = Metagradient(program)(test)
    rows = {}
    for k in (1, degree):
        est = influence(coeffs, psi, degree=k)
        pred = est.prediction - est.c0
        rows[f"sketch K={k}"] = {
            "MAE": float(np.mean(np.abs(pred - truth))),
            "coverage_2se": float(np.mean(np.abs(pred - truth) <= 2 * est.stderr)),
            "spearman": spearman(pred, truth),
            "top5_overlap": len(
                set(np.argsort(-np.abs(pred))[:5]) & set(np.argsort(-np.abs(truth))[:5])
            ),
        }
    # hybrid: exact first order + sketched orders 2..K, error bars from those orders only
    t = term_samples(coeffs, np.conj(psi), program.num_docs, degree)[1:].sum(axis=0)
    hybrid = first_order + t.mean(axis=0)
    hybrid_se = t.std(axis=0, ddof=1) / np.sqrt(m)
    rows[f"hybrid (exact 1st + sketch 2..{degree})"] = {
        "MAE": float(np.mean(np.abs(hybrid - truth))),
        "coverage_2se": float(np.mean(np.abs(hybrid - truth) <= 2 * hybrid_se)),
        "spearman": spearman(hybrid, truth),
        "top5_overlap": len(
            set(np.argsort(-np.abs(hybrid))[:5]) & set(np.argsort(-np.abs(truth))[:5])
        ),
    }
    rows["exact first order (metagradient)"] = {
        "MAE": float(np.mean(np.abs(first_order - truth))),
        "coverage_2se": None,
        "spearman": spearman(first_order, truth),
        "top5_overlap": len(
            set(np.argsort(-np.abs(first_order))[:5]) & set(np.argsort(-np.abs(truth))[:5])
        ),
    }
    result = {
        "program": title,
        "N": program.num_docs,
        "T": program.num_steps,
        "M": m,
        "K": degree,
        "test_output": base,
        "mean_abs_true_change": float(np.mean(np.abs(truth))),
        "seconds": {"sketch": t_sketch, "exact_loo": t_truth},
        "rows": rows,
    }
    print(
        f"{title}: N={program.num_docs}, T={program.num_steps}, M={m}; mean |true change| "
        f"{result['mean_abs_true_change']:.3g}"
    )
    print(f"{'estimator':34s} {'MAE':>10s} {'cover 2se':>10s} {'spearman':>9s} {'top5':>5s}")
    for name, r in rows.items():
        cov = "-" if r["coverage_2se"] is None else f"{r['coverage_2se']:.2f}"
        print(f"{name:34s} {r['MAE']:10.3g} {cov:>10s} {r['spearman']:9.3f} {r['top5_overlap']:5d}")
    print(json.dumps(result))
    return result
