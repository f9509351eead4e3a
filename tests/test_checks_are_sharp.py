"""The suite's compiled-vs-interpreter checks fail on wrong compiled code.

test_compiled_ops.py compares each compiled op and fused loop with the numpy
interpreter through ``tests/interpreter_check.py``.  Here the compiled side is
made wrong on purpose, and those same checks, at the same tolerances, must
fail with "relative error":

* generated source: a ``CompiledCircuit``'s source with one arithmetic detail
  changed (operands of a subtraction swapped, a sign flipped, a coefficient
  off in its 6th or 9th digit, a kernel call replaced by its sibling), loaded
  with ``compiler.cache.load_module`` like the compiler loads it, and run;
* the kernel library: a copy of ``compiler/kernels.py`` with one term of one
  kernel wrong (order 0: the r^2 coefficient of ``vexp`` 1e-9 off, or one
  coefficient of each of ``erf``'s two polynomial ranges; higher orders: one
  sign in ``h_mul``'s Cauchy product and in ``h_exp``'s recurrence) stands in
  for ``compiler.kernels`` in one generated module.

Each corruption is a single node of the syntax tree, found by what it is (the
first subtraction inside a loop, the first ``+=`` of a kernel), not by line
text, so it survives reformatting of the generated code; when the pattern is
not there any more the test fails and says so.  Each test also runs the
uncorrupted code through the same check (it must pass) and asserts that the
corrupted code differs from it in exactly one line.
"""

from __future__ import annotations

import ast
import copy
import difflib
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

import circuitsketch as cs
from compiler import cache
from compiler import erf as erf_kernel
from compiler import kernels as real_kernels
from compiler.function import CompiledCircuit
from compiler.pointers import AddressTables
from tests.interpreter_check import check_real, check_series
from tests.test_compiled_ops import (
    OP_CASES,
    _adam_and_more,
    _every_series_rule,
    check_op_real,
    check_op_series,
)

Mutation = Callable[[ast.AST], str]  # changes the tree in place, returns what it did


# ================================================================ finding the node to corrupt
def _walk(node: ast.AST, depth: int = 0) -> Iterator[tuple[ast.AST, int]]:
    """Every node under `node` in source order, with the number of for loops whose body
    holds it (a loop's own target and range are outside it)."""
    for field, value in ast.iter_fields(node):
        inner = depth + (isinstance(node, ast.For) and field in ("body", "orelse"))
        for child in value if isinstance(value, list) else [value]:
            if isinstance(child, ast.AST):
                yield child, inner
                yield from _walk(child, inner)


def _first(tree: ast.AST, what: str, pred: Callable[[ast.AST, int], bool]) -> ast.AST:
    for node, depth in _walk(tree):
        if pred(node, depth):
            return node
    pytest.fail(f"pattern not found: {what} (did the generated code or the kernels change?)")


def _function(tree: ast.AST, name: str) -> ast.FunctionDef:
    node = _first(
        tree, f"def {name}", lambda n, d: isinstance(n, ast.FunctionDef) and n.name == name
    )
    assert isinstance(node, ast.FunctionDef)
    return node


def swap_first_sub(depth: int) -> Mutation:
    """a - b -> b - a, for the first subtraction inside `depth` nested loops."""

    def mutate(tree):
        what = f"a subtraction inside {depth} nested loop(s)"
        node = _first(
            tree, what, lambda n, d: d >= depth and isinstance(n, ast.BinOp) and _is_sub(n)
        )
        node.left, node.right = node.right, node.left
        return f"swapped the operands of {ast.unparse(node)}"

    return mutate


def flip_first_sub(depth: int) -> Mutation:
    """a - b -> a + b, for the first subtraction inside `depth` nested loops."""

    def mutate(tree):
        what = f"a subtraction inside {depth} nested loop(s)"
        node = _first(
            tree, what, lambda n, d: d >= depth and isinstance(n, ast.BinOp) and _is_sub(n)
        )
        node.op = ast.Add()
        return f"flipped a sign: {ast.unparse(node)}"

    return mutate


