"""Second derivatives of a test output in the data weights, for the second-order estimator.

H = d^2 F / dw dw (N x N) at w = 0, F the test output after training.  A deletion
set D with weight s adds (s^2 / 2) 1_D^T H 1_D to the first-order prediction.

* Its diagonal is exact: H_ii = 2 c_2 along the unit direction e_i, from one
  degree-2 series run per document (``hessian_diagonal``).  Before the first
  step that trains on document i its weight has no effect, so its run starts
  there, from the undeleted run's state (one real pass forward, documents taken
  in the order of their first step, 8 directions per series pass).  The same
  runs give c_1 = dF/dw_i, the exact first order, as a check.
* Its off-diagonal part is approximated on a subspace (``hessian_low_rank``):
  Hessian-vector products H v are central differences of exact metagradients
  at weights +-h v (``runtime.metagrad``); a two-pass randomized range finder
  on k Gaussian probes, with one basis Q shared by all test inputs, gives
  H ~ Q (Q^T H Q) Q^T, kept as U diag(lam) U^T.  With k >= N the probes are the
  unit vectors and the result is H itself.

Costs, in real training runs: the diagonal about N / 8 half-length degree-2
passes of 8 directions; the low rank 2k Hessian-vector products of two
metagradient sweeps each (``evaluate`` measures both).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from circuitsketch.program import Program

__all__ = [
    "DIAGONAL_GROUP",
    "FD_STEP",
    "LowRank",
    "first_steps",
    "hessian_diagonal",
    "hessian_low_rank",
    "hessian_products",
    "quadratic_terms",
]

DIAGONAL_GROUP = 8  # unit directions per series pass
FD_STEP = 1e-3  # h of the central differences H v ~ (g(h v) - g(-h v)) / 2h


def first_steps(program: Program) -> np.ndarray:
    """(N,) the first step that trains on each document (num_steps if none does)."""
    first = np.full(program.num_docs, program.num_steps, np.int64)
    for s in range(program.num_steps - 1, -1, -1):
        first[list(program.steps[s].docs)] = s
    return first


def hessian_diagonal(
    program: Program,
    tests: Sequence[Any],
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(diag, grad), each (Q, N): H_ii and dF/dw_i of every test input, exactly.

    `tests` are values the program's ``encode_test`` takes; `progress(n)` is
    called after each pass with the number of documents it did.
    """
    from compiler.compiled import CompiledProgram

    real, series = CompiledProgram(program, 0), CompiledProgram(program, 2)
    n, steps = program.num_docs, program.num_steps
    first = first_steps(program)
    order = np.argsort(first, kind="stable")
    diag = np.zeros((len(tests), n))
    grad = np.zeros((len(tests), n))
    state, at = real.initial_state(), 0
    for a in range(0, n, DIAGONAL_GROUP):
        docs = order[a : a + DIAGONAL_GROUP]
        start = int(first[docs[0]])
        if start >= steps:  # never trained on: no effect at any order
            break
        if start > at:
            state, _ = real.train(state=state, start=at, stop=start)
            at = start
        psi = np.zeros((len(docs), n), np.complex128)
        psi[np.arange(len(docs)), docs] = 1.0
        final, hi, _ = series.train_series(psi, state=state, start=start)
        for q, test in enumerate(tests):
            c = series.output(final, test, hi).real  # (directions, 3)
            grad[q, docs], diag[q, docs] = c[:, 1], 2.0 * c[:, 2]
        if progress is not None:
            progress(len(docs))
    return diag, grad


def hessian_products(
    program: Program, vectors: np.ndarray, tests: Sequence[Any], h: float = FD_STEP
) -> np.ndarray:
    """H v for each column v of `vectors` (N, k) and each test input: (Q, N, k), by central
    differences of exact metagradients (error O(h^2) in the third derivatives)."""
    from runtime.metagrad import Metagradient

    out = np.empty((len(tests), program.num_docs, vectors.shape[1]))
    for j in range(vectors.shape[1]):
        v = vectors[:, j]
        plus = Metagradient(program, h * v).many(tests)
        minus = Metagradient(program, -h * v).many(tests)
        out[:, :, j] = (plus - minus) / (2.0 * h)
    return out


@dataclass(frozen=True)
class LowRank:
    """H ~ U diag(lam) U^T for each test input: U (Q, N, k), lam (Q, k)."""

    u: np.ndarray
    lam: np.ndarray

    def off_diagonal_sum(self, q: int, index: np.ndarray) -> np.ndarray:
        """1_D^T A 1_D for the off-diagonal part A of the approximation, for each row of
        `index` (S, L) (padding: N): sum over pairs i != j of D."""
        u = np.vstack([self.u[q], np.zeros((1, self.u.shape[2]))])
        rows = u[index]  # (S, L, k)
        total = ((rows.sum(axis=1) ** 2) * self.lam[q]).sum(axis=1)
        return total - ((rows**2).sum(axis=1) * self.lam[q]).sum(axis=1)


def hessian_low_rank(
    program: Program, tests: Sequence[Any], rank: int, seed: int = 0, h: float = FD_STEP
) -> LowRank:
    """The two-pass range finder of the module docstring (rank >= N: H exactly)."""
    n = program.num_docs
    if rank >= n:
        basis = np.eye(n)
    else:
        probes = np.random.default_rng(seed).normal(size=(n, rank))
        ranges = hessian_products(program, probes, tests, h)  # (Q, N, k)
        stacked = np.concatenate(list(ranges), axis=1)  # (N, Q k): one basis for all
        basis = np.linalg.svd(stacked, full_matrices=False)[0][:, :rank]
    z = hessian_products(program, basis, tests, h)  # H Q
    us, lams = [], []
    for q in range(len(tests)):
        core = basis.T @ z[q]
        lam, vec = np.linalg.eigh(0.5 * (core + core.T))
        us.append(basis @ vec)
        lams.append(lam)
    return LowRank(np.stack(us), np.stack(lams))


def quadratic_terms(
    diag: np.ndarray, index: np.ndarray, low: LowRank | None = None, q: int = 0
) -> np.ndarray:
    """1_D^T H 1_D for each row of `index` (S, L) (padding: N): the exact diagonal's sum plus,
    with `low`, its approximation of the pairs."""
    d = np.append(diag, 0.0)
    total = d[index].sum(axis=1)
    if low is not None:
        total = total + low.off_diagonal_sum(q, index)
    return total
