"""Checkpoint schedules: reverse mode through a training run in bounded memory.

The T steps of a run are cut into n *leaves*, consecutive segments of at
most L steps.  A leaf is reversed by recomputing its forward states from the
state at its start into a buffer of L rows and running the reverse steps over
that buffer (``runtime.sweep``).  A schedule says which leaf starts are kept
(*checkpoints*) and in what order states are recomputed, as a list of actions
on positions 0..T (x_s is the state that step s reads):

    advance a b   the current state x_a -> x_b (b - a forward steps)
    save a        keep the current state x_a
    restore a     the current state := the kept x_a
    free a        drop the kept x_a
    leaf a b      from the current state x_a recompute x_a .. x_{b-1} into the
                  buffer and reverse steps b-1 .. a; the first leaf reversed (the
                  last one, b = T) runs on to x_T, the final state

x_0 is kept throughout.  The schedules:

* ``sqrt``: about sqrt(T) leaves of about sqrt(T) steps, every leaf start kept:
  peak memory about 2 sqrt(T) states, every step computed twice forwards.
* ``binomial``: Griewank's revolve over the leaves.  With c checkpoints besides
  x_0 it needs the fewest leaf advances of any schedule: r n - C(c + r + 1, r - 1),
  r the least integer with C(c + 1 + r, r) >= n (``binomial_advances``).
* ``tree``: a k-ary tree of kept states, as MAGIC's REPLAY: k - 1 states on each of
  ceil(log_k n) levels, each level one more forward pass over the run.

Under a memory budget each schedule takes its cheapest plan that fits
(``choose``); without one, the sqrt plan's memory is the budget.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from itertools import pairwise
from typing import NamedTuple

SCHEDULES = ("sqrt", "binomial", "tree")


class Action(NamedTuple):
    """One step of a plan: kind in advance | save | restore | free | leaf; positions a, b."""

    kind: str
    a: int
    b: int = -1


@dataclass(frozen=True)
class MemoryModel:
    """Bytes a plan holds: fixed + kept states x state_bytes + buffers x L x row_bytes.

    fixed_bytes: what does not depend on the plan (tables of the run, the
    trainer's own state buffers); row_bytes: one buffered forward state with the
    reverse step's packed inputs; buffers: leaf buffers filled at once (2 when the
    forward recomputation runs beside the reverse steps).
    """

    state_bytes: int
    row_bytes: int
    fixed_bytes: int = 0
    buffers: int = 1

    def bytes(self, kept: int, leaf: int) -> int:
        return self.fixed_bytes + kept * self.state_bytes + self.buffers * leaf * self.row_bytes


@dataclass(frozen=True)
class Plan:
    """A schedule's plan for a run of T steps: leaf boundaries and its one parameter.

    param: binomial, the checkpoints besides x_0; tree, the arity k; sqrt, unused.
    """

    schedule: str
    bounds: tuple[int, ...]
    param: int = 0

    @property
    def num_steps(self) -> int:
        return self.bounds[-1]

    @property
    def leaves(self) -> int:
        return len(self.bounds) - 1

    @property
    def leaf_steps(self) -> int:
        """L: the longest leaf, the rows a leaf buffer needs."""
        return max(b - a for a, b in pairwise(self.bounds))

    def actions(self) -> Iterator[Action]:
        if self.schedule == "tree":
            return _tree_actions(self.bounds, self.param)
        slots = self.leaves if self.schedule == "sqrt" else self.param
        split = _sqrt_split if self.schedule == "sqrt" else binomial_split
        return _split_actions(self.bounds, slots, split)


def leaf_bounds(num_steps: int, leaves: int) -> tuple[int, ...]:
    """Boundaries of `leaves` consecutive leaves of num_steps steps, lengths differing by <= 1."""
    if not 1 <= leaves <= num_steps:
        raise ValueError(f"leaves must be in 1..{num_steps}, got {leaves}")
    return tuple(i * num_steps // leaves for i in range(leaves + 1))


# ---------------------------------------------------------------- binomial (revolve)
def binomial_advances(n: int, c: int) -> int:
    """Fewest leaf advances to reverse n leaves holding x_0 and c more checkpoints.

    Griewank's t(n, s) with s = c + 1 snapshots (x_0 included): r n - beta(s + 1, r - 1),
    beta(s, r) = C(s + r, s), r the least with beta(s, r) >= n.
    """
    if n <= 1:
        return 0
    if c == 0:
        return n * (n - 1) // 2
    s, r = c + 1, 0
    while math.comb(s + r, s) < n:
        r += 1
    return r * n - math.comb(s + r, s + 1)


def binomial_split(n: int, c: int) -> int:
    """How many leaves to advance before the next checkpoint: an optimal first split.

    Reversing n leaves from x_0 with c free checkpoints costs m + t(n - m, c - 1) + t(m, c)
    after advancing m leaves and keeping that state (m = n - 1 keeps nothing: the last
    leaf is reversed at once).  The sum is convex in m, so a binary search finds it.
    """
    if n <= 2 or c == 0:
        return n - 1

    def cost(m: int) -> int:
        return m + binomial_advances(n - m, c - 1) + binomial_advances(m, c)

    lo, hi = 1, n - 2  # the least m in [1, n-2] with cost(m + 1) >= cost(m)
    while lo < hi:
        mid = (lo + hi) // 2
        if cost(mid + 1) >= cost(mid):
            hi = mid
        else:
            lo = mid + 1
    last = n - 1 + binomial_advances(n - 1, c)
    return lo if cost(lo) <= last else n - 1


def _sqrt_split(n: int, c: int) -> int:
    return 1


def _split_actions(bounds: tuple[int, ...], slots: int, split) -> Iterator[Action]:
    """Reverse leaves [i, j) from the kept x at leaf i: advance m leaves, keep that state
    (unless one leaf is left: it is reversed at once), reverse the tail, then the head."""
    stack: list = [("range", 0, len(bounds) - 1, slots)]
    while stack:
        item = stack.pop()
        if item[0] != "range":
            yield Action(item[0], bounds[item[1]])
            continue
        _, i, j, c = item
        if j - i == 1:
            yield Action("leaf", bounds[i], bounds[j])
            continue
        m = split(j - i, c)
        if not 1 <= m < j - i or (c == 0 and m != j - i - 1):
            raise AssertionError(f"bad split {m} of {j - i} leaves with {c} checkpoints")
        yield Action("advance", bounds[i], bounds[i + m])
        if j - (i + m) > 1:
            yield Action("save", bounds[i + m])
            stack += [("range", i, i + m, c), ("restore", i), ("free", i + m),
                      ("range", i + m, j, c - 1)]  # fmt: skip
        else:
            stack += [("range", i, i + m, c), ("restore", i), ("range", i + m, j, c)]


# ---------------------------------------------------------------- k-ary tree (REPLAY)
def _chunks(i: int, j: int, k: int) -> list[int]:
    """Boundaries of min(k, j - i) near-equal chunks of leaves [i, j)."""
    n = j - i
    parts = min(k, n)
    return [i + t * n // parts for t in range(parts + 1)]


def _tree_actions(bounds: tuple[int, ...], k: int) -> Iterator[Action]:
    """Reverse leaves [i, j) from the kept x at leaf i: one pass through the k chunks
    keeping each chunk's start, then each chunk (a subtree), last chunk first."""
    stack: list = [("range", 0, len(bounds) - 1)]
    while stack:
        item = stack.pop()
        if item[0] != "range":
            yield Action(item[0], bounds[item[1]])
            continue
        _, i, j = item
        if j - i == 1:
            yield Action("leaf", bounds[i], bounds[j])
            continue
        p = _chunks(i, j, k)
        later = []  # in the order they run
        for t in range(len(p) - 2, -1, -1):
            if t < len(p) - 2:
                later.append(("restore", p[t]))
            later.append(("range", p[t], p[t + 1]))
            if t > 0 and (t < len(p) - 2 or p[t + 1] - p[t] > 1):
                later.append(("free", p[t]))
        for t in range(1, len(p) - 1):
            yield Action("advance", bounds[p[t - 1]], bounds[p[t]])
            if t < len(p) - 2 or p[t + 1] - p[t] > 1:  # a last chunk of one leaf: reversed now
                yield Action("save", bounds[p[t]])
        stack += reversed(later)


