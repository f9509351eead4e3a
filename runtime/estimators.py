"""The estimator registry: name -> function answering a block of deletion sets for one test input.

An estimator is a function ``fn(test, sets, options) -> Answer``:

* ``test`` (``TestData``): what is known about one test input: its undeleted
  output ``c0``, its sketch coefficients ``coeffs`` (M, K+1), its exact
  metagradient ``first_order`` (N,), and ``extras`` for data a future
  estimator stores itself.  Only what the estimator's ``needs`` lists is
  guaranteed to be loaded.
* ``sets`` (``SetBlock``): S deletion sets, shared by every test input:
  ``u()`` = conj(psi) @ W as an (S, M) array (row s: u_j for every direction
  j), ``power(r)`` = u^r, ``dot(g)`` = <g, w_s> for each set, ``sizes``,
  ``dense()`` the (S, N) weight matrix.
  Computed once per block and cached, so an estimator costs a few passes
  over (S, M) numbers.
* ``Answer``: ``prediction`` (S,), ``stderr`` (S,) and optional ``extra``
  arrays of shape (S,) (e.g. the median of means).

The formulas are those of ``runtime.estimate`` (its module docstring),
applied to rows instead of columns:

* ``sketch``: c_0 + sum_{r=1..k} mean_j T_r,j; stderr = std_j(sum_r T_r,j) / sqrt(M).
* ``first-order``: c_0 + <g, w>, the exact metagradient; stderr 0 (it has no
  sampling error; its truncation error, the orders >= 2, is not estimated).
* ``hybrid``: c_0 + <g, w> + sum_{r=2..k} mean_j T_r,j; stderr from the orders >= 2.
* ``second-order``: c_0 + <g, w> + (1/2) w^T H w with the exact diagonal of H
  and its pairs from H's row sums (``runtime.hessian.quadratic_terms``)
  (``runtime.hessian``); no sampling error, so its stderr is the size of the
  second-order term, the last kept term, as the proxy of what truncation
  leaves out (``runtime.estimate``'s convention).
* ``second-order-windowed``: the same with the windowed diagonal
  (``runtime.windowed_diagonal``), whose data cost a fraction of the exact one's.
* ``third-order-groups``: second-order-windowed with its pairs from K groups of
  documents as well as the row sums, plus a third order from the groups
  (``runtime.group_terms``): exact for a deleted group, right near one; stderr: the
  size of its second-order term, as second-order's (the third order it adds is exact
  only along the groups).  With the groups' retrainings stored (the anchors: each
  group and a part of it), a set concentrated in a group also gets the group's orders
  above 3 at its share of the group; its stderr is then how far it is from the group.
* ``auto`` is not a function: the query engine (``runtime.batch_query``)
  picks one of the others per query (``runtime.findings``).

To add an estimator, register it::

    @register("my-estimator", needs=("coefficients",), summary="what it does")
    def my_estimator(test, sets, options):
        ...
        return Answer(prediction, stderr)

``needs`` names the data it reads (``NEEDS``): the query engine loads or
computes exactly that, and ``evaluate`` charges its cost (in training runs)
to the estimator.  A new kind of stored data is a new ``needs`` name and an entry
of ``runtime.second_order.DATA`` (loaded by ``second_order_data``, for
``runtime.batch_query`` and ``runtime.evaluate``, which prices it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from runtime import estimate as est

__all__ = [
    "AUTO",
    "ESTIMATORS",
    "NEEDS",
    "Answer",
    "Estimator",
    "Options",
    "SetBlock",
    "TestData",
    "get",
    "names",
    "register",
]

AUTO = "auto"
NEEDS = ("coefficients", "first_order", "second_order", "second_order_windowed", "group_terms")


@dataclass
class TestData:
    """One test input's data (module docstring); None where not loaded."""

    __test__ = False  # not a pytest test class

    label: str
    key: str
    c0: float
    coeffs: np.ndarray | None = None  # (M, K+1) complex128
    first_order: np.ndarray | None = None  # (N,) float64
    second_order: Any = None  # runtime.second_order.SecondOrder
    second_order_windowed: Any = None  # the same with the windowed diagonal
    group_terms: Any = None  # runtime.group_terms.GroupTerms
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Options:
    """Settings every estimator may read: the series degree k (None: the sketch's K) and the
    median-of-means groups (None: ``estimate.default_groups``)."""

    degree: int | None = None
    groups: int | None = None