def _is_sub(node: ast.BinOp) -> bool:
    return isinstance(node.op, ast.Sub)


def scale_first_coefficient(depth: int, factor: float) -> Mutation:
    """The first float literal other than 0 and 1 inside `depth` nested loops, times factor."""

    def mutate(tree):
        what = f"a float coefficient inside {depth} nested loop(s)"
        node = _first(
            tree,
            what,
            lambda n, d: (
                d >= depth
                and isinstance(n, ast.Constant)
                and type(n.value) is float
                and n.value not in (0.0, 1.0)
            ),
        )
        old = node.value
        node.value = old * factor
        return f"coefficient {old!r} -> {node.value!r}"

    return mutate


def scale_first_constant(factor: float) -> Mutation:
    """The first constant a fused loop reads from the constant table (``s = cst[...]``;
    constants are not printed in the code), times factor."""

    def mutate(tree):
        what = "a constant read from the constant table"
        node = _first(
            tree,
            what,
            lambda n, d: (
                isinstance(n, ast.Assign)
                and isinstance(n.value, ast.Subscript)
                and isinstance(n.value.value, ast.Name)
                and n.value.value.id == "cst"
            ),
        )
        read = ast.unparse(node.value)
        node.value = ast.BinOp(node.value, ast.Mult(), ast.Constant(factor))
        return f"constant {read} times {factor!r}"

    return mutate


def rename_kernel_call(old: str, new: str) -> Mutation:
    """The first call of kernel `old` (``k.sub``, called through ``p.call``) calls `new`."""

    def mutate(tree):
        node = _first(
            tree,
            f"a call of kernel {old}",
            lambda n, d: (
                isinstance(n, ast.Attribute) and n.attr == old
                and isinstance(n.value, ast.Name) and n.value.id == "k"
            ),
        )
        node.attr = new
        return f"called {new} instead of {old}"

    return mutate


def in_function(name: str, inner: Callable[[ast.AST], str]) -> Mutation:
    """Apply `inner` to the definition of function `name` only."""
    return lambda tree: f"{name}: {inner(_function(tree, name))}"


def scale_constant(value: float, factor: float) -> Callable[[ast.AST], str]:
    def mutate(tree):
        node = _first(
            tree,
            f"the constant {value!r}",
            lambda n, d: (
                isinstance(n, ast.Constant) and type(n.value) is float and n.value == value
            ),
        )
        node.value = value * factor
        return f"constant {value!r} -> {node.value!r}"

    return mutate


def flip_first_accumulation(tree: ast.AST) -> str:
    """The first `x += y` becomes `x -= y` (one term of a sum gets the wrong sign)."""
    node = _first(
        tree,
        "an accumulation +=",
        lambda n, d: isinstance(n, ast.AugAssign) and isinstance(n.op, ast.Add),
    )
    node.op = ast.Sub()
    return f"{ast.unparse(node)} (was +=)"


def corrupt(source: str, mutate: Mutation) -> tuple[str, str]:
    """(corrupted source, what changed); asserts that exactly one line changed."""
    tree = ast.parse(source)
    clean = ast.unparse(tree)
    what = mutate(tree)
    bad = ast.unparse(tree)
    diff = [
        line
        for line in difflib.unified_diff(clean.splitlines(), bad.splitlines(), n=0, lineterm="")
        if line[:1] in "+-" and line[:3] not in ("+++", "---")
    ]
    assert len(diff) == 2, f"{what}: expected one changed line, got {diff}"
    return bad, what


def expect_caught(run_check: Callable[[], None], what: str) -> None:
    """run_check() must fail with the checker's "relative error" message."""
    try:
        run_check()
    except AssertionError as e:
        assert "relative error" in str(e), f"{what}: failed, but not by the comparison: {e}"
        return
    pytest.fail(f"the check passed on corrupted code: {what}")


def with_module(compiled: CompiledCircuit, source: str) -> CompiledCircuit:
    """A copy of `compiled` that runs `source` (same tables and layout)."""
    bad = copy.copy(compiled)
    bad.module = cache.load_module(source)
    bad.tables = AddressTables(bad.module)  # the addresses of what its source calls
    return bad