@cache
def tree_advances(n: int, k: int) -> int:
    """Leaf advances of the k-ary tree schedule over n leaves."""
    if n <= 1:
        return 0
    p = _chunks(0, n, k)
    return p[-2] + sum(tree_advances(b - a, k) for a, b in pairwise(p))


@cache
def tree_kept(n: int, k: int) -> int:
    """The most states the k-ary tree schedule keeps at once over n leaves, x_0 included."""
    return 1 + _tree_extra(n, k)


@cache
def _tree_extra(n: int, k: int) -> int:
    if n <= 1:
        return 0
    p = _chunks(0, n, k)
    sizes = [b - a for a, b in pairwise(p)]
    best = 0
    for t in range(len(sizes)):  # while chunk t is reversed, chunks 1..t are kept
        saved = max(0, t - (t == len(sizes) - 1 and sizes[t] == 1))
        best = max(best, saved + _tree_extra(sizes[t], k))
    return best


def tree_levels(n: int, k: int) -> int:
    """Levels of the k-ary tree over n leaves (ceil(log_k n))."""
    levels, reach = 0, 1
    while reach < n:
        reach *= k
        levels += 1
    return levels


# ---------------------------------------------------------------- what a plan costs
@dataclass(frozen=True)
class Simulation:
    """A plan run symbolically: forward steps, the most states kept at once, leaf rows."""

    forward_steps: int
    peak_kept: int
    leaf_steps: int


