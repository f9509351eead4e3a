"""Answer many deletion sets for many test inputs at once, from one loaded sketch.

``query_sets(sketch, tests, sets, estimator)`` loads each test input's data
once (coefficients from the sketch's cache, the stored metagradient), then
walks the sets in blocks: within a block the sets are padded index rows, u =
conj(psi) @ W and its powers are formed once (``estimators.SetBlock``) and
every test input's estimator is a few vectorised passes over them.  Sets are
sorted by size before blocking so that padding stays small; results come
back in the sets' order.

``--estimator auto`` is resolved here, per (set, test input), by
``findings.choose``: every estimator auto picks for a block is run on the
whole block and each answer is taken from the one it picked.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from runtime import estimators as E
from runtime.deletion_sets import DeletionSets
from runtime.findings import choose, read_findings, scale
from runtime.sources import TestInput
from runtime.store import Sketch

__all__ = ["BatchResult", "block_size", "load_test_data", "query_sets", "run_estimators"]

NO_SIZE = -1  # auto_size of a pick made without findings


@dataclass
class BatchResult:
    """Answers for S sets x D test inputs (arrays (S, D); set-major in ``records``)."""

    sets: DeletionSets
    labels: list[str]
    requested: str
    c0: np.ndarray  # (D,)
    prediction: np.ndarray  # (S, D)
    stderr: np.ndarray  # (S, D)
    estimator: np.ndarray  # (S, D) str: the estimator that answered
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (S, D), NaN if absent
    auto_size: np.ndarray | None = None  # (S, D) auto's evaluated size, NO_SIZE: no finding
    seconds: float = 0.0  # the vectorised work, after loading

    def records(self) -> list[dict[str, Any]]:
        """One plain dict per (set, test input), sets in order, NaN as None."""
        sizes = self.sets.sizes.tolist()
        weights = self.sets.weights.tolist()
        pred, se = self.prediction.tolist(), self.stderr.tolist()
        names = self.estimator.tolist()
        extra = {k: v.tolist() for k, v in self.extra.items()}
        auto = None if self.auto_size is None else self.auto_size.tolist()
        c0 = self.c0.tolist()
        out = []
        for s in range(len(self.sets)):
            for d, label in enumerate(self.labels):
                r = {
                    "set": s,
                    "doc": label,
                    "size": sizes[s],
                    "weight": weights[s],
                    "prediction": _num(pred[s][d]),
                    "stderr": _num(se[s][d]),
                    "estimator": names[s][d],
                    "c0": c0[d],
                }
                for k, v in extra.items():
                    r[k] = _num(v[s][d])
                if auto is not None:
                    r["auto_evaluated_size"] = None if auto[s][d] == NO_SIZE else auto[s][d]
                out.append(r)
        return out


def _num(x: float) -> float | None:
    return x if x == x and abs(x) != float("inf") else None


def block_size(m: int) -> int:
    """Sets per block: about 2^17 u-entries (a few MB), between 16 and 4096 sets."""
    return max(16, min(4096, (1 << 17) // max(m, 1)))


GROUPS = "third-order-groups"  # auto's pick for a set concentrated in a group


# ---------------------------------------------------------------- per test input data
def load_test_data(
    sketch: Sketch,
    tests: Sequence[TestInput],
    needs: dict[str, set[str]],
    compute_first_order: bool = True,
    warn: Callable[[str], None] | None = None,
) -> list[E.TestData]:
    """TestData of each test input with what `needs` (key -> needs names) asks for."""
    from runtime.metagrad import sketch_metagradients
    from runtime.query import coefficients
    from runtime.second_order import DATA, second_order_data

    want_c = [t for t in tests if "coefficients" in needs[t.key]]
    want_g = [t for t in tests if "first_order" in needs[t.key]]
    coefs = coefficients(sketch, want_c, warn=warn) if want_c else {}
    grads = (
        sketch_metagradients(sketch, want_g, compute=compute_first_order, warn=warn)
        if want_g
        else {}
    )
    second: dict[str, dict] = {}
    for need in DATA:
        want = [t for t in tests if need in needs[t.key]]
        second[need] = (
            second_order_data(sketch, need, want, compute_first_order, warn) if want else {}
        )
    out = []
    for t in tests:
        c = coefs.get(t.key)
        mg = grads.get(t.key)
        for need, got in second.items():
            if t.key in got and got[t.key] is None:
                what = "group terms" if need == "group_terms" else "second-order data"
                raise ValueError(
                    f"no stored {what} for {t.label!r}: compute it with "
                    f"`circuitsketch hessian SKETCH{DATA[need]} ...` (or ask for an estimator "
                    "that computes it)"
                )
        if t.key in grads and mg is None:
            raise ValueError(
                f"no stored metagradient for {t.label!r}: compute it with `circuitsketch "
                "metagrad SKETCH ...` (or ask for an estimator that computes it)"
            )
        c0 = _c0(c) if c is not None else _undeleted_output(sketch, t)
        out.append(
            E.TestData(t.label, t.key, c0, c, None if mg is None else mg.g,
                       **{need: got.get(t.key) for need, got in second.items()})
        )
    return out


def _c0(coeffs: np.ndarray) -> float:
    """c_0 as ``estimate`` takes it: the common value (a mean only if they differ)."""
    first = coeffs[:, 0].real
    return float(first[0]) if np.all(first == first[0]) else float(np.mean(first))


def _undeleted_output(sketch: Sketch, test: TestInput) -> float:
    from compiler.compiled import output_from_params
    from runtime.sources import sketch_source
    from runtime.spec import compiled, fingerprints

    cp = compiled(sketch_source(sketch), 0)
    sketch.check_compiled(fingerprints(cp))
    return float(output_from_params(cp, sketch.params0(), None, test.value))


# ---------------------------------------------------------------- the engine
def run_estimators(
    data: Sequence[E.TestData],
    psi: np.ndarray,
    sets: DeletionSets,
    picks: np.ndarray,
    options: E.Options | None = None,
    block: int | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """prediction, stderr (S, D) and extras of the estimator named in picks[s, d] for each."""
    options = options or E.Options()
    m, n = psi.shape
    s_total, d_total = len(sets), len(data)
    psi_ct = np.zeros((n + 1, m), np.complex128)
    psi_ct[:n] = np.conj(psi).T
    pred = np.full((s_total, d_total), np.nan)
    se = np.full((s_total, d_total), np.nan)
    extra: dict[str, np.ndarray] = {}
    order = np.argsort(sets.sizes, kind="stable")
    step = block or block_size(m)
    for a in range(0, s_total, step):
        rows = order[a : a + step]
        sb = _block(sets, rows, psi_ct, n)
        for d, t in enumerate(data):
            col = picks[rows, d]
            for name in dict.fromkeys(col.tolist()):
                ans = E.get(name).fn(t, sb, options)
                mask = col == name
                pred[rows[mask], d] = ans.prediction[mask]
                se[rows[mask], d] = ans.stderr[mask]
                for k, v in ans.extra.items():
                    arr = extra.setdefault(k, np.full((s_total, d_total), np.nan))
                    arr[rows[mask], d] = v[mask]
    return pred, se, extra


def _block(sets: DeletionSets, rows: np.ndarray, psi_ct: np.ndarray, n: int) -> E.SetBlock:
    sizes = sets.sizes[rows]
    width = int(sizes.max()) if len(rows) else 0
    index = np.full((len(rows), width), n, np.int64)
    cols = np.arange(width)
    mask = cols[None, :] < sizes[:, None]
    index[mask] = sets.indices[(sets.indptr[rows][:, None] + cols[None, :])[mask]]
    return E.SetBlock(psi_ct, index, sets.weights[rows])


def query_sets(
    sketch: Sketch,
    tests: Sequence[Any],
    sets: DeletionSets,
    estimator: str = "sketch",
    options: E.Options | None = None,
    compute_first_order: bool = True,
    warn: Callable[[str], None] | None = None,
    block: int | None = None,
) -> BatchResult:
    """Every (set, test input) answered by `estimator` (a registered name or ``auto``).

    An estimator that needs the metagradient computes and stores what is
    missing when `compute_first_order`; ``auto`` only uses what is stored.
    """
    from runtime.metagrad import sketch_metagradients
    from runtime.query import check_tests

    options = options or E.Options()
    items = check_tests(sketch, tests)
    if sets.num_docs != sketch.num_docs:
        raise ValueError(
            f"the sets are over {sets.num_docs} documents, the sketch has {sketch.num_docs}"
        )
    s_total = len(sets)
    auto_size = None
    if estimator == E.AUTO:
        from runtime.group_terms import CONCENTRATED, concentration
        from runtime.second_order import DATA, second_order_data

        findings = read_findings(sketch)
        stored = sketch_metagradients(sketch, items, compute=False, warn=warn)
        stored_so = {need: second_order_data(sketch, need, items, False, warn) for need in DATA}
        picks = np.empty((s_total, len(items)), dtype=object)
        auto_size = np.full((s_total, len(items)), NO_SIZE, np.int64)
        sizes = sets.sizes
        near, members = None, None  # the concentrated sets, of the last groups seen
        for d, t in enumerate(items):
            have = {"coefficients"} | ({"first_order"} if stored[t.key] is not None else set())
            have |= {need for need, got in stored_so.items() if got[t.key] is not None}
            usable = [e.name for e in E.ESTIMATORS.values() if set(e.needs) <= have]
            for z in np.unique(sizes):
                name, used = choose(findings, int(z), usable)
                picks[sizes == z, d] = name
                auto_size[sizes == z, d] = NO_SIZE if used is None else used
            terms = stored_so["group_terms"].get(t.key)
            if terms is not None and GROUPS in usable:  # sets unlike the random ones ranked
                if members is None or not np.array_equal(members, terms.members):
                    members = terms.members  # the test inputs share their groups, as a rule
                    near = concentration(members, sets) >= CONCENTRATED
                picks[near, d] = GROUPS
                if terms.anchors is not None:  # its stderr for such sets is its own, not
                    auto_size[near, d] = NO_SIZE  # one calibrated on random sets
    else:
        E.get(estimator)
        picks = np.full((s_total, len(items)), estimator, dtype=object)
    needs = {
        t.key: {n for name in set(picks[:, d].tolist()) for n in E.get(name).needs}
        for d, t in enumerate(items)
    }
    data = load_test_data(sketch, items, needs, compute_first_order, warn)
    psi = sketch.directions()
    t0 = time.perf_counter()
    pred, se, extra = run_estimators(data, psi, sets, picks, options, block)
    if estimator == E.AUTO:  # each pick's stderr as calibrated at the size it was chosen for
        for z in np.unique(auto_size[auto_size != NO_SIZE]):
            at = auto_size == z
            for name in set(picks[at].tolist()):
                a = scale(findings, int(z), name)
                if a is not None:
                    se[at & (picks == name)] *= a
    seconds = time.perf_counter() - t0
    return BatchResult(
        sets,
        [t.label for t in items],
        estimator,
        np.array([t.c0 for t in data]),
        pred,
        se,
        picks.astype(str),
        extra,
        auto_size,
        seconds,
    )