# ================================================================ corrupted generated source
def _fused_inputs(K: int, series: bool) -> dict:
    """Inputs of _adam_and_more / _every_series_rule (as in test_compiled_ops.py)."""
    shape = (7, 10) if series else (5, 3)
    rng = np.random.default_rng(4 if series else 3)
    x = {n: rng.normal(size=shape) for n in "pgm"} | {"v": rng.random(shape)}
    x |= {"lr": 0.01, "bias1": 0.15, "bias2": 0.01}
    if series:
        x["g"] = rng.normal(size=(3, K + 1, *shape)) + 1j * rng.normal(size=(3, K + 1, *shape))
        x["g"][:, 0] = rng.normal(size=shape)
    return x


def _trace_fused(fn, series: bool) -> cs.Circuit:
    shape = (7, 10) if series else (5, 3)
    vec, one = cs.Input(shape), cs.Input(())
    return cs.trace(fn, p=vec, g=vec, m=vec, v=vec, lr=one, bias1=one, bias2=one)


@pytest.mark.parametrize(
    "mutate",
    [swap_first_sub(1), scale_first_constant(1 + 1e-9)],
    ids=["swapped-operands", "coefficient-1e-9-off"],
)
def test_real_check_catches_a_corrupted_fused_loop(mutate):
    """A real fused loop (Adam's update and more, one loop) with the operands of one
    subtraction swapped, or one coefficient 1e-9 off (today Adam's beta1 = 0.85, as the
    loop reads it from the constant table, which moves the output ~6e-12): check_real at
    1e-13 fails."""
    c = _trace_fused(_adam_and_more, series=False)
    x = _fused_inputs(0, series=False)
    good = CompiledCircuit(c, 0)
    assert "def fused_" in good.source, "no fused loop to corrupt"
    check_real(c, good, x, "uncorrupted")
    bad_source, what = corrupt(good.source, mutate)
    bad = with_module(good, bad_source)
    expect_caught(lambda: check_real(c, bad, x, what), what)


@pytest.mark.parametrize(
    "mutate",
    [flip_first_sub(2), scale_first_coefficient(2, 1 + 1e-6)],
    ids=["flipped-sign", "coefficient-1e-6-off"],
)
def test_series_check_catches_a_corrupted_series_loop(mutate):
    """A fused loop over orders 1..3 (the loop inside the loop over directions) with one
    sign of its unrolled series rules wrong (the real part of a complex product) or one
    coefficient 1e-6 off: check_series at the fused-series test's 1e-11 fails."""
    K = 3
    c = _trace_fused(_every_series_rule, series=True)
    x = _fused_inputs(K, series=True)
    good = CompiledCircuit(c, K, ("g",))
    check_series(c, good, x, ("g",), K, 3, "uncorrupted", tol=1e-11)
    bad_source, what = corrupt(good.source, mutate)
    bad = with_module(good, bad_source)
    expect_caught(lambda: check_series(c, bad, x, ("g",), K, 3, what, tol=1e-11), what)


def _case(name: str):
    return next(c for c in OP_CASES if c.name == name)


def test_real_check_catches_a_wrong_kernel_call():
    """x - y compiled with the add kernel called in place of sub: check_op_real fails."""
    case = _case("sub")
    good = CompiledCircuit(case.trace(), 0)
    check_op_real(case, good)
    bad_source, what = corrupt(good.source, rename_kernel_call("sub", "add"))
    bad = with_module(good, bad_source)
    expect_caught(lambda: check_op_real(case, bad), what)


def test_series_check_catches_a_wrong_higher_order_kernel_call():
    """x - y with both operands series, the higher orders computed by h_add instead of
    h_sub (order 0 still right): check_op_series fails on the orders >= 1 alone."""
    case, series = _case("sub"), ("x", "y")
    good = CompiledCircuit(case.trace(), 3, series)
    check_op_series(case, series, compiled=good)
    bad_source, what = corrupt(good.source, rename_kernel_call("h_sub", "h_add"))
    bad = with_module(good, bad_source)
    expect_caught(lambda: check_op_series(case, series, compiled=bad), what)


