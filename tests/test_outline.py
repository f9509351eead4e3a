"""Outlining (compiler/outline.py): repeated runs of lines become one block function.

Checked on line sequences whose repeats are known by construction; that the
generated code with blocks trains to the same bits as without is checked on a
two-layer model in tests/test_minibatch_training.py."""

from __future__ import annotations

from itertools import pairwise

import pytest

from compiler.outline import MIN_BLOCK, outline


def lines(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def check_cover(keys: list[str], segments) -> None:
    """Segments cover the lines in order, and every place of a block has the same text."""
    assert segments[0][0] == 0 and segments[-1][1] == len(keys)
    for (_, end, _), (start, _, _) in pairwise(segments):
        assert end == start
    first: dict[int, list[str]] = {}
    for start, stop, block in segments:
        if block is not None:
            assert keys[start:stop] == first.setdefault(block, keys[start:stop])


def compiled_lines(segments) -> int:
    """Lines Numba is given: lines of their own plus each block once."""
    own = sum(b - a for a, b, k in segments if k is None)
    return own + sum(b - a for a, b, _ in {k: (a, b, k) for a, b, k in segments
                                           if k is not None}.values())  # fmt: skip


@pytest.mark.parametrize("layers", [2, 3, 4, 8])
def test_layers_forward_and_backward_are_one_block_each(layers):
    fwd, bwd = lines("f", 40), lines("b", 30)
    keys = lines("embed", 5) + fwd * layers + lines("head", 7) + bwd * layers + lines("up", 3)
    segments = outline(keys)
    check_cover(keys, segments)
    blocks = [k for _, _, k in segments if k is not None]
    assert sorted(set(blocks)) == [0, 1] and len(blocks) == 2 * layers
    assert compiled_lines(segments) == 5 + 40 + 7 + 30 + 3  # the same for every depth


def test_a_run_that_starts_mid_layer_is_still_one_layer():
    # the first layer's first lines differ (it reads the embedding): the periodic run
    # starts inside a layer, and its unit is a rotation of the layer
    layer = lines("l", 30)
    keys = ["x0", "x1"] + layer[2:] + layer * 5 + ["end"]
    segments = outline(keys)
    check_cover(keys, segments)
    assert compiled_lines(segments) <= 2 + 2 * 30 + 1
    assert sum(k is not None for _, _, k in segments) >= 5


def test_layers_whose_ends_differ_share_their_core():
    # the first layer reads the embedding, the last feeds the head: a line at each end
    # differs, and the block is what all four layers share
    core = lines("c", 40)
    keys = ["first", *core, "b", *(["a", *core, "b"] * 2), "a", *core, "last"]
    segments = outline(keys)
    check_cover(keys, segments)
    assert [k for _, _, k in segments].count(0) == 4
    assert compiled_lines(segments) == 40 + 8


def test_repeats_apart_and_short_ones():
    block = lines("r", MIN_BLOCK)
    keys = block + lines("a", 10) + block + lines("c", 10) + block
    segments = outline(keys)
    check_cover(keys, segments)
    assert [k for _, _, k in segments] == [0, None, 0, None, 0]
    short = lines("s", MIN_BLOCK - 1)  # too short to be worth a function
    keys = short + lines("a", 3) + short
    assert outline(keys) == [(0, len(keys), None)]
    assert outline([]) == []


def test_generated_functions_are_shared_across_widths_and_depths():
    """Generated functions are modules named by their code, which reads sizes and constants
    from tables: a model of another width has all of them in common with this one, and a
    deeper one the same layer blocks (so they load compiled from the cache)."""
    from circuitsketch.models import microgpt as m
    from compiler.compiled import program_build
    from compiler.pipeline import run

    docs = tuple(m.read_docs(m.corpus_path())[:6])

    def library(degree: int, **size) -> dict[str, str]:
        return run(program_build(m.build(docs, n_head=2, **size), degree), until="emit").library

    for degree in (0, 3):
        narrow, wide = library(degree, n_embd=8), library(degree, n_embd=12)
        assert set(narrow) == set(wide) and len(narrow) > 5
        two, three = library(degree, n_layer=2, n_embd=8), library(degree, n_layer=3, n_embd=8)
        blocks = {name for name, text in two.items() if "def block_" in text}
        assert blocks and blocks <= set(three)
