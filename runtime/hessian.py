"""Second derivatives of a test output in the data weights, for the second-order estimator.

H = d^2 F / dw dw (N x N) at w = 0, F the test output after training.  A deletion
set D with weight s adds (s^2 / 2) 1_D^T H 1_D to the first-order prediction.

* Its diagonal is exact: H_ii = 2 c_2 along the unit direction e_i, from one
  degree-2 series run per document (``hessian_diagonal``).  Before the first
  step that trains on document i its weight has no effect, so its run starts
  there, from the undeleted run's state (one real pass forward, documents taken
  in the order of their first step, 8 directions per series pass).  The same
  runs give c_1 = dF/dw_i, the exact first order, as a check.
* Its pairs come from the row sums r = H 1 (``row_sums``), one Hessian-vector
  product: a central difference of exact metagradients at weights +-h 1
  (``runtime.metagrad``).  ``quadratic_terms`` uses the symmetric matrix
  nearest to zero that maps 1 to r.  Measured on the paper's setting against
  the exact H (issue 19, examples/RESULTS.md), it recovers nearly all of what
  the exact pairs add to the ranking of large deletion sets, where a rank-k
  range finder or Nystrom approximation on Gaussian probes (k up to 200)
  recovered little: H is indefinite and far from low rank, and a deletion
  set's sum of pairs is dominated by each document's coupling to all others.

Costs, in real training runs: the diagonal about N / 8 half-length degree-2
passes of 8 directions, the row sums two metagradient sweeps, both shared by
the test inputs of one call (``evaluate`` measures them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from circuitsketch.program import Program

if TYPE_CHECKING:
    from compiler.compiled import CompiledProgram

__all__ = [
    "DIAGONAL_GROUP",
    "FD_STEP",
    "diagonal_groups",
    "diagonal_passes",
    "first_steps",
    "hessian_diagonal",
    "hessian_products",
    "quadratic_terms",
    "row_sums",
]

DIAGONAL_GROUP = 8  # unit directions per series pass
FD_STEP = 1e-3  # h of the central differences H v ~ (g(h v) - g(-h v)) / 2h


def first_steps(program: Program) -> np.ndarray:
    """(N,) the first step that trains on each document (num_steps if none does)."""
    first = np.full(program.num_docs, program.num_steps, np.int64)
    for s in range(program.num_steps - 1, -1, -1):
        first[list(program.steps[s].docs)] = s
    return first


def diagonal_groups(program: Program, docs: np.ndarray | None = None) -> list[np.ndarray]:
    """The documents of each diagonal series pass: DIAGONAL_GROUP at a time in the order
    of their first step; of `docs` (default: all); documents no step trains on are left
    out (no effect)."""
    first = first_steps(program)
    docs = np.arange(program.num_docs) if docs is None else np.asarray(docs, np.int64)
    order = docs[np.argsort(first[docs], kind="stable")]
    order = order[first[order] < program.num_steps]
    return [order[a : a + DIAGONAL_GROUP] for a in range(0, len(order), DIAGONAL_GROUP)]


def diagonal_passes(
    program: Program,
    real: CompiledProgram,
    series: CompiledProgram,
    groups: Sequence[np.ndarray] | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(docs, final, hi) of the degree-2 series pass of each group of documents in `groups`
    (in the order of their first steps; None: ``diagonal_groups``), along their unit
    directions, started at the group's first step from the undeleted run's state (advanced
    by `real` between passes)."""
    first = first_steps(program)
    state, at = real.initial_state(), 0
    for docs in diagonal_groups(program) if groups is None else groups:
        start = int(first[docs[0]])
        if start > at:
            state, _ = real.train(state=state, start=at, stop=start)
            at = start
        psi = np.zeros((len(docs), program.num_docs), np.complex128)
        psi[np.arange(len(docs)), docs] = 1.0
        final, hi, _ = series.train_series(psi, state=state, start=start)
        yield docs, final, hi


def hessian_diagonal(
    program: Program,
    tests: Sequence[Any],
    progress: Callable[[int], None] | None = None,
    real: CompiledProgram | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(diag, grad), each (Q, N): H_ii and dF/dw_i of every test input, exactly.

    `tests` are values the program's ``encode_test`` takes; `progress(n)` is
    called after each pass with the number of documents it did; `real`: the
    program's real-mode CompiledProgram, if the caller has it.
    """
    from compiler.compiled import CompiledProgram

    real = real if real is not None else CompiledProgram(program, 0)
    series = CompiledProgram(program, 2)
    diag = np.zeros((len(tests), program.num_docs))
    grad = np.zeros((len(tests), program.num_docs))
    for docs, final, hi in diagonal_passes(program, real, series):
        for q, test in enumerate(tests):
            c = series.output(final, test, hi).real  # (directions, 3)
            grad[q, docs], diag[q, docs] = c[:, 1], 2.0 * c[:, 2]
        if progress is not None:
            progress(len(docs))
    return diag, grad


def hessian_products(
    program: Program,
    vectors: np.ndarray,
    tests: Sequence[Any],
    h: float = FD_STEP,
    real: CompiledProgram | None = None,
) -> np.ndarray:
    """H v for each column v of `vectors` (N, k) and each test input: (Q, N, k), by central
    differences of exact metagradients (error O(h^2) in the third derivatives), all from
    one compiled and planned sweep reweighted; `real` as in ``hessian_diagonal``."""
    from runtime.metagrad import Metagradient

    mg = Metagradient(program, forward=real)
    out = np.empty((len(tests), program.num_docs, vectors.shape[1]))
    for j in range(vectors.shape[1]):
        v = vectors[:, j]
        mg.reweight(h * v)
        plus = mg.many(tests)
        mg.reweight(-h * v)
        minus = mg.many(tests)
        out[:, :, j] = (plus - minus) / (2.0 * h)
    return out


def row_sums(
    program: Program,
    tests: Sequence[Any],
    h: float = FD_STEP,
    real: CompiledProgram | None = None,
) -> np.ndarray:
    """H 1 for each test input (Q, N): one Hessian-vector product along the all-ones
    direction, the direction every deletion set leans on."""
    ones = np.ones((program.num_docs, 1))
    return hessian_products(program, ones, tests, h, real)[:, :, 0]


def quadratic_terms(diag: np.ndarray, rows: np.ndarray | None, index: np.ndarray) -> np.ndarray:
    """1_D^T H 1_D for each row of `index` (S, L) (padding: N): the exact diagonal's sum plus,
    with the row sums r = H 1, the pairs of A = (r 1^T + 1 r^T) / N - (1^T r) 1 1^T / N^2,
    the symmetric matrix nearest to 0 with A 1 = r (Powell's symmetric secant update).
    For m documents with row sums R: 2 (m - 1) R / N - (1^T r) m (m - 1) / N^2."""
    n = diag.shape[0]
    total = np.append(diag, 0.0)[index].sum(axis=1)
    if rows is None:
        return total
    m = (index < n).sum(axis=1).astype(np.float64)
    r = np.append(rows, 0.0)[index].sum(axis=1)
    return total + 2.0 * (m - 1.0) * r / n - rows.sum() * m * (m - 1.0) / n**2