@dataclass
class Answer:
    prediction: np.ndarray  # (S,)
    stderr: np.ndarray  # (S,)
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (S,)


class SetBlock:
    """S deletion sets as padded index rows; u = conj(psi) @ W and its powers, cached.

    `psi_ct`: conj(psi).T with one extra row of zeros, (N+1, M): the padding
    index N points at it.  `index` (S, L): set s deletes documents index[s, :]
    (padding: N), each with data weight `weights[s]`.
    """

    def __init__(self, psi_ct: np.ndarray, index: np.ndarray, weights: np.ndarray):
        self.psi_ct = psi_ct
        self.index = index
        self.weights = np.asarray(weights, np.float64)
        self.n = psi_ct.shape[0] - 1
        self.m = psi_ct.shape[1]
        self.sizes = np.count_nonzero(index < self.n, axis=1)
        self._powers: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.index.shape[0]

    def u(self) -> np.ndarray:
        """(S, M) complex: u[s, j] = sum_i conj(psi_{j,i}) w_{s,i}."""
        if 1 not in self._powers:
            s, width = self.index.shape
            if width * 8 > self.n:  # big sets: one dense product (two real ones, see estimate)
                w = self.dense()
                u = w @ self.psi_ct[:-1].real + 1j * (w @ self.psi_ct[:-1].imag)
            else:
                u = np.zeros((s, self.m), np.complex128)
                for k in range(width):
                    u += self.psi_ct[self.index[:, k]]
                if np.any(self.weights != 1.0):
                    u *= self.weights[:, None]
            self._powers[1] = u
        return self._powers[1]

    def power(self, r: int) -> np.ndarray:
        """u^r, elementwise (built from lower powers by multiplication)."""
        if r <= 1:
            return self.u()
        if r not in self._powers:
            self._powers[r] = self.power(r - 1) * self.u()
        return self._powers[r]

    def dot(self, g: np.ndarray) -> np.ndarray:
        """(S,) <g, w_s> for a vector g (N,)."""
        return set_dot(g, self.index, self.weights)

    def dense(self) -> np.ndarray:
        """The sets as a dense (S, N) weight matrix."""
        w = np.zeros((len(self), self.n + 1))
        np.put_along_axis(w, self.index, self.weights[:, None], axis=1)
        return w[:, : self.n]


