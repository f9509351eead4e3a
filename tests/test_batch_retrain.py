"""Issue 19: batch ground truth (``retrain --sets``, ``runtime.batch_retrain``).

Every set's losses must be the single ``retrain`` of that set bit for bit;
the finished output file must be the same bytes with one worker, two worker
processes, and after interruptions (a cut last line, missing sets); a rerun
must retrain only what is missing; a file of another training run or of
other sets must be refused.  The training run is the session's microgpt
setting (tests/conftest.py), which retrains in milliseconds.
"""

from __future__ import annotations

import fcntl
import json
import os

import numpy as np
import pytest

from runtime import batch_retrain as br
from runtime.deletion_sets import DeletionSets
from runtime.retrain import retrain
from runtime.sources import MicrogptSource
from tests import conftest as ct
from tests.cli_helpers import one_line_error, run_json

TESTS = [ct.HELD_OUT, "max"]


def source(steps: int = ct.T) -> MicrogptSource:
    return MicrogptSource(tuple(ct.DOCS), steps, seed=ct.INIT_SEED)


@pytest.fixture(scope="module")
def sets() -> DeletionSets:
    lists = [[0], [1, 2], [3, 4, 5], [0, 5], [2], [1, 3, 4], [], [0, 1, 2, 3, 4, 5], [4]]
    return DeletionSets.from_lists(lists, len(ct.DOCS), [1.0, 0.5, 1.0, 0.25] + [1.0] * 5)


@pytest.fixture(scope="module")
def reference(sets) -> bytes:
    """The finished file of a plain one-worker run."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "t.jsonl")
        br.batch_retrain(source(), sets, TESTS, out, workers=1)
        with open(out, "rb") as f:
            return f.read()


def test_each_set_is_the_single_retrain_bit_for_bit(sets, reference):
    res = br.batch_retrain(source(), sets, TESTS)
    for s in range(len(sets)):
        want, _ = retrain(source(), sets.weight_vector(s), TESTS)
        assert res.losses[s].tolist() == want
    recs = [json.loads(ln) for ln in reference.decode().splitlines()]
    assert [(r["set"], r["doc"]) for r in recs] == [(s, d) for s in range(len(sets)) for d in TESTS]
    assert [r["loss"] for r in recs] == res.losses.ravel().tolist()
    assert {r["run"] for r in recs} == {br.run_key(source())}
    assert [r["set_key"] for r in recs[::2]] == [sets.key(s) for s in range(len(sets))]
    assert res.computed == len(sets) and res.reused == 0


def test_two_workers_write_the_same_bytes(tmp_path, sets, reference):
    out = tmp_path / "t.jsonl"
    res = br.batch_retrain(source(), sets, TESTS, out, workers=2, group=1)
    assert out.read_bytes() == reference
    assert res.computed == len(sets)


def test_resume_after_a_crash_redoes_only_what_is_missing(tmp_path, sets, reference, monkeypatch):
    out = tmp_path / "t.jsonl"
    lines = reference.decode().splitlines(keepends=True)
    # sets 0-3 finished, in completion order (3 before 2), then a line cut short by a crash
    kept = lines[0:4] + lines[6:8] + lines[4:6] + [lines[8][:25]]
    out.write_text("".join(kept))
    warnings = []
    calls = []
    job = br.retrain_job

    def spy(j):
        calls.extend(j.rows)
        return job(j)

    monkeypatch.setattr(br, "retrain_job", spy)
    res = br.batch_retrain(source(), sets, TESTS, out, warn=warnings.append)
    assert sorted(calls) == list(range(4, len(sets)))
    assert res.computed == len(sets) - 4 and res.reused == 4
    assert any("incomplete last line" in w for w in warnings)
    assert out.read_bytes() == reference
    # a finished file: nothing to do, nothing rewritten
    mtime = out.stat().st_mtime_ns
    again = br.batch_retrain(source(), sets, TESTS, out)
    assert again.computed == 0 and out.stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(again.losses, res.losses)


def test_a_new_test_input_adds_only_its_records(tmp_path, sets, reference):
    out = tmp_path / "t.jsonl"
    out.write_bytes(reference)
    res = br.batch_retrain(source(), sets, [*TESTS, "emma"], out)
    assert res.computed == len(sets)  # every set retrained once more, for the new input
    recs = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert len(recs) == 3 * len(sets)
    old = [r for r in recs if r["doc"] in TESTS]
    assert "".join(json.dumps(r) + "\n" for r in old).encode() == reference


def test_files_of_other_runs_or_other_sets_are_refused(tmp_path, sets, reference):
    out = tmp_path / "t.jsonl"
    out.write_bytes(reference)
    with pytest.raises(ValueError, match="results of another training run"):
        br.batch_retrain(source(steps=ct.T - 1), sets, TESTS, out)
    other = DeletionSets.from_lists(
        [[1]] + [sets.members(s) for s in range(1, len(sets))], len(ct.DOCS)
    )
    with pytest.raises(ValueError, match="set 0 there is not set 0 of these deletion sets"):
        br.batch_retrain(source(), other, TESTS, out)
    out.write_text('{"set": 0}\n')
    with pytest.raises(ValueError, match="line 1 is not a retrain result record"):
        br.batch_retrain(source(), sets, TESTS, out)


def test_a_file_being_written_is_refused(tmp_path, sets):
    out = tmp_path / "t.jsonl"
    fd = os.open(out, os.O_WRONLY | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(ValueError, match="being written by another process"):
            br.batch_retrain(source(), sets, TESTS, out)
    finally:
        os.close(fd)


def test_cli_resumes_and_reports(capsys, tmp_path, sets, reference):
    docs = tmp_path / "docs.txt"
    docs.write_text("".join(x + "\n" for x in ct.DOCS))
    f = tmp_path / "sets.jsonl"
    f.write_text("".join(ln + "\n" for ln in sets.lines()))
    out = tmp_path / "t.jsonl"
    out.write_bytes(b"".join(reference.splitlines(keepends=True)[:6]))
    argv = ["retrain", "--docs", docs, "--steps", ct.T, "--seed", ct.INIT_SEED, "--sets", f]
    argv += ["--doc", TESTS[0], "--doc", TESTS[1], "--workers", 1, "--out", out]
    summary = run_json(capsys, *argv)
    assert summary["retrained"] == len(sets) - 3 and summary["reused"] == 3
    assert out.read_bytes() == reference
    err = one_line_error(capsys, *argv[:4], ct.T - 1, *argv[5:])
    assert "holds results of another training run" in err


def test_a_dask_cluster_writes_the_same_bytes(tmp_path, sets, reference):
    import distributed  # a dependency of the package: never skipped

    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        out = tmp_path / "t.jsonl"
        br.batch_retrain(source(), sets, TESTS, out, scheduler=cluster.scheduler_address)
    assert out.read_bytes() == reference
