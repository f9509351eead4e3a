"""A product reads its right operand transposed where it lies (``lower.transposed_views``).

* the kernel: ``products.matmul`` given the operand transposed (column C) gives the
  bits of the plain product, on shapes that fill whole tiles, masked ones and batches;
* the choice: only a transpose of the last two axes that products alone read, as their
  right operand, is left uncomputed;
* end to end: x @ W.T compiled in real mode calls no transpose and gives the bits of
  the same circuit compiled with the transpose written out.
"""

from __future__ import annotations

import numpy as np
import pytest

from circuitsketch.ir import Circuit, Op
from compiler import lower, pipeline
from compiler.function import CompiledCircuit
from compiler.layout import BB, E0, E1, E2, E3, OUT, WIDTH, A, C
from compiler.products import TRANSPOSED, matmul


@pytest.mark.parametrize("shape", [(1, 80, 128, 512), (1, 9, 128, 128), (32, 10, 32, 10),
                                   (1, 3, 7, 37), (2, 5, 1, 17), (1, 1, 16, 8)])
def test_a_product_of_a_transposed_operand_has_the_plain_products_bits(shape):
    P, M, Kd, Nn = shape
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(P, M, Kd)), rng.normal(size=(P, Kd, Nn))
    code = np.full((1, WIDTH), -1, np.int64)
    code[0, [A, BB, OUT, E0, E1, E2, E3]] = [0, 0, 0, P, M, Kd, Nn]
    plain, transposed = np.zeros(P * M * Nn), np.full(P * M * Nn, np.nan)
    matmul(a.ravel(), b.ravel(), plain, code, 0)
    code[0, C] = TRANSPOSED
    matmul(a.ravel(), np.ascontiguousarray(b.transpose(0, 2, 1)).ravel(), transposed, code, 0)
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


def test_only_a_transpose_that_products_read_on_the_right_is_a_view(monkeypatch):
    c, wt = _linear()
    assert lower.transposed_views(c) == {wt}
    for reader in ("left", "sum"):
        c, wt = _linear(reader)
        assert wt not in lower.transposed_views(c)
    c, wt = _linear()
    monkeypatch.setattr(lower, "VIEW_MIN", 7 * 6 + 1)  # a matrix below the size
    assert lower.transposed_views(c) == set()


def test_x_times_w_transposed_calls_no_transpose_and_keeps_its_bits(monkeypatch):
    c, _ = _linear()
    rng = np.random.default_rng(1)
    inputs = {"x": rng.normal(size=(5, 6)), "w": rng.normal(size=(7, 6))}
    viewed = CompiledCircuit(c, 0)
    assert "k.take" not in viewed.build.source and "k.matmul" in viewed.build.source
    monkeypatch.setattr(pipeline, "transposed_views", lambda c: set())
    written = CompiledCircuit(c, 0)
    assert "k.take" in written.build.source
    y, y_written = viewed(inputs)["y"], written(inputs)["y"]
    assert np.array_equal(y, y_written)
    assert np.allclose(y, inputs["x"] @ inputs["w"].T, rtol=1e-13, atol=1e-13)
