"""A product reads an operand transposed where it lies (``lower.transposed_views``).

* the kernel: ``products.matmul`` given its right, left or both operands transposed
  (column C) gives the bits of the plain product, on shapes that fill whole tiles,
  masked ones and batches;
* the choice: only a transpose of the last two axes that products alone read, each
  as one operand, is left uncomputed; one read on the right only from VIEW_MIN
  entries on;
* end to end: x @ W.T and dY.T @ x compiled in real mode call no transpose and give
  the bits of the same circuits compiled with the transposes written out.
"""

from __future__ import annotations

import numpy as np
import pytest

from circuitsketch.ir import Circuit, Op
from compiler import lower, pipeline
from compiler.function import CompiledCircuit
from compiler.layout import BB, E0, E1, E2, E3, OUT, WIDTH, A, C
from compiler.products import LEFT_TRANSPOSED, TRANSPOSED, matmul


@pytest.mark.parametrize("shape", [(1, 80, 128, 512), (1, 9, 128, 128), (32, 10, 32, 10),
                                   (1, 3, 7, 37), (2, 5, 1, 17), (1, 1, 16, 8), (3, 33, 6, 5)])
@pytest.mark.parametrize("flags", [TRANSPOSED, LEFT_TRANSPOSED, TRANSPOSED | LEFT_TRANSPOSED])
def test_a_product_of_a_transposed_operand_has_the_plain_products_bits(shape, flags):
    P, M, Kd, Nn = shape
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(P, M, Kd)), rng.normal(size=(P, Kd, Nn))
    code = np.full((1, WIDTH), -1, np.int64)
    code[0, [A, BB, OUT, E0, E1, E2, E3]] = [0, 0, 0, P, M, Kd, Nn]
    plain, transposed = np.zeros(P * M * Nn), np.full(P * M * Nn, np.nan)
    matmul(a.ravel(), b.ravel(), plain, code, 0)
    code[0, C] = flags
    x = a.transpose(0, 2, 1) if flags & LEFT_TRANSPOSED else a
    y = b.transpose(0, 2, 1) if flags & TRANSPOSED else b
    matmul(np.ascontiguousarray(x).ravel(), np.ascontiguousarray(y).ravel(), transposed,
           code, 0)  # fmt: skip
    assert np.array_equal(plain, transposed)
    assert np.allclose(plain, (a @ b).ravel(), rtol=1e-13, atol=1e-13)


@pytest.fixture(autouse=True)
def small_views(monkeypatch):
    monkeypatch.setattr(lower, "VIEW_MIN", 1)  # the rule, on matrices small enough to read


def _linear(extra_reader: str | None = None) -> tuple[Circuit, int]:
    """y = x @ W.T (+ a second reader of W.T: a product's left operand, or a sum)."""
    c = Circuit()
    x, w = c.add_input("x", (5, 6)), c.add_input("w", (7, 6))
    wt = c.add(Op.TRANSPOSE, [w], ((1, 0),))
    y = c.add(Op.MATMUL, [x, wt])
    c.set_output("y", y)
    if extra_reader == "left":
        c.set_output("z", c.add(Op.MATMUL, [wt, c.add_input("v", (7, 2))]))
    elif extra_reader == "sum":
        c.set_output("z", c.add(Op.SUM, [wt], (0,)))
    return c, wt


def _weight_gradient() -> tuple[Circuit, int]:
    """dW = dY.T @ x: the transpose is the product's left operand only."""
    c = Circuit()
    dy, x = c.add_input("dy", (5, 7)), c.add_input("x", (5, 6))
    dyt = c.add(Op.TRANSPOSE, [dy], ((1, 0),))
    c.set_output("dw", c.add(Op.MATMUL, [dyt, x]))
    return c, dyt


def test_only_a_transpose_that_products_alone_read_is_a_view(monkeypatch):
    c, wt = _linear()
    assert lower.transposed_views(c) == {wt}
    c, wt = _linear("left")
    assert lower.transposed_views(c) == {wt}
    c, wt = _linear("sum")
    assert wt not in lower.transposed_views(c)
    monkeypatch.setattr(lower, "VIEW_MIN", 7 * 6 + 1)  # a matrix below the size
    for reader in (None, "left"):  # read on the right: packing does not pay
        c, wt = _linear(reader)
        assert lower.transposed_views(c) == set()
    c, dyt = _weight_gradient()  # read on the left only: a view at any size
    assert lower.transposed_views(c) == {dyt}


@pytest.mark.parametrize("circuit", [_linear, _weight_gradient])
def test_a_viewed_product_calls_no_transpose_and_keeps_its_bits(monkeypatch, circuit):
    c, _ = circuit()
    rng = np.random.default_rng(1)
    inputs = {n.attrs[0]: rng.normal(size=n.shape) for _, n in c if n.op is Op.INPUT}
    viewed = CompiledCircuit(c, 0)
    assert "k.take" not in viewed.build.source and "k.matmul" in viewed.build.source
    monkeypatch.setattr(pipeline, "transposed_views", lambda c: set())
    written = CompiledCircuit(c, 0)
    assert "k.take" in written.build.source
    (name,) = c.outputs
    got, got_written = viewed(inputs)[name], written(inputs)[name]
    assert np.array_equal(got, got_written)
    a, b = (inputs["x"], inputs["w"].T) if name == "y" else (inputs["dy"].T, inputs["x"])
    assert np.allclose(got, a @ b, rtol=1e-13, atol=1e-13)
