"""A third order from groups of documents, for the deletions where whole groups go.

First and second order fail on sets that hold most of a group whose documents act
together: the names with an "x" alone train what follows an x, and deleting all of them
changes the test loss of "max" about twice as much as first order says (measured in
examples/RESULTS.md, "Groups of documents").  Two metagradients at weights
+-h 1_G give, along the group's indicator, H 1_G (their central difference) and
T(1_G, 1_G, .) (their second difference with g at 0): the group's pairs and its third
order, exactly.  From K groups a set D gets

* its pairs 1_D^T A 1_D from the symmetric matrix nearest to zero with A [1, 1_G1 ..
  1_GK] = (H - diag H) [1, 1_G1 .. 1_GK]: the row sums' secant update
  (``hessian.quadratic_terms``) on K + 1 directions, exact for a group;
* a third order (1/6) T(1_D, 1_D, 1_D) from the symmetric tensor nearest to zero with
  T(1_Gk, 1_Gk, .) = t_k for every k.  It is sum_k sym(1_Gk (x) 1_Gk (x) b_k), so a set
  gets sum_k (1_Gk . 1_D)^2 (b_k . 1_D), b from a K^2 x K^2 linear system: exact for a
  group, right to first order near one, and for one group of all documents the mean-field
  term of ``examples/third_order_mean_field.py``.

Orders 1-3 are not all there is when a set deletes most of a group that alone trains
something: at 4,000 names the x-names change the loss of "max" by 0.806, orders 1-3 say
0.625, and the Taylor coefficients along t 1_G decay slowly (examples/RESULTS.md).  So each
group is also retrained twice, without it and without a fixed part of it (its *anchors*:
every test output after those runs), and a set concentrated in a group (``z_scores``)
gets the group's remainder (retrained change less orders 1-3) at the set's share t of the
group, interpolated between the two (``remainders_at``): exact for the group and its part.

Groups: for microgpt, the documents holding each character (``letters``); for any
program, a JSONL file of index sets (the ``--sets`` format).  The metagradients of a group,
and its retraining, are tasks for a worker (stored as they arrive, so an interrupted call
resumes).
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime.hessian import FD_STEP
from runtime.second_order import Priced

__all__ = ["ANCHOR_SHARE", "CONCENTRATED", "LETTERS", "MIN_INSIDE", "STORE_DIR", "TASKS_DIR",
           "GroupJob", "GroupTerms", "Groups", "anchor_sets", "concentration", "group_job",
           "group_terms_data", "index_rows", "letter_groups", "nearest_tensor", "read_groups",
           "remainders_at", "z_scores"]

LETTERS = "letters"  # microgpt's groups: the documents holding each character
STORE_DIR = "group_terms"
TASKS_DIR = "group_tasks"


@dataclass(frozen=True)
class Groups:
    """K groups of the N training documents: their names and (K, N) 0/1 indicators."""

    names: list[str]
    members: np.ndarray

    @property
    def key(self) -> str:
        return members_key(self.members)


def members_key(members: np.ndarray) -> str:
    """16 hex digits naming groups by their indicators."""
    return hashlib.sha256(np.ascontiguousarray(members, np.float64)).hexdigest()[:16]


def _distinct(names: list[str], rows: list[np.ndarray], n: int) -> Groups:
    """The groups, each once (the first name) and none empty: a repeated one would make
    the solve singular."""
    first: dict[bytes, str] = {}
    for name, r in zip(names, rows, strict=True):
        if r.any():
            first.setdefault(r.tobytes(), name)
    members = np.array([np.frombuffer(b, np.float64) for b in first]).reshape(-1, n)
    return Groups(list(first.values()), members)


def letter_groups(docs: Sequence[str]) -> Groups:
    """The documents holding each character, one group a character."""
    chars = sorted(set("".join(docs)))
    rows = [np.array([float(c in d) for d in docs]) for c in chars]
    return _distinct([f"holding {c!r}" for c in chars], rows, len(docs))


def read_groups(spec: str, source: Any, num_docs: int) -> Groups:
    """`spec`: ``letters`` (a text-document program's documents) or a JSONL file of sets."""
    from runtime.deletion_sets import read_sets

    if spec == LETTERS:
        docs = getattr(source, "docs", None)
        if not getattr(source, "text_documents", False) or docs is None:
            raise ValueError("--doc-groups letters needs text documents (microgpt); give a "
                         "JSONL file of index sets instead")
        return letter_groups(docs)
    sets = read_sets(spec, num_docs, "--doc-groups")
    rows = []
    for i in range(len(sets)):
        r = np.zeros(num_docs)
        r[sets.indices[sets.indptr[i] : sets.indptr[i + 1]]] = 1.0
        rows.append(r)
    return _distinct([f"line {i + 1}" for i in range(len(sets))], rows, num_docs)


# ---------------------------------------------------------------- the estimator's terms
@dataclass
class GroupTerms(Priced):
    """One test input's group data: indicators (K, N), H 1_Gk and T(1_Gk, 1_Gk, .) (K, N)
    each, and what they cost (``second_order.Priced``)."""

    members: np.ndarray
    hv: np.ndarray
    tv: np.ndarray
    seconds: float | None = None
    train_seconds: float | None = None
    anchors: np.ndarray | None = None  # (2, K) the test output retrained without each of
    # ``anchor_sets``: each group, then its part ANCHOR_SHARE

    def concentrated(self, index: np.ndarray, weights: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
        """(K, S) whether each set is concentrated in each group (``z_scores`` at least
        CONCENTRATED), and t: its weight times its share of the group."""
        inside = _set_sums(self.members.T, index).T
        sizes = np.count_nonzero(index < self.members.shape[1], axis=1).astype(np.float64)
        near = z_scores(self.members, inside, sizes) >= CONCENTRATED
        return near, weights * inside / self.members.sum(axis=1, keepdims=True)

    def outside(self, index: np.ndarray, near: np.ndarray) -> np.ndarray:
        """`index` (S, L) less the documents of the groups each set is `near` (K, S)."""
        n = self.members.shape[1]
        held = np.zeros((len(index), n + 1), bool)
        for k in np.flatnonzero(near.any(axis=1)):
            held[near[k]] |= np.append(self.members[k] > 0, False)
        return np.where(np.take_along_axis(held, index, axis=1), n, index)

    def pairs(self, diag: np.ndarray, rows: np.ndarray, index: np.ndarray) -> np.ndarray:
        """1_D^T A 1_D for each row of `index` (S, L) (padding: N), A the symmetric matrix
        nearest to zero with A V = (H - diag H) V on V = [1, groups]: what the pairs of D
        add, exactly when 1_D is in the span of V (a group, a union of groups)."""
        n = diag.shape[0]
        v = np.vstack([np.ones(n), self.members]).T  # (N, K+1)
        y = np.vstack([rows, self.hv]).T - diag[:, None] * v
        w = v @ np.linalg.inv(v.T @ v)
        m = 0.5 * (v.T @ y + y.T @ v)
        a, b = _set_sums(w, index), _set_sums(y, index)  # A = y w' + w y' - w m w'
        return 2.0 * np.einsum("sk,sk->s", b, a) - np.einsum("sk,kl,sl->s", a, m, a)

    @functools.cached_property
    def tensor(self) -> np.ndarray:
        """b (N, K) of the tensor nearest to zero (``nearest_tensor``), solved once."""
        return nearest_tensor(self.members.T, self.tv.T)

    def cubic(self, index: np.ndarray) -> np.ndarray:
        """T(1_D, 1_D, 1_D) of the tensor nearest to zero (module docstring), per set."""
        inside = _set_sums(self.members.T, index)  # (S, K): 1_Gk . 1_D
        return np.einsum("sk,sk->s", inside**2, _set_sums(self.tensor, index))


ANCHOR_SHARE = 0.8  # the part of a group retrained as its second anchor


def anchor_sets(members: np.ndarray) -> np.ndarray:
    """(2K, N): the groups, then for each a part of ANCHOR_SHARE of its documents drawn
    once (seeded by the group's content): the sets retrained without as its anchors."""
    part = np.zeros_like(members)
    for k, m in enumerate(members):
        inside = np.flatnonzero(m)
        seed = int.from_bytes(hashlib.sha256(m.tobytes()).digest()[:8], "little")
        keep = max(1, round(ANCHOR_SHARE * len(inside)))
        part[k, np.random.default_rng(seed).choice(inside, keep, replace=False)] = 1.0
    return np.vstack([members, part])


def remainders_at(whole: np.ndarray, part: np.ndarray, share: np.ndarray,
                  t: np.ndarray) -> np.ndarray:
    """(K, S) a group's orders above 3 for sets holding a share `t` (K, S) of it, from its
    two anchors: `whole` (K,) (the group's, retrained less orders 1-3) and `part` (K,) (its
    part at `share` (K,)).  A power law whole t^p through both where one exists (the
    remainder shrinking with the share); else whole - c + c t (times t^4): the polynomial
    of orders 4 and 5 through both (a group of one document: whole t^4)."""
    whole, part, share = whole[:, None], part[:, None], share[:, None]
    ratio = np.divide(part, whole, out=np.zeros_like(part), where=whole != 0)
    power = (ratio > 0) & (ratio < 1) & (share < 1)
    p = np.log(np.where(power, ratio, 0.5)) / np.log(np.where(power, share, 0.5))
    inner = share < 1
    c = np.where(inner, part - whole * share**4, 0.0) / np.where(
        inner, share**4 * (share - 1.0), 1.0)
    return np.where(power, whole * t ** np.where(power, p, 4.0), (whole - c + c * t) * t**4)


def index_rows(indicators: np.ndarray) -> np.ndarray:
    """(K, L) 0/1 rows (K, N) as padded index rows (padding: N), the sets' layout."""
    n = indicators.shape[1]
    rows = [np.flatnonzero(m) for m in indicators]
    out = np.full((len(rows), max(len(r) for r in rows)), n, np.int64)
    for k, r in enumerate(rows):
        out[k, : len(r)] = r
    return out


def _set_sums(x: np.ndarray, index: np.ndarray) -> np.ndarray:
    """(S, K): the rows of x (N, K) summed over each set (padding index N adds 0)."""
    return np.vstack([x, np.zeros((1, x.shape[1]))])[index].sum(axis=1)


def nearest_tensor(v: np.ndarray, t: np.ndarray) -> np.ndarray:
    """b (N, K) of T = sum_k sym(v_k (x) v_k (x) b_k), the symmetric tensor of least norm
    with T(v_j, v_j, .) = t_j: sum_k [c_kj^2 b_k + 2 c_kj (b_k . v_j) v_k] / 3 = t_j with
    c = V'V.  Unknowns beta = B'V first (K^2 of them), then B."""
    c = v.T @ v
    k = c.shape[0]
    c2i = np.linalg.inv(c**2 / 3.0)
    # beta = c2i (t'v - (2/3) (c * beta)' c), (c * beta)' c's (m, j) entry summing over l
    system = np.eye(k * k) + (2.0 / 3.0) * np.einsum("km,lm,lj->kjlm", c2i, c, c).reshape(
        k * k, k * k)
    beta = np.linalg.solve(system, (c2i @ (t.T @ v)).ravel()).reshape(k, k)
    return (t - (2.0 / 3.0) * v @ (c * beta)) @ c2i


CONCENTRATED = 6.0  # z above which auto takes a set for a group's (random sets stay below)
MIN_INSIDE = 4  # and documents of the group it must delete (one alone in a small group can
# pass the z threshold: 1 of 25 among 1000 documents is 6.2)


def concentration(members: np.ndarray, sets: Any) -> np.ndarray:
    """(S,) how far each set's share of some group is beyond a random set's: the largest
    over groups of ``z_scores``.  auto takes third-order-groups above CONCENTRATED: the
    evaluation's findings are for random sets, and such a set is none of them, while the
    group terms are exact along G."""
    sizes = np.diff(sets.indptr).astype(np.float64)
    if not len(members) or not len(sets.indices):
        return np.zeros(len(sizes))
    inside = np.add.reduceat(members[:, sets.indices], sets.indptr[:-1], axis=1)
    inside[:, sizes == 0] = 0.0  # reduceat repeats a value for an empty set
    return z_scores(members, inside, sizes).max(axis=0)


def z_scores(members: np.ndarray, inside: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """(K, S) the hypergeometric z-score of |D n G| = `inside` (K, S) for |D| = `sizes`
    documents drawn at random, where the set deletes at least MIN_INSIDE documents of the
    group (else 0)."""
    n = members.shape[1]
    p = members.sum(axis=1, keepdims=True) / n
    var = sizes * p * (1 - p) * (n - sizes) / max(n - 1, 1)
    ok = (var > 0) & (inside >= MIN_INSIDE)
    return np.where(ok, (inside - sizes * p) / np.sqrt(np.where(ok, var, 1.0)), 0.0)


# ---------------------------------------------------------------- computing them
@dataclass
class GroupJob:
    """The two metagradients of the training run of `source` at weights +-h `member`."""

    source: Any
    tests: list
    group: int  # its index in the Groups
    member: np.ndarray
    g0: np.ndarray  # (Q, N) the metagradient at 0


def group_job(job: GroupJob) -> tuple[np.ndarray, float]:
    """(2, Q, N): H 1_G and T(1_G, 1_G, .) by central and second differences, and the
    seconds they took (in a worker)."""
    from runtime.metagrad import Metagradient
    from runtime.spec import compiled

    t0 = time.perf_counter()
    real = compiled(job.source, 0)
    mg = Metagradient(real.program, forward=real)
    h = FD_STEP
    mg.reweight(h * job.member)
    plus = mg.many(job.tests)
    mg.reweight(-h * job.member)
    minus = mg.many(job.tests)
    out = np.stack([(plus - minus) / (2.0 * h), (plus - 2.0 * job.g0 + minus) / h**2])
    return out, time.perf_counter() - t0


def group_terms_data(
    sketch,
    todo: Sequence[Any],
    groups: Groups | None,
    compute: bool,
    warn: Callable[[str], None] | None = None,
    workers: int = 1,
    scheduler: str | None = None,
) -> dict[str, GroupTerms | None]:
    """The stored group data of each test input of `todo` (TestInputs), computed for
    `groups` where missing if `compute` (None: microgpt's letters), else None there."""
    from runtime.metagrad import run_results

    store = run_results(sketch, STORE_DIR, "stored group terms", warn)
    out: dict[str, GroupTerms | None] = {}
    for t in todo:
        hit = store.get(t.key, dtype=np.float64)
        if hit is not None and hit.array.ndim == 3 and hit.array.shape[0] == 3 and (
                groups is None or hit.meta.get("groups") == groups.key):
            m, hv, tv = hit.array
            out[t.key] = GroupTerms(m, hv, tv, hit.meta.get("seconds"),
                                    hit.meta.get("train_seconds"))  # fmt: skip
            _stored_anchors(store, t, out[t.key], hit.meta.get("groups"))
        else:
            out[t.key] = None
    missing = [t for t in todo if out[t.key] is None]
    if missing and compute:
        out.update(_compute(sketch, missing, groups, store, warn, workers, scheduler))
    unanchored = [t for t in todo if out[t.key] is not None and out[t.key].anchors is None]
    while unanchored and compute:  # (terms stored before anchors existed get them now)
        members = out[unanchored[0].key].members  # inputs of the same groups together
        same = [t for t in unanchored if np.array_equal(out[t.key].members, members)]
        _compute_anchors(sketch, same, out, store, warn, workers, scheduler)
        unanchored = [t for t in unanchored if out[t.key].anchors is None]
    return out


def _task_key(what: str, member: np.ndarray, key_of_tests: str) -> str:
    """The stored task result of `what` for one group and the call's test inputs."""
    return f"{what} {hashlib.sha256(member.tobytes()).hexdigest()[:16]} for test inputs " \
           f"{key_of_tests}"


def _anchor_key(t: Any) -> str:
    return f"{t.key} anchors"


def _stored_anchors(store, t: Any, terms: GroupTerms, groups_key: str | None) -> None:
    """Attach `t`'s stored anchors (and their cost) to `terms`, if stored for its groups."""
    hit = store.get(_anchor_key(t), shape=(2, len(terms.members)), dtype=np.float64)
    if hit is not None and hit.meta.get("groups") == groups_key:
        terms.anchors = hit.array
        if terms.seconds is not None:
            terms.seconds += float(hit.meta.get("seconds", 0.0))


def _compute_anchors(sketch, todo: list, terms: dict[str, GroupTerms | None], store, warn,
                     workers: int, scheduler: str | None) -> None:
    """Retrain without each of ``anchor_sets`` (two runs a group, every test input of
    `todo`, inputs of the same groups, read after each), each run a task stored as it
    arrives; then each input's anchors."""
    from runtime import parallel
    from runtime.batch_retrain import RetrainJob, retrain_job
    from runtime.metagrad import run_results
    from runtime.second_order import tests_key
    from runtime.sources import sketch_source
    from runtime.spec import compiled

    source = sketch_source(sketch, full=True)
    members = anchor_sets(terms[todo[0].key].members)
    key_of_tests = tests_key(todo)
    tasks = run_results(sketch, TASKS_DIR, "group task's result", warn)
    q, k = len(todo), len(members)
    losses, seconds = np.zeros((q, k)), 0.0

    def key(g: int) -> str:
        return _task_key("anchor", members[g], key_of_tests)

    jobs = []
    for g in range(k):
        hit = tasks.get(key(g), shape=(q,), dtype=np.float64)
        if hit is not None:
            losses[:, g] = hit.array
            seconds += float(hit.meta.get("seconds", 0.0))
        else:
            jobs.append(RetrainJob(source, list(todo), [g], [np.flatnonzero(members[g])], [1.0]))

    def arrived(job: RetrainJob, result: list) -> None:
        nonlocal seconds
        for g, values, secs in result:
            tasks.put(key(g), np.array(values), {"seconds": secs})
            losses[:, g] = values
            seconds += secs

    parallel.run_tasks(
        retrain_job, jobs, arrived, workers=workers, scheduler=scheduler,
        prepare=(lambda: compiled(source, 0)) if parallel.forks() else None,
    )  # fmt: skip
    for i, t in enumerate(todo):
        anchors = losses[i].reshape(2, -1)
        store.put(_anchor_key(t), anchors, {"doc": t.key, "label": t.label,
                                            "groups": members_key(members[: k // 2]),
                                            "seconds": seconds / q})
        terms[t.key].anchors = anchors
        if terms[t.key].seconds is not None:
            terms[t.key].seconds += seconds / q
    for g in range(k):
        tasks.remove(key(g))


def _compute(sketch, todo: list, groups: Groups | None, store, warn, workers: int,
             scheduler: str | None) -> dict[str, GroupTerms]:
    """Each group's metagradients a task, stored as it arrives; then each input's data."""
    from runtime import parallel
    from runtime.metagrad import Metagradient, run_results
    from runtime.second_order import tests_key, time_one_run
    from runtime.sources import sketch_source
    from runtime.spec import compiled

    source = sketch_source(sketch, full=True)
    groups = groups or read_groups(LETTERS, source, sketch.num_docs)
    real = compiled(source, 0)
    values = [t.value for t in todo]
    key_of_tests = tests_key(todo)
    tasks = run_results(sketch, TASKS_DIR, "group task's result", warn)
    t0 = time.perf_counter()
    g0 = Metagradient(real.program, forward=real).many(values)
    seconds = time.perf_counter() - t0
    q, n = len(todo), sketch.num_docs
    hv, tv = np.zeros((q, len(groups.names), n)), np.zeros((q, len(groups.names), n))

    def key(k: int) -> str:
        return _task_key("group", groups.members[k], key_of_tests)

    def take(k: int, arr: np.ndarray) -> None:
        hv[:, k], tv[:, k] = arr[0], arr[1]

    jobs = []
    for k in range(len(groups.names)):
        hit = tasks.get(key(k), shape=(2, q, n), dtype=np.float64)
        if hit is not None:
            take(k, hit.array)
            seconds += float(hit.meta.get("seconds", 0.0))
        else:
            jobs.append(GroupJob(source, values, k, groups.members[k], g0))

    def arrived(job: GroupJob, result: tuple[np.ndarray, float]) -> None:
        nonlocal seconds
        tasks.put(key(job.group), result[0], {"seconds": result[1]})
        take(job.group, result[0])
        seconds += result[1]

    parallel.run_tasks(
        group_job, jobs, arrived, workers=workers, scheduler=scheduler,
        prepare=(lambda: compiled(source, 0)) if parallel.forks() else None,
    )  # fmt: skip
    train = time_one_run(real)
    out = {}
    for i, t in enumerate(todo):
        arr = np.stack([groups.members, hv[i], tv[i]])
        store.put(t.key, arr, {"doc": t.key, "label": t.label, "groups": groups.key,
                               "names": groups.names, "seconds": seconds / q,
                               "train_seconds": train})  # fmt: skip
        out[t.key] = GroupTerms(groups.members, hv[i], tv[i], seconds / q, train)
    for k in range(len(groups.names)):
        tasks.remove(key(k))
    return out
