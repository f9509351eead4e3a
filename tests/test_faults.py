"""Issue 21: faults while running: concurrent queries, a query during a compile, kills and
interrupts of a compile, a Dask worker killed mid-run.

Subprocesses run the real command line.  The slow compile is microgpt on 20
names with T = 200 steps and chunks of one direction (about 0.3 s each), so a
signal lands mid-run; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from runtime.precompute import precompute
from runtime.query import coefficient_cache, coefficients, deletion_weights, predict
from runtime.sources import MicrogptSource
from runtime.spec import sha256_file
from runtime.store import Sketch, SketchError
from tests.cli_helpers import one_line_error
from tests.test_runtime import (
    DOCS,
    ROOT,
    K,
    _compile_cmd,
    _done,
    _start_and_wait_for_a_chunk,
    make_long_run,
    same_sketch,
)

QUERIES = ["zoe", "mia", "zoe", "olivia"]  # two processes ask for the same document


@pytest.fixture(scope="module")
def slow(tmp_path_factory) -> tuple[Path, Path]:
    return make_long_run(tmp_path_factory)


def _cli(*argv) -> list[str]:
    return [sys.executable, "-m", "circuitsketch", *map(str, argv)]


def _reference(ref: Path, doc: str) -> dict:
    """The prediction computed in this process from the reference sketch."""
    sk = Sketch.open(ref)
    return predict(sk, [doc], deletion_weights(sk.docs(), indices="1")[0])[0]


# ---------------------------------------------------------------- concurrency
def test_parallel_queries_agree_and_leave_a_readable_cache(tmp_path, slow):
    _, ref = slow
    sk = tmp_path / "sk"
    shutil.copytree(ref, sk, ignore=shutil.ignore_patterns("cache", ".verified.*"))
    procs = [
        subprocess.Popen(
            _cli("query", sk, "--doc", doc, "--delete-indices", "1", "--json"),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for doc in QUERIES
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    want = {doc: _reference(ref, doc) for doc in set(QUERIES)}
    for doc, p, (out, err) in zip(QUERIES, procs, outs, strict=True):
        assert p.returncode == 0, err
        got = json.loads(out)
        assert got["prediction"] == want[doc]["prediction"], doc  # bit for bit
        assert got["stderr"]["total"] == want[doc]["stderr"]["total"], doc
    entries = coefficient_cache(Sketch.open(sk)).entries()
    assert len(entries) == 3 and all(stale is None for _, stale in entries), entries
    assert not list((sk / "cache").glob(".*.tmp"))


def test_a_query_during_a_compile_is_refused_then_answered(capsys, tmp_path, slow):
    docs, ref = slow
    out = tmp_path / "sk"
    proc = _start_and_wait_for_a_chunk(_compile_cmd(docs, out, 200, 1), out)
    try:
        err = one_line_error(capsys, "query", out, "--doc", "zoe", "--delete-indices", "1")
        assert proc.poll() is None, "the compile ended before the query: nothing was tested"
        assert "is still being compiled" in err and "of 6 chunks done" in err, err
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, stderr
    same_sketch(out, ref)
    got = predict(Sketch.open(out), ["zoe"], deletion_weights(DOCS, indices="1")[0])[0]
    assert got["prediction"] == _reference(ref, "zoe")["prediction"]


# ---------------------------------------------------------------- kills and interrupts
def test_killed_parallel_compile_is_quiet_and_resumes(tmp_path, slow):
    """SIGKILL of the compile (2 workers): its workers and multiprocessing's resource
    tracker print nothing (no leaked-semaphore warning), and the rerun resumes."""
    docs, ref = slow
    out = tmp_path / "sk"
    proc = _start_and_wait_for_a_chunk(_compile_cmd(docs, out, 200, 2), out)
    os.kill(proc.pid, signal.SIGKILL)  # the main process only, as the OOM killer would
    _, stderr = proc.communicate(timeout=60)  # until its children let go of the pipe too
    assert proc.returncode == -signal.SIGKILL
    assert stderr.strip() == "", stderr
    assert 1 <= _done(out) < 6
    res = subprocess.run(_compile_cmd(docs, out, 200, 2), cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0 and "leaked" not in res.stderr, res.stderr
    same_sketch(out, ref)


def test_sigterm_compile_stops_cleanly_and_resumes(tmp_path, slow):
    docs, ref = slow
    out = tmp_path / "sk"
    proc = _start_and_wait_for_a_chunk(_compile_cmd(docs, out, 200, 1), out)
    os.kill(proc.pid, signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "directions are saved" in stderr and "Traceback" not in stderr
    res = subprocess.run(_compile_cmd(docs, out, 200, 1), cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    same_sketch(out, ref)


def test_interrupt_before_the_first_chunk_leaves_nothing(tmp_path, slow):
    """Ctrl-C after the sketch folder appears but before a chunk is done: no folder."""
    docs, _ = slow
    out = tmp_path / "sk"
    cmd = _compile_cmd(docs, out, 2000, 1)  # chunks of ~3 s: time to interrupt the first
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while not (out / "manifest.json").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no sketch folder within 120 s"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "no directions are saved" in stderr, stderr
    assert not out.exists(), sorted(p.name for p in out.rglob("*"))


# ---------------------------------------------------------------- Dask
def test_dask_worker_killed_mid_run_still_gives_the_same_sketch(tmp_path, slow):
    import distributed

    docs, ref = slow
    spec = MicrogptSource(tuple(DOCS), 200, seed=2)
    out = tmp_path / "sk"
    result: dict = {}
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster.scheduler_address) as client,
    ):

        def run() -> None:
            try:
                precompute(
                    out,
                    spec,
                    K,
                    num_directions=6,
                    seed=2,
                    chunk_size=1,
                    scheduler=cluster.scheduler_address,
                    docs_sha256=sha256_file(docs),
                    progress=False,
                )
            except BaseException as e:  # reported below
                result["error"] = e

        t = threading.Thread(target=run, daemon=True)
        t.start()
        deadline = time.monotonic() + 180
        while not _recorded(out):
            assert t.is_alive(), result
            assert time.monotonic() < deadline, "no chunk within 180 s"
            time.sleep(0.02)
        pids = client.run(os.getpid)
        os.kill(next(iter(pids.values())), signal.SIGKILL)  # its nanny starts another
        t.join(timeout=240)
        assert not t.is_alive(), "the compile did not finish within 240 s of the kill"
    assert "error" not in result, result
    same_sketch(out, ref)


def _recorded(out: Path) -> bool:
    try:
        return _done(out) >= 1
    except SketchError:
        return False


def test_stale_cache_of_a_recompiled_sketch_is_dropped(capsys, tmp_path, slow):
    """A sketch recompiled in place with another seed keeps no answer of the old one."""
    _, ref = slow
    sk = tmp_path / "sk"
    shutil.copytree(ref, sk)
    coefficients(Sketch.open(sk), ["zoe"])
    cache = sk / "cache"
    kept = tmp_path / "cache"
    shutil.move(cache, kept)
    shutil.rmtree(sk)
    spec = MicrogptSource(tuple(DOCS), 200, seed=2)
    precompute(sk, spec, K, num_directions=6, seed=3, chunk_size=1, progress=False)
    shutil.move(kept, cache)
    warnings: list[str] = []
    got = coefficients(Sketch.open(sk), ["zoe"], warn=warnings.append)["zoe"]
    assert any("another" in w and "dropping it" in w for w in warnings), warnings
    want = coefficients(Sketch.open(sk), ["zoe"], use_cache=False)["zoe"]
    np.testing.assert_array_equal(got, want)


def test_an_interrupt_swallowed_by_a_callback_is_delivered_again():
    """Ctrl-C inside a ctypes callback (as in LLVM's object cache while Numba compiles) is
    swallowed by ctypes; the command line delivers it again at the next line."""
    import ctypes

    from runtime.cli import _interrupts_delivered

    def interrupted() -> None:
        raise KeyboardInterrupt

    callback = ctypes.CFUNCTYPE(None)(interrupted)
    with pytest.raises(KeyboardInterrupt), _interrupts_delivered():
        callback()
        time.sleep(5)  # swallowed without the hook: the sleep ends and nothing is raised
