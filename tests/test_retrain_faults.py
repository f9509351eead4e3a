"""Issue 21: kills and interrupts of the batch retrain (``retrain --sets``).

The run is microgpt on 20 names with T = 200 and 600 deletion sets on two
workers, a few seconds of retraining: the signal lands once the output file
holds some records.  After a SIGKILL of the main process (as the OOM killer
would) or a Ctrl-C, the rerun must finish the file to the same bytes as an
undisturbed run, retraining only what was missing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from runtime import batch_retrain as br
from runtime.deletion_sets import DeletionSets
from runtime.sources import MicrogptSource
from tests.test_runtime import DOCS, ROOT, start_and_wait, write_docs

STEPS, SEED, SETS = 200, 2, 600
TESTS = ["zoe", "mia"]


@pytest.fixture(scope="module")
def setting(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("retrain_faults")
    rng = np.random.default_rng(0)
    lists = [rng.choice(len(DOCS), int(rng.integers(1, 6)), replace=False) for _ in range(SETS)]
    sets = DeletionSets.from_lists([sorted(x.tolist()) for x in lists], len(DOCS))
    (d / "sets.jsonl").write_text("".join(ln + "\n" for ln in sets.lines()))
    ref = d / "ref.jsonl"
    br.batch_retrain(MicrogptSource(tuple(DOCS), STEPS, seed=SEED), sets, TESTS, ref, workers=1)
    return {"docs": write_docs(d / "docs.txt"), "sets": d / "sets.jsonl", "ref": ref.read_bytes()}


def _cmd(setting: dict, out: Path) -> list[str]:
    argv = ["retrain", "--docs", setting["docs"], "--steps", STEPS, "--seed", SEED]
    argv += ["--sets", setting["sets"], "--workers", 2, "--out", out, "--json"]
    for t in TESTS:
        argv += ["--doc", t]
    return [sys.executable, "-m", "circuitsketch", *map(str, argv)]


def _start_and_wait_for_records(cmd: list[str], out: Path) -> subprocess.Popen:
    return start_and_wait(
        cmd, lambda: out.exists() and out.read_bytes().count(b"\n") >= 20, "20 records"
    )


def _finish(setting: dict, out: Path) -> dict:
    res = subprocess.run(_cmd(setting, out), cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0 and "leaked" not in res.stderr, res.stderr
    assert out.read_bytes() == setting["ref"]
    return json.loads(res.stdout)


def _records(data: bytes) -> int:
    return data.count(b"\n") // len(TESTS)


def test_a_killed_batch_retrain_resumes_to_the_same_bytes(tmp_path, setting):
    out = tmp_path / "t.jsonl"
    proc = _start_and_wait_for_records(_cmd(setting, out), out)
    os.kill(proc.pid, signal.SIGKILL)  # the main process only; its workers must not hang on
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    done = _records(out.read_bytes())
    assert 1 <= done < SETS, done
    summary = _finish(setting, out)
    assert summary["reused"] >= done - 2 and summary["retrained"] == SETS - summary["reused"]


def test_an_interrupted_batch_retrain_stops_cleanly_and_resumes(tmp_path, setting):
    out = tmp_path / "t.jsonl"
    proc = _start_and_wait_for_records(_cmd(setting, out), out)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole process group
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr, stderr
    assert _records(out.read_bytes()) < SETS
    summary = _finish(setting, out)
    assert summary["reused"] >= 1
