"""Checkpoint schedules (runtime.checkpoints), pure Python: optimality, validity, budgets.

The binomial schedule's cost formula is checked against two references
written here: a dynamic program over every split of the recursive family,
and an exhaustive search over every strategy (store, drop, restore, advance
in any order) for small runs, which shows the family itself optimal.
"""

from __future__ import annotations

import heapq
import math
from functools import cache

import pytest

from runtime.checkpoints import (
    SCHEDULES,
    MemoryModel,
    Plan,
    binomial_advances,
    binomial_split,
    choose,
    leaf_bounds,
    parse_bytes,
    simulate,
    sqrt_plan,
    summary,
    tree_advances,
    tree_kept,
    tree_levels,
)


@cache
def split_dp(n: int, c: int) -> int:
    """Fewest advances over every first split m (the recursion revolve is built on)."""
    if n <= 1:
        return 0
    best = n - 1 + split_dp(n - 1, c)  # go to the last leaf without keeping anything
    if c > 0:
        for m in range(1, n - 1):
            best = min(best, m + split_dp(n - m, c - 1) + split_dp(m, c))
    return best


def exhaustive(n: int, c: int) -> int:
    """Fewest forward steps to reverse n steps holding x_0 and at most c more states.

    A state of the search: (steps still to reverse r, position of the working state
    or -1, the kept positions).  Moves: advance the working state one step (cost 1),
    keep it, drop a kept state, restore a kept one, reverse step r - 1 when the
    working state is x_{r-1} (which uses it up).  Dijkstra over all of them.
    """
    start = (n, 0, frozenset())
    dist = {start: 0}
    heap = [(0, start)]
    while heap:
        d, (r, cur, kept) = heapq.heappop(heap)
        if r == 0:
            return d
        if d > dist[(r, cur, kept)]:
            continue
        moves = []
        if 0 <= cur < r - 1:
            moves.append((1, (r, cur + 1, kept)))
        if cur == r - 1:
            moves.append((0, (r - 1, -1, frozenset(k for k in kept if k < r - 1))))
        if cur > 0 and cur not in kept and len(kept) < c:
            moves.append((0, (r, cur, kept | {cur})))
        for k in (0, *kept):
            moves.append((0, (r, k, kept)))
        for k in kept:
            moves.append((0, (r, cur, kept - {k})))
        for cost, nxt in moves:
            if d + cost < dist.get(nxt, math.inf):
                dist[nxt] = d + cost
                heapq.heappush(heap, (d + cost, nxt))
    raise AssertionError("unreachable")


def unit_plan(schedule: str, n: int, param: int = 0) -> Plan:
    return Plan(schedule, tuple(range(n + 1)), param)


def test_binomial_formula_equals_the_split_recursion():
    for n in range(1, 61):
        for c in range(7):
            assert binomial_advances(n, c) == split_dp(n, c), (n, c)


def test_binomial_formula_is_optimal_over_all_strategies():
    for n in range(1, 9):
        for c in range(4):
            assert binomial_advances(n, c) == exhaustive(n, c), (n, c)


def test_binomial_split_realises_the_optimum():
    for n in range(1, 50):
        for c in range(6):
            sim = simulate(unit_plan("binomial", n, c))
            # leaves of one step cost nothing to refill, the last one its one step to x_T
            assert sim.forward_steps == binomial_advances(n, c) + 1, (n, c)
            assert sim.peak_kept <= c + 1, (n, c, sim)


def test_binomial_at_large_n_is_fast_and_matches_griewank():
    # beta(s, r) = C(s + r, s) steps are reversible with s snapshots and r repetitions
    for s, r in ((3, 4), (10, 3), (20, 2)):
        n = math.comb(s + r, s)
        assert binomial_advances(n, s - 1) == r * n - math.comb(s + r, s + 1)
    plan = unit_plan("binomial", 20000, 9)
    assert simulate(plan).forward_steps == binomial_advances(20000, 9) + 1
    assert 1 <= binomial_split(20000, 9) < 20000


def test_tree_plans_keep_k_minus_one_states_per_level():
    for n in range(1, 70):
        for k in (2, 3, 5, 8):
            sim = simulate(unit_plan("tree", n, k))
            levels = tree_levels(n, k)
            assert k ** max(levels - 1, 0) < n <= k**levels or n == 1
            assert sim.forward_steps == tree_advances(n, k) + 1, (n, k)
            assert sim.peak_kept == tree_kept(n, k) <= 1 + (k - 1) * levels, (n, k, sim)
            assert tree_advances(n, k) <= levels * n
            assert binomial_advances(n, (k - 1) * levels) <= tree_advances(n, k)