def simulate(plan: Plan) -> Simulation:
    """Run a plan's actions on positions only, checking each is valid; count its cost.

    Forward steps: advances, and each leaf's recomputation (b - a - 1 steps, since its
    last state is kept from the step before; b - a for the last leaf, which goes on to
    x_T).  Kept states include x_0.  AssertionError if the plan is inconsistent.
    """
    T = plan.num_steps
    kept, cur, done, steps, peak = {0}, 0, T, 0, 1
    for act in plan.actions():
        if act.kind == "advance":
            assert cur == act.a < act.b <= done, act
            steps += act.b - act.a
            cur = act.b
        elif act.kind == "save":
            assert cur == act.a and act.a not in kept, act
            kept.add(act.a)
            peak = max(peak, len(kept))
        elif act.kind == "restore":
            assert act.a in kept, act
            cur = act.a
        elif act.kind == "free":
            assert act.a in kept and act.a >= done and act.a != 0, act
            kept.remove(act.a)
        else:
            assert act.kind == "leaf" and cur == act.a and act.b == done, act
            steps += act.b - act.a - (act.b != T)
            done, cur = act.a, -1
    assert done == 0 and kept == {0}, (done, kept)
    return Simulation(steps, peak, plan.leaf_steps)


def summary(plan: Plan, memory: MemoryModel | None = None) -> dict:
    """What a plan is and costs, for --json and reports."""
    sim = simulate(plan)
    out = {
        "schedule": plan.schedule,
        "steps": plan.num_steps,
        "leaves": plan.leaves,
        "leaf_steps": sim.leaf_steps,
        "checkpoints": sim.peak_kept,
        "forward_steps": sim.forward_steps,
        "forward_passes": sim.forward_steps / plan.num_steps,
    }
    if plan.schedule == "binomial":
        out["checkpoint_slots"] = plan.param
    if plan.schedule == "tree":
        out["arity"] = plan.param
        out["levels"] = tree_levels(plan.leaves, plan.param)
    if memory is not None:
        out["memory_estimate_bytes"] = memory.bytes(sim.peak_kept, sim.leaf_steps)
    return out


