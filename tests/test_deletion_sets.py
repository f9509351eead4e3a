"""Issue 19: the deletion-set container and the ``--sets FILE.jsonl`` format.

Each malformed line must give one ValueError line naming the file's line
number (through the CLI: one ``error: ...`` line, exit status 2, before
any training or compiling).  Well-formed files, index matrices and lists of
lists must give the same sets; sampling must be reproducible from the seed.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading

import numpy as np
import pytest

from runtime.deletion_sets import DeletionSets, as_sets, parse_sets, read_sets, sample_sets
from tests import conftest as ct
from tests.cli_helpers import one_line_error, run_json

N = 20


def parse(text: str) -> DeletionSets:
    return parse_sets(text, N, "--sets 'f.jsonl'")


def test_a_well_formed_file(tmp_path):
    text = '{"delete": [3, 1, 2]}\n\n  \n{"delete": [7], "weight": 0.5}\n{"delete": []}\n'
    s = parse(text)
    assert len(s) == 3
    assert s.members(0).tolist() == [1, 2, 3]  # sorted
    assert s.sizes.tolist() == [3, 1, 0]
    assert s.weights.tolist() == [1.0, 0.5, 1.0]
    w = s.matrix()
    assert w.shape == (3, N) and w[0, [1, 2, 3]].tolist() == [1, 1, 1] and w[0].sum() == 3
    assert w[1, 7] == 0.5 and w[1].sum() == 0.5 and not w[2].any()
    np.testing.assert_array_equal(w[1], s.weight_vector(1))
    # written and read back: the same sets, the same keys
    f = tmp_path / "s.jsonl"
    f.write_text("".join(ln + "\n" for ln in s.lines()))
    back = read_sets(f, N)
    assert [back.key(i) for i in range(3)] == [s.key(i) for i in range(3)]
    np.testing.assert_array_equal(back.matrix(), w)


@pytest.mark.parametrize(
    "text,message",
    [
        ('{"delete": [1]}\n{"delete": [1, 2}\n', "line 2: not valid JSON"),
        ('{"delete": [1]}\n\n{"delete": [25]}\n', "line 3: index 25 is out of range: there are 20"),
        ('{"delete": [-1]}\n', "line 1: index -1 is out of range"),
        ('{"delete": [10000000000000000000000]}\n', "line 1: index 10000000000000000000000 is out"),
        (
            '{"delete": [1], "weight": 1.5}\n',
            'line 1: "weight" must be in [0, 1] (1 = delete), got',
        ),
        ('{"delete": [1], "weight": -0.1}\n', 'line 1: "weight" must be in [0, 1]'),
        ('{"delete": [1], "weight": "1"}\n', 'line 1: "weight" must be a number in [0, 1]'),
        ('{"delete": [1], "weight": true}\n', 'line 1: "weight" must be a number'),
        ('{"delete": [1], "weight": NaN}\n', 'line 1: "weight" must be a number'),
        ('{"delete": [1, 1]}\n', "line 1: index 1 appears more than once"),
        ('{"delete": [1.5]}\n', "line 1: 1.5 is not a document index"),
        ('{"delete": ["3"]}\n', 'line 1: "3" is not a document index'),
        ('{"delete": [true]}\n', "line 1: true is not a document index"),
        ('{"delete": [null]}\n', "line 1: null is not a document index"),
        ('{"delete": 3}\n', 'line 1: "delete" must be a list'),
        ('{"weight": 1}\n', 'line 1: no "delete" list'),
        ('{"delet": [1]}\n', 'line 1: unknown key "delet"'),
        ("[1, 2]\n", "line 1: expected an object"),
        ("\n\n", "holds no deletion sets"),
    ],
)
def test_each_malformed_line_is_named(text, message):
    with pytest.raises(ValueError) as e:
        parse(text)
    assert message in str(e.value) and str(e.value).startswith("--sets 'f.jsonl'")
    assert "\n" not in str(e.value)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        read_sets(tmp_path / "nope.jsonl", N)
    bad = tmp_path / "bin.jsonl"
    bad.write_bytes(b'{"delete": [1]}\n\xff\xfe\n')
    with pytest.raises(ValueError, match="not UTF-8"):
        read_sets(bad, N)


@pytest.fixture
def fifo(tmp_path):
    """feed(text): a named pipe a thread writes `text` into (freed at the end if unread)."""
    path = tmp_path / "sets.fifo"
    os.mkfifo(path)
    threads = []

    def feed(text: str):
        def write():
            with contextlib.suppress(OSError), open(path, "w", encoding="utf-8") as f:
                f.write(text)

        threads.append(threading.Thread(target=write, daemon=True))
        threads[-1].start()
        return path

    yield feed
    for t in threads:
        if t.is_alive():  # nobody opened the pipe: open it, so the writer ends
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            t.join(5)
            os.close(fd)


def test_a_named_pipe_is_read_like_a_file(tmp_path, fifo):
    """--sets <(jq ...) or a FIFO was refused as "not a file": the file is read once, so a
    pipe is read as it is; a directory is named as one."""
    text = '{"delete": [3, 1]}\n\n{"delete": [7], "weight": 0.5}\n'
    plain = tmp_path / "sets.jsonl"
    plain.write_text(text)
    got, want = read_sets(fifo(text), N), read_sets(plain, N)
    assert got.lines() == want.lines() == ['{"delete": [1, 3], "weight": 1.0}',
                                           '{"delete": [7], "weight": 0.5}']
    with pytest.raises(ValueError, match=f"^--sets '{tmp_path}' is a directory$"):
        read_sets(tmp_path, N)


def test_matrix_lists_and_files_are_the_same_sets(tmp_path):
    idx = np.array([[0, 5, 9], [3, 2, 1]])
    a = DeletionSets.from_matrix(idx, N, 0.5)
    b = as_sets([[0, 5, 9], [3, 2, 1]], N, 0.5)
    f = tmp_path / "s.jsonl"
    f.write_text('{"delete": [9, 0, 5], "weight": 0.5}\n{"delete": [1, 2, 3], "weight": 0.5}\n')
    c = as_sets(f, N)
    for s in (b, c):
        np.testing.assert_array_equal(s.matrix(), a.matrix())
        assert [s.key(i) for i in range(2)] == [a.key(i) for i in range(2)]
    with pytest.raises(ValueError, match="row 1: index 20 is out of range"):
        DeletionSets.from_matrix(np.array([[0, 1], [2, 20]]), N)
    with pytest.raises(ValueError, match="2-D"):
        DeletionSets.from_matrix(np.array([1, 2]), N)
    with pytest.raises(ValueError, match="not a document index"):
        as_sets([[0.5, 1]], N)
    with pytest.raises(ValueError, match='deletion set 0: "weight" must be in'):
        as_sets([[0, 1]], N, weight=2.0)
    single = DeletionSets.singletons(N)
    np.testing.assert_array_equal(single.matrix(), np.eye(N))
    assert a.subset([1]).members(0).tolist() == [1, 2, 3]


def test_keys_tell_sets_apart():
    s = DeletionSets.from_lists([[1, 2], [2, 1], [1, 2], [1, 3]], N, [1.0, 1.0, 0.5, 1.0])
    keys = [s.key(i) for i in range(4)]
    assert keys[0] == keys[1]  # the same set, listed in another order
    assert len({keys[0], keys[2], keys[3]}) == 3  # another weight, another document


def test_sampling_is_reproducible_and_sizes_are_independent():
    a = sample_sets(100, [1, 10, 50], 7, seed=3)
    b = sample_sets(100, [1, 10, 50], 7, seed=3)
    c = sample_sets(100, [10], 7, seed=3)
    d = sample_sets(100, [10], 7, seed=4)
    np.testing.assert_array_equal(a.matrix(), b.matrix())
    assert a.sizes.tolist() == [1] * 7 + [10] * 7 + [50] * 7
    np.testing.assert_array_equal(a.matrix()[7:14], c.matrix())  # size 10 alone: same sets
    assert not np.array_equal(c.matrix(), d.matrix())
    assert all(len(set(a.members(i).tolist())) == a.sizes[i] for i in range(len(a)))
    with pytest.raises(ValueError, match="impossible with 100 training documents"):
        sample_sets(100, [101], 2, 0)


# ---------------------------------------------------------------- through the command line
@pytest.fixture
def docs_file(tmp_path):
    f = tmp_path / "docs.txt"
    f.write_text("".join(x + "\n" for x in ct.NAMES20))
    return f


@pytest.mark.parametrize(
    "text,message",
    [
        ('{"delete": [0]}\n{"delete": [0,\n', "line 2: not valid JSON"),
        ('{"delete": [0]}\n{"delete": [20]}\n', "line 2: index 20 is out of range"),
        ('{"delete": [0], "weight": 2}\n', 'line 1: "weight" must be in [0, 1]'),
    ],
)
def test_cli_errors_are_one_line_before_any_training(capsys, tmp_path, docs_file, text, message):
    f = tmp_path / "sets.jsonl"
    f.write_text(text)
    argv = ["retrain", "--docs", docs_file, "--sets", f, "--doc", "olivia", "--workers", 1]
    err = one_line_error(capsys, *argv)
    assert message in err and str(f) in err


def test_cli_reads_sets_from_a_named_pipe(capsys, docs_file, fifo):
    f = fifo('{"delete": [0]}\n{"delete": [20]}\n')
    err = one_line_error(capsys, "retrain", "--docs", docs_file, "--sets", f, "--doc", "olivia")
    assert err == (f"error: --sets '{f}' line 2: index 20 is out of range: there are 20 "
                   "training documents (indices 0..19)\n")


def test_cli_option_clashes(capsys, tmp_path, docs_file):
    f = tmp_path / "sets.jsonl"
    f.write_text('{"delete": [0]}\n')
    base = ["retrain", "--docs", docs_file, "--doc", "olivia"]
    err = one_line_error(capsys, *base, "--sets", f, "--weight", "0.5")
    assert "--weight applies to --delete-" in err
    err = one_line_error(capsys, *base, "--delete-indices", "0", "--workers", "2")
    assert "--workers apply to --sets" in err
    err = one_line_error(capsys, *base, "--sets", f, "--delete-indices", "0")
    assert "not allowed with argument" in err


def test_cli_retrain_sets_records(capsys, tmp_path, docs_file):
    f = tmp_path / "sets.jsonl"
    f.write_text('{"delete": [0, 3]}\n{"delete": [5], "weight": 0.5}\n')
    argv = ["retrain", "--docs", docs_file, "--steps", 20, "--seed", ct.INIT_SEED]
    recs = run_json(capsys, *argv, "--sets", f, "--doc", "olivia", "--doc", "max", "--workers", 1)
    assert [(r["set"], r["doc"]) for r in recs] == [
        (0, "olivia"),
        (0, "max"),
        (1, "olivia"),
        (1, "max"),
    ]
    assert [r["weight"] for r in recs] == [1.0, 1.0, 0.5, 0.5]
    one = run_json(capsys, *argv, "--delete-indices", "5", "--weight", "0.5", "--doc", "max")
    assert one["loss"] == recs[3]["loss"]  # the single retrain, bit for bit
    json.dumps(recs)  # plain JSON