def test_sqrt_plan_keeps_about_sqrt_t_states_and_computes_each_step_twice():
    for T in (1, 2, 10, 99, 1000, 32032):
        plan = sqrt_plan(T)
        sim = simulate(plan)
        root = math.isqrt(T - 1) + 1 if T > 1 else 1
        assert plan.leaf_steps <= root and plan.leaves <= root + 1
        assert sim.peak_kept <= root
        assert T <= sim.forward_steps < 2 * T
    assert summary(sqrt_plan(32032))["checkpoints"] == 178


def test_leaf_bounds():
    assert leaf_bounds(10, 3) == (0, 3, 6, 10)
    assert leaf_bounds(5, 5) == (0, 1, 2, 3, 4, 5)
    with pytest.raises(ValueError):
        leaf_bounds(5, 6)


def test_simulation_refuses_an_inconsistent_plan():
    class Broken(Plan):
        def actions(self):
            acts = list(super().actions())
            # the last two leaves swapped: a leaf reversed before the one after it
            i = [k for k, a in enumerate(acts) if a.kind == "leaf"]
            acts[i[0]], acts[i[1]] = acts[i[1]], acts[i[0]]
            return iter(acts)

    with pytest.raises(AssertionError):
        simulate(Broken("sqrt", leaf_bounds(20, 5)))


MODEL = MemoryModel(state_bytes=100_000, row_bytes=100_040, fixed_bytes=3_000_000)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_chosen_plans_fit_their_budget_and_cost_less_with_more_memory(schedule):
    T = 5000
    least = {"sqrt": 17.2e6, "binomial": 3.3e6, "tree": 4.5e6}[schedule]
    last = math.inf
    for budget in sorted({least, 2 * least, 4 * least, 10e6, 30e6, 100e6, 600e6}):
        if budget < least:
            continue
        plan = choose(schedule, T, MODEL, int(budget))
        s = summary(plan, MODEL)
        assert s["memory_estimate_bytes"] <= budget, (budget, s)
        assert s["forward_steps"] <= last * (1 + 1e-3) + 2, (budget, s)
        last = s["forward_steps"]
    # enough memory for every state: one forward pass
    assert choose(schedule, T, MODEL, 10**12).leaves == 1


def test_binomial_is_no_dearer_than_the_tree_under_the_same_budget():
    for budget in (5e6, 6e6, 10e6, 20e6):
        b = simulate(choose("binomial", 5000, MODEL, int(budget))).forward_steps
        t = simulate(choose("tree", 5000, MODEL, int(budget))).forward_steps
        assert b <= t * 1.01, (budget, b, t)


def test_without_a_budget_every_schedule_gets_the_sqrt_memory():
    T = 5000
    ref = summary(sqrt_plan(T), MODEL)
    assert choose("sqrt", T, MODEL) == sqrt_plan(T)
    for schedule in ("binomial", "tree"):
        s = summary(choose(schedule, T, MODEL), MODEL)
        assert s["memory_estimate_bytes"] <= ref["memory_estimate_bytes"]
        assert s["forward_steps"] <= ref["forward_steps"]


def test_budget_below_the_tightest_plan_is_refused_in_one_line():
    with pytest.raises(ValueError, match="below the least the binomial schedule needs") as e:
        choose("binomial", 5000, MODEL, 3_100_000)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="try --checkpoint-schedule binomial or tree"):
        choose("sqrt", 5000, MODEL, 5_000_000)
    # the tightest binomial plan: x_0 and a buffer of one step, so T(T+1)/2 steps
    tight = choose("binomial", 50, MODEL, MODEL.bytes(1, 1))
    assert simulate(tight).forward_steps == 50 * 49 // 2 + 1
    with pytest.raises(ValueError, match="unknown checkpoint schedule"):
        choose("revolve", 50, MODEL)


def test_parse_bytes():
    assert parse_bytes("2GB") == 2 * 10**9
    assert parse_bytes("1.5 GiB") == 3 * 2**29
    assert parse_bytes("512mb") == 512 * 10**6
    assert parse_bytes("1000") == 1000
    for bad in ("", "2 XB", "-1GB", "GB", "0"):
        with pytest.raises(ValueError, match="memory size"):
            parse_bytes(bad)