def set_dot(g: np.ndarray, index: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(S,) <g, w_s> of the sets `index` (S, L) (padding: N) at `weights` (S,)."""
    return np.append(np.asarray(g, np.float64), 0.0)[index].sum(axis=1) * weights


Fn = Callable[[TestData, SetBlock, Options], Answer]


@dataclass(frozen=True)
class Estimator:
    name: str
    fn: Fn
    needs: tuple[str, ...]
    summary: str
    default: bool  # evaluated when `evaluate` is not told which estimators to compare


ESTIMATORS: dict[str, Estimator] = {}


def register(
    name: str, needs: tuple[str, ...], summary: str, default: bool = True
) -> Callable[[Fn], Fn]:
    """Decorator: add `fn` to the registry under `name` (see the module docstring);
    `default=False` keeps a costly estimator out of `evaluate`'s default comparison."""
    unknown = [n for n in needs if n not in NEEDS]
    if unknown or name == AUTO:
        raise ValueError(f"estimator {name!r}: unknown needs {unknown} or reserved name")

    def add(fn: Fn) -> Fn:
        ESTIMATORS[name] = Estimator(name, fn, tuple(needs), summary, default)
        return fn

    return add


def names(with_auto: bool = True) -> list[str]:
    return [*ESTIMATORS, *([AUTO] if with_auto else [])]


def defaults() -> list[str]:
    """The estimators `evaluate` compares unless told otherwise."""
    return [n for n, e in ESTIMATORS.items() if e.default]


def get(name: str) -> Estimator:
    """The registered estimator `name` (ValueError listing the names)."""
    if name not in ESTIMATORS:
        raise ValueError(
            f"--estimator: unknown estimator {name!r} (choose from {', '.join(names())})"
        )
    return ESTIMATORS[name]


# ---------------------------------------------------------------- shared arithmetic
def degree_of(test: TestData, options: Options) -> int:
    """The degree k in use: options.degree, checked against the sketch's K."""
    kmax = test.coeffs.shape[1] - 1  # type: ignore[union-attr]
    k = kmax if options.degree is None else int(options.degree)
    if not 1 <= k <= kmax:
        raise ValueError(f"--degree must be between 1 and the sketch's degree {kmax}, got {k}")
    return k


def sampled_terms(test: TestData, sets: SetBlock, first: int, k: int) -> np.ndarray:
    """X[s, j] = sum_{r=first..k} T_r,j for every set: (S, M) float64.

    Evaluated by Horner's rule in u with the binomials folded into the
    coefficients, Re(u^first (a_first + u (a_first+1 + ... + u a_k))),
    a_r = c_r binom(N+r-1, r); when a binomial does not fit a float, term by
    term in the log domain (``estimate.term_samples``).
    """
    c = test.coeffs
    assert c is not None
    s_count, m = len(sets), sets.m
    if k < first:
        return np.zeros((s_count, m))
    b = [est.binom_factor(sets.n, r) for r in range(k + 1)]
    if not all(math.isfinite(v) and v < 1e290 for v in b):
        t = est.term_samples(c, sets.u().T, sets.n, k)  # (k, M, S)
        return np.ascontiguousarray(t[first - 1 :].sum(axis=0).T)
    u = sets.u()
    h = u * (c[:, k] * b[k])
    for r in range(k - 1, first - 1, -1):
        h += c[:, r] * b[r]
        h *= u
    for _ in range(first - 1):
        h *= u
    return np.ascontiguousarray(h.real)


def mean_and_spread(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean over directions (axis 1) and std (ddof 1) / sqrt(M), NaN for M = 1.

    Overwrites `x` with its deviations from the mean (one pass saved).
    """
    m = x.shape[1]
    mean = x.mean(axis=1)
    if m < 2:
        return mean, np.full(x.shape[0], np.nan)
    x -= mean[:, None]
    return mean, np.sqrt(np.einsum("ij,ij->i", x, x) / (m - 1) / m)


def median_of_means(x: np.ndarray, groups: int | None) -> np.ndarray:
    """Median over G contiguous groups of directions of each group's mean: (S,)."""
    m = x.shape[1]
    g = est.default_groups(m) if groups is None else int(groups)
    if not 1 <= g <= m:
        raise ValueError(f"--groups must be between 1 and the number of directions {m}, got {g}")
    bounds = [len(a) for a in np.array_split(np.arange(m), g)]
    starts = np.concatenate([[0], np.cumsum(bounds)[:-1]])
    means = np.add.reduceat(x, starts, axis=1) / np.array(bounds)
    return np.median(means, axis=1)


# ---------------------------------------------------------------- the estimators
@register("sketch", ("coefficients",), "the paper's estimator: every sketched order 1..k")
def sketch(test: TestData, sets: SetBlock, options: Options) -> Answer:
    k = degree_of(test, options)
    x = sampled_terms(test, sets, 1, k)
    base = test.c0
    mom = base + median_of_means(x, options.groups)
    mean, se = mean_and_spread(x)
    return Answer(base + mean, se, {"median_of_means": mom})


@register("first-order", ("first_order",), "c0 + <g, w>: the exact metagradient, no sketch")
def first_order(test: TestData, sets: SetBlock, options: Options) -> Answer:
    assert test.first_order is not None
    return Answer(test.c0 + sets.dot(test.first_order), np.zeros(len(sets)))


@register(
    "hybrid",
    ("coefficients", "first_order"),
    "exact first order <g, w> plus the sketched orders 2..k (errors from those orders)",
)
def hybrid(test: TestData, sets: SetBlock, options: Options) -> Answer:
    assert test.first_order is not None
    k = degree_of(test, options)
    exact = sets.dot(test.first_order)
    x = sampled_terms(test, sets, 2, k)
    base = test.c0 + exact
    mom = base + median_of_means(x, options.groups)
    mean, se = mean_and_spread(x)
    if k < 2:  # nothing sampled: no sampling error
        se = np.zeros(len(sets))
    return Answer(base + mean, se, {"first_order": exact, "median_of_means": mom})


@register(
    "second-order",
    ("first_order", "second_order"),
    "exact first order plus (1/2) w^T H w: H's exact diagonal and its pairs from its row "
    "sums; stderr: the size of that term",
    default=False,  # its data costs about one training run per training document and test
)
def second_order(test: TestData, sets: SetBlock, options: Options) -> Answer:
    assert test.first_order is not None and test.second_order is not None
    return _quadratic(test, sets, test.second_order)


@register(
    "second-order-windowed",
    ("first_order", "second_order_windowed"),
    "second-order with H's diagonal from series passes a few steps long (and the exact "
    "diagonal of a sample), a fraction of its data's cost; stderr: the size of that term",
    default=False,
)
def second_order_windowed(test: TestData, sets: SetBlock, options: Options) -> Answer:
    assert test.first_order is not None and test.second_order_windowed is not None
    return _quadratic(test, sets, test.second_order_windowed)


@register(
    "third-order-groups",
    ("first_order", "second_order_windowed", "group_terms"),
    "second-order-windowed with pairs and a third order from groups of documents (microgpt: "
    "those holding each character), and for a set concentrated in a group the orders above "
    "3 from that group's retrainings: right for sets near a group; stderr: the size of its "
    "second-order term (its third order is exact only along the groups), for a set "
    "concentrated in a group how far it is from the group",
    default=False,
)
def third_order_groups(test: TestData, sets: SetBlock, options: Options) -> Answer:
    gt = test.group_terms
    assert test.first_order is not None and gt is not None
    first, quad, third = _to_third_order(test, sets.index, sets.weights)
    value, se = test.c0 + first + quad + third, np.abs(quad)
    if gt.anchors is not None:  # (terms stored before anchors existed have none)
        from runtime.group_terms import anchor_sets, index_rows, remainders_at

        k, sets_of = len(gt.members), anchor_sets(gt.members)
        own = _to_third_order(test, index_rows(sets_of), np.ones(2 * k))  # orders 1-3
        rem = (gt.anchors.ravel() - test.c0 - sum(own)).reshape(2, k)  # orders above 3
        near, t = gt.concentrated(sets.index, sets.weights)  # (K, S)
        share = sets_of[k:].sum(axis=1) / gt.members.sum(axis=1)
        tail = np.where(near, remainders_at(rem[0], rem[1], share, t), 0.0)
        value += tail.sum(axis=0)
        # stderr of a set concentrated in groups: how far it is from them, the part of
        # their remainders it does not hold, the orders 2-3 it adds to theirs, and the
        # second order of its documents outside them
        rest = _to_third_order(test, gt.outside(sets.index, near), sets.weights)[1]
        grown = quad + third - (near * (own[1][:k] + own[2][:k])[:, None]).sum(axis=0)
        spread = np.abs(np.where(near, rem[0][:, None], 0.0) - tail).sum(axis=0)
        se = np.where(near.any(axis=0), spread + np.abs(grown) + np.abs(rest), se)
    return Answer(value, se, {"first_order": first})


def _to_third_order(test: TestData, index: np.ndarray, weights: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """third-order-groups' orders 1, 2 and 3 of the sets `index` (S, L) at `weights`."""
    from runtime.hessian import quadratic_terms

    so, gt = test.second_order_windowed, test.group_terms
    assert so is not None and gt is not None
    first = set_dot(test.first_order, index, weights)
    diag = quadratic_terms(so.diag, None, index)  # without row sums: the diagonal's part
    quad = 0.5 * weights**2 * (diag + gt.pairs(so.diag, so.rows, index))
    third = weights**3 * gt.cubic(index) / 6.0
    return first, quad, third


def _quadratic(test: TestData, sets: SetBlock, so: Any) -> Answer:
    """c0 + <g, w> + (1/2) w^T A w from `so`'s diagonal and row sums."""
    from runtime.hessian import quadratic_terms

    first = sets.dot(test.first_order)
    quad = 0.5 * sets.weights**2 * quadratic_terms(so.diag, so.rows, sets.index)
    return Answer(test.c0 + first + quad, np.abs(quad), {"first_order": first})
