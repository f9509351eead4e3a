"""Which documents each step sees: checked against direct readings of numpy's generator."""

from __future__ import annotations

import numpy as np
import pytest

from circuitsketch.batches import epoch_steps, minibatches


def expected(n: int, b: int, epochs: int, seed: int | None) -> list[tuple[int, ...]]:
    """The documented schedule, read off default_rng(seed).permutation directly."""
    rng = None if seed is None else np.random.default_rng(seed)
    out = []
    for _ in range(epochs):
        order = list(range(n)) if rng is None else rng.permutation(n).tolist()
        out += [tuple(order[a : a + b]) for a in range(0, n, b)]
    return out


@pytest.mark.parametrize(("n", "b", "epochs", "seed"),
                         [(10, 4, 3, 7), (9, 3, 2, 0), (5, 8, 2, 1), (7, 1, 2, 3), (6, 4, 2, None)])
def test_epochs_follow_fresh_permutations(n, b, epochs, seed):
    got = minibatches(n, b, epochs=epochs, shuffle_seed=seed)
    assert got == expected(n, b, epochs, seed)
    assert len(got) == epochs * epoch_steps(n, b) == epochs * -(-n // b)
    for e in range(epochs):  # every document once per epoch, the last batch short
        part = got[e * epoch_steps(n, b) : (e + 1) * epoch_steps(n, b)]
        assert sorted(i for batch in part for i in batch) == list(range(n))
        assert len(part[-1]) == (n % b or b)


def test_first_epoch_is_the_first_permutation_drawn():
    first = np.random.default_rng(5).permutation(12)
    got = minibatches(12, 5, epochs=1, shuffle_seed=5)
    assert got == [tuple(first[:5]), tuple(first[5:10]), tuple(first[10:])]


def test_steps_cut_or_extend_the_sequence_of_epochs():
    whole = expected(7, 3, 4, 2)
    assert minibatches(7, 3, steps=5, shuffle_seed=2) == whole[:5]
    assert minibatches(7, 3, steps=10, shuffle_seed=2) == whole[:10]


def test_default_is_document_s_mod_n():
    assert minibatches(4, steps=10) == [(s % 4,) for s in range(10)]
    assert minibatches(4) == [(0,), (1,), (2,), (3,)]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"steps": 3, "epochs": 2}, "steps or the number of epochs, not both"),
    ({"batch_size": 0}, "batch size must be an integer >= 1"),
    ({"epochs": 0}, "epochs must be an integer >= 1"),
    ({"shuffle_seed": -1}, "shuffle seed must be an integer >= 0"),
])
def test_bad_settings_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        minibatches(5, **kwargs)