# ================================================================ a wrong library kernel
def wrong_kernels(mutate: Mutation, part: str | None = None) -> tuple[ModuleType, str]:
    """A copy of compiler/kernels.py with one change, loaded as a file-backed module
    (its name is the hash of its source, so nothing cached for the real library is used).
    part: the change is made in compiler/<part>.py instead, which the copy imports."""
    source = Path(real_kernels.__file__).read_text()
    if part is None:
        source, what = corrupt(source, mutate)
        return cache.load_module(source), what
    wrong_part, what = corrupt((Path(real_kernels.__file__).parent / f"{part}.py").read_text(),
                               mutate)
    line = f"from compiler.{part} import "
    if line not in source:
        pytest.fail(f"compiler/kernels.py does not import from compiler.{part}")
    module = cache.load_module(wrong_part)
    return cache.load_module(source.replace(line, f"from {module.__name__} import ")), what


def using_kernels(source: str, kernels: ModuleType) -> str:
    """Generated source whose import of compiler.kernels imports `kernels` instead."""

    class Swap(ast.NodeTransformer):
        found = 0

        def visit_ImportFrom(self, node):
            if node.module == "compiler" and [a.name for a in node.names] == ["kernels"]:
                self.found += 1
                return ast.Import([ast.alias(kernels.__name__, node.names[0].asname or "kernels")])
            if node.module == "compiler.kernels":
                self.found += 1
                node.module = kernels.__name__
            return node

        def visit_Import(self, node):
            for alias in node.names:
                if alias.name == "compiler.kernels" and alias.asname:
                    self.found += 1
                    alias.name = kernels.__name__
            return node

    swap = Swap()
    tree = ast.fix_missing_locations(swap.visit(ast.parse(source)))
    imports = [ast.unparse(n) for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]
    if not swap.found or any("kernels" in line for line in imports):
        pytest.fail(f"cannot redirect the generated source's kernel import: {imports}")
    return ast.unparse(tree)


def _check_op(case, series: tuple[str, ...], compiled) -> None:
    if series:
        check_op_series(case, series, compiled=compiled)
    else:
        check_op_real(case, compiled)


@pytest.mark.parametrize(
    ("case_name", "series", "mutate"),
    [
        pytest.param(
            "exp", (), in_function("vexp", scale_constant(0.5, 1 + 1e-9)), id="order0-vexp"
        ),
        pytest.param("mul", ("x", "y"), in_function("h_mul", flip_first_accumulation), id="h_mul"),
        pytest.param("exp", ("x",), in_function("h_exp", flip_first_accumulation), id="h_exp"),
        pytest.param("erf", (), scale_constant(erf_kernel.QQ1, 1 + 1e-9), id="order0-erf-small"),
        pytest.param("erf", (), scale_constant(erf_kernel.QA1, 1 + 1e-9), id="order0-erf-middle"),
    ],
)
def test_op_check_catches_a_wrong_library_kernel(case_name, series, mutate):
    """One op compiled against a kernel library with one term of one kernel wrong: the op
    check fails.  Order 0: exp's Taylor coefficient 1/2 off by 1e-9 (an error of at most
    ~6e-11 of exp(x)), or one coefficient of erf's polynomials below 0.84375 or from there
    to 1.25 (compiler/erf.py) off by 1e-9, is caught by check_op_real at 1e-13.  Higher
    orders: one term of the Cauchy product (orders >= 2 of x * y) or of the exp recurrence
    with the wrong sign is caught by check_op_series at 1e-12."""
    case = _case(case_name)
    K = 3 if series else 0
    good = CompiledCircuit(case.trace(), K, series)
    _check_op(case, series, good)
    kernels, what = wrong_kernels(mutate, "erf" if case_name == "erf" else None)
    bad = with_module(good, using_kernels(good.source, kernels))
    expect_caught(lambda: _check_op(case, series, bad), what)
