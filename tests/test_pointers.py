"""Calls through function pointers (``compiler/pointers.py``): the step's parts and
blocks run the kernel at the address they are given, and do not link its code."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from compiler import kernels
from compiler import pointers as p


def test_lines_are_rewritten_to_call_through_the_table():
    calls: list[p.Call] = []
    line = "k.take(ws, ws, code, r, tab); k.h_take(wh, wh, code, r, B, K, tab)"
    assert p.through_pointers(line, calls) == (
        "p.call(P[0], k.take, ws, ws, code, r, tab); "
        "p.call(P[1], k.h_take, wh, wh, code, r, B, K, tab)")
    line = "res0[-1] += fused_ab12(ws, code, r, tab, B, K, wh, h_out)"
    assert p.through_pointers(line, calls) == (
        "res0[-1] += p.call(P[2], fused_ab12, ws, code, r, tab, B, K, wh, h_out)")
    assert calls[2] == ("fused_ab12", ("ws", "code", "r", "tab", "B", "K", "wh", "h_out"))
    p.LINKED = "k.take"  # the A/B knob: a callee left linked
    try:
        assert p.through_pointers("k.take(ws, ws, code, r, tab)", []) == \
            "k.take(ws, ws, code, r, tab)"  # fmt: skip
    finally:
        p.LINKED = ""


@njit(cache=False)
def _double(x, out):
    for i in range(x.shape[0]):
        out[i] = 2.0 * x[i]


@njit(cache=False)
def _negate(x, out):
    for i in range(x.shape[0]):
        out[i] = -x[i]


@njit(cache=False)
def _caller(x, out, P):
    p.call(P[0], _double, x, out)


def test_the_call_runs_the_function_at_the_address_it_is_given():
    """Typed as _double, it runs whatever the table holds: the callee is not linked."""
    x, out = np.arange(4.0), np.zeros(4)
    params = p.param_types(["x", "out"], [x, out])
    _caller(x, out, p.table([("_double", ("x", "out"))], {"_double": _double}, params))
    assert out.tolist() == [0.0, 2.0, 4.0, 6.0]
    _caller(x, out, p.table([("_negate", ("x", "out"))], {"_negate": _negate}, params))
    assert out.tolist() == [0.0, -1.0, -2.0, -3.0]


def _linked_names(fn) -> set[str]:
    """The functions whose code is linked into fn compiled afresh (the cache keeps no
    record of it) for the types of its first overload, transitively."""
    fresh = njit(nogil=True, error_model="numpy")(fn.py_func)
    fresh.compile(fn.signatures[0])
    names, todo = set(), [fresh.overloads[fn.signatures[0]].library]
    while todo:
        for lib in todo.pop()._linking_libraries:
            names.add(lib.name)
            todo.append(lib)
    return names


KERNELS = {n for n, v in vars(kernels).items() if hasattr(v, "py_func")}
DIRECT = {"hblock", "hflat", "hview", "rmul", "all_finite", "all_finite_c"}
"""Linked on purpose: views (``compiler/views.py``) and the entry's finiteness check."""


def _kernels_in(names: set[str]) -> set[str]:
    return {n for n in names if n in KERNELS or n.startswith("fused_")}


@njit(cache=False)
def _linked(x):
    return kernels.all_finite(x)


@pytest.mark.parametrize("degree", [0, 3])
def test_generated_code_defines_no_kernel_of_its_own(compiled, degree):
    """A series step's part (real mode: the training loop, holding the parts) and an
    output function define their own code, views and Numba's runtime, but no kernel or
    generated loop but the few linked on purpose (DIRECT); the control, a function calling
    a kernel directly, links it."""
    cp = compiled(degree)
    first = getattr(cp.module, f"step_{cp.keys[0]}_PARTS")[0]  # the first step's
    if degree:
        cp.train_series(np.ones((1, cp.program.num_docs)), stop=1)
        step = first
    else:
        cp.train(stop=1)
        step = cp.module.run
    assert p.calls_of(first), "nothing called through P"
    cp.output(cp.initial_state(), "emma", np.zeros(degree * cp.state_size) if degree else None)
    out = next(f for f in (getattr(cp.module, f"output_{i}") for i in range(len(cp.out_keys)))
               if f.signatures)  # fmt: skip
    for fn in (step, out):
        names = _linked_names(fn)
        assert names and _kernels_in(names) <= DIRECT, _kernels_in(names) - DIRECT
    _linked(np.zeros(2))
    assert _kernels_in(_linked_names(_linked)) == {"all_finite"}


def test_an_argument_that_is_not_a_parameter_is_refused():
    with pytest.raises(ValueError, match="cannot type the argument 'x \\+ 1'"):
        p.table([("k.take", ("x + 1",))], {"k": kernels}, {"x": None})