# ---------------------------------------------------------------- choosing a plan
def sqrt_plan(num_steps: int) -> Plan:
    """The default: about sqrt(T) leaves of about sqrt(T) steps, each leaf start kept."""
    L = math.isqrt(num_steps - 1) + 1 if num_steps > 1 else 1
    return Plan("sqrt", leaf_bounds(num_steps, -(-num_steps // L)))


def _leaf_lengths(T: int) -> list[int]:
    """Every distinct leaf length ceil(T / n), n = 1..T, longest first."""
    out, n = [], 1
    while n <= T:
        L = -(-T // n)
        out.append(L)
        n = -(-T // (L - 1)) if L > 1 else T + 1
    return out


def _fmt_bytes(n: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} bytes"


def choose(schedule: str, num_steps: int, memory: MemoryModel, budget: int | None = None) -> Plan:
    """The cheapest plan of a schedule (fewest forward steps) whose memory fits `budget`.

    budget None: the sqrt plan's memory (sqrt itself is then the sqrt plan).
    ValueError (one line) if no plan of the schedule fits.
    """
    if schedule not in SCHEDULES:
        raise ValueError(
            f"unknown checkpoint schedule {schedule!r} (one of {', '.join(SCHEDULES)})"
        )
    T = num_steps
    default = sqrt_plan(T)
    if budget is None:
        if schedule == "sqrt":
            return default
        sim = simulate(default)
        budget = memory.bytes(sim.peak_kept, sim.leaf_steps)
    best: tuple | None = None
    least = None  # the least memory any plan of this schedule needs
    for L in _leaf_lengths(T):
        n = -(-T // L)
        room = budget - memory.bytes(0, L)
        kept_max = room // memory.state_bytes if room >= 0 else -1
        if schedule == "sqrt":
            options = [(max(1, n - 1), 0, n - 1)]
        elif schedule == "binomial":
            c = min(kept_max - 1, max(n - 2, 0))
            options = [(1, 0, binomial_advances(n, 0))]
            if c > 0:
                options.append((c + 1, c, binomial_advances(n, c)))
        else:
            options = []
            for levels in range(1, max(1, tree_levels(n, 2)) + 1):
                k = max(2, _root_ceil(n, levels))
                options.append((tree_kept(n, k), k, tree_advances(n, k)))
        lo = memory.bytes(min(o[0] for o in options), L)
        least = lo if least is None else min(least, lo)
        for kept, param, adv in options:
            if kept > kept_max:
                continue
            key = (adv * T / n + T, memory.bytes(kept, L))
            if best is None or key < best[0]:
                best = (key, n, param)
    if best is None:
        hint = "; try --checkpoint-schedule binomial or tree" if schedule == "sqrt" else ""
        raise ValueError(
            f"memory budget {_fmt_bytes(budget)} is below the least the {schedule} schedule "
            f"needs for {T} steps: {_fmt_bytes(least or 0)}, of which "
            f"{_fmt_bytes(memory.fixed_bytes)} fixed{hint}"
        )
    _, n, param = best
    return Plan(schedule, leaf_bounds(T, n), param)


def _root_ceil(n: int, levels: int) -> int:
    """The least k with k ** levels >= n."""
    k = max(1, round(n ** (1.0 / levels)))
    while k**levels < n:
        k += 1
    while k > 1 and (k - 1) ** levels >= n:
        k -= 1
    return k


_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9,
          "gb": 10**9, "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30,
          "tib": 2**40}  # fmt: skip


def parse_bytes(text: str) -> int:
    """'2GB' -> 2e9, '512MiB' -> 512 * 2**20, '1000000' -> 1e6 (decimal units, binary with i)."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"memory size {text!r}: expected a number of bytes such as 2GB, "
                         "512MB or 1.5GiB")
    value = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if value < 1:
        raise ValueError(f"memory size {text!r} must be at least one byte")
    return int(value)
