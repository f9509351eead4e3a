"""Precompute, store, query and retrain against the scalar oracle and each other.

Kept small: 20 short names, T = 20, K = 3, M = 8.  One name is long enough for
the 16 bucket, so the generated modules are the ones the rest of the suite uses
(tests/conftest.py); they come from the Numba disk cache after their first build.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from runtime.directions import gaussian_direction, gaussian_directions
from runtime.precompute import precompute
from runtime.query import coefficients, deletion_weights, predict
from runtime.retrain import retrain
from runtime.sources import MicrogptSource as TrainingSpec
from runtime.spec import sha256_file
from runtime.store import MANIFEST, Sketch, SketchError, chunk_name, write_manifest
from tests import conftest as ct
from tests.conftest import NAMES20
from tests.oracle import microgpt as oracle

ROOT = Path(__file__).resolve().parents[1]
DOCS = list(NAMES20)
K, M, CHUNK = 3, 8, 2


def write_docs(path: Path, docs=DOCS) -> Path:
    path.write_text("".join(d + "\n" for d in docs))
    return path


def same_sketch(a: Path, b: Path) -> None:
    """Bit-identical arrays and identical configuration and checksums."""
    ma, mb = Sketch.open(a).manifest, Sketch.open(b).manifest
    assert ma["config"] == mb["config"]
    assert ma["files"] == mb["files"]
    for name in ma["files"]:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


@pytest.fixture(scope="module")
def spec() -> TrainingSpec:
    return TrainingSpec(tuple(DOCS), 20, seed=0)


@pytest.fixture(scope="module")
def sketch_w1(tmp_path_factory, spec) -> Path:
    out = tmp_path_factory.mktemp("w1") / "sketch"
    precompute(out, spec, K, num_directions=M, seed=1, workers=1, chunk_size=CHUNK, progress=False)
    return out


# ---------------------------------------------------------------- against the oracle
# The oracle runs are the session's shared ones (tests/conftest.py): real training
# with fractional weights, and degree-6 series training along conftest.directions()[0].
def _conftest_spec() -> TrainingSpec:
    return TrainingSpec(tuple(ct.DOCS), ct.T, seed=ct.INIT_SEED)


def test_coefficients_match_oracle_series_training(tmp_path, oracle_series):
    """Stored parameter series evaluated on the held-out doc equal the scalar oracle's."""
    dirs = tmp_path / "dirs.npy"
    np.save(dirs, ct.directions())  # rows used exactly as given
    rep = precompute(tmp_path / "sk", _conftest_spec(), K, directions_file=dirs, chunk_size=3)
    got = coefficients(rep.sketch, [ct.HELD_OUT])[ct.HELD_OUT]
    assert got.shape == (ct.B, K + 1)
    want = oracle_series[1][: K + 1]
    for r in range(K + 1):
        assert abs(got[0, r] - want[r]) <= 1e-9 * abs(want[r]), (r, got[0, r], want[r])
    assert np.all(got[:, 0] == got[0, 0])  # c_0: the undeleted run, the same for every direction


def test_seeded_directions_are_the_rows_a_file_would_give(tmp_path):
    """A seeded sketch equals the sketch of a directions file holding the same rows."""
    spec = _conftest_spec()
    a = precompute(tmp_path / "a", spec, K, num_directions=3, seed=5, chunk_size=2)
    dirs = tmp_path / "dirs.npy"
    np.save(dirs, gaussian_directions(5, 0, 3, len(ct.DOCS)))
    b = precompute(tmp_path / "b", spec, K, directions_file=dirs, chunk_size=2)
    np.testing.assert_array_equal(a.sketch.directions(), b.sketch.directions())
    for c in range(2):
        np.testing.assert_array_equal(a.sketch.chunk(c), b.sketch.chunk(c))


def test_retrain_matches_oracle_real_training(oracle_real, chars):
    got, losses = retrain(_conftest_spec(), ct.WEIGHTS, [ct.HELD_OUT, ct.HELD_OUT_LONG])
    for g, doc in zip(got, [ct.HELD_OUT, ct.HELD_OUT_LONG], strict=True):
        want = oracle.test_loss(oracle_real[0], oracle.tokenize(doc, chars))
        assert g == pytest.approx(want, rel=1e-12, abs=0)
    np.testing.assert_allclose(losses, oracle_real[1], rtol=1e-12, atol=1e-15)


def test_series_along_deletion_converges_to_retrain(tmp_path, spec):
    """Directions file = the single row 1_D: sum_r c_r approaches retraining as K grows.
    One run gives the truncations at K = 1..4 (c_r does not depend on the run's degree:
    test_series_coefficients_are_independent_of_degree); it is of degree 6, the degree
    the suite's oracle checks compile (tests/conftest.py), not a module of its own."""
    w = np.zeros(20)
    w[2] = 1.0  # delete 'ava'
    dirs = tmp_path / "d.npy"
    np.save(dirs, w[None].astype(np.complex128))
    (truth,), _ = retrain(spec, w, ["ava"])
    (base,), _ = retrain(spec, None, ["ava"])
    rep = precompute(tmp_path / "k6", spec, 6, directions_file=dirs)
    c = coefficients(rep.sketch, ["ava"])["ava"][0]
    assert c[0].real == pytest.approx(base, rel=1e-12)
    errors = [abs(c[: k + 1].sum().real - truth) for k in (1, 2, 3, 4)]
    assert all(b < a for a, b in itertools.pairwise(errors)), errors
    assert errors[-1] < 0.1 * abs(truth - base), (errors, truth - base)


# ---------------------------------------------------------------- scheduling
def test_sketch_content(sketch_w1, spec):
    sk = Sketch.open(sketch_w1)
    assert (sk.degree, sk.num_directions, sk.num_docs, sk.steps, sk.num_chunks) == (K, M, 20, 20, 4)
    np.testing.assert_array_equal(sk.directions()[5], gaussian_direction(1, 5, 20))
    assert sk.docs() == DOCS
    (base,), losses = retrain(spec, None, ["zoe"])
    np.testing.assert_array_equal(sk.losses(), losses)
    c = coefficients(sk, ["zoe"])["zoe"]
    assert np.all(c[:, 0] == c[0, 0]) and c[0, 0].real == pytest.approx(base, rel=1e-13)
    sk.verify_all()


def test_batching_does_not_change_results(tmp_path, sketch_w1, spec):
    precompute(tmp_path / "sk", spec, K, num_directions=M, seed=1, chunk_size=8)
    one = Sketch.open(tmp_path / "sk").chunk(0)
    two = Sketch.open(sketch_w1)
    np.testing.assert_array_equal(one, np.concatenate([two.chunk(c) for c in range(4)]))


def test_two_local_workers_give_identical_sketch(tmp_path, sketch_w1, spec):
    precompute(tmp_path / "sk", spec, K, num_directions=M, seed=1, workers=2, chunk_size=CHUNK)
    same_sketch(tmp_path / "sk", sketch_w1)


def test_dask_cluster_gives_identical_sketch(tmp_path, sketch_w1, spec):
    import distributed  # a dependency of the package (dask[distributed]): never skipped

    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
    ) as cluster:
        precompute(
            tmp_path / "sk",
            spec,
            K,
            num_directions=M,
            seed=1,
            scheduler=cluster.scheduler_address,
            chunk_size=CHUNK,
        )
    same_sketch(tmp_path / "sk", sketch_w1)


def _compile_cmd(docs: Path, out: Path, steps: int, workers: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "circuitsketch",
        "compile",
        "--docs",
        str(docs),
        "--steps",
        str(steps),
        "--degree",
        str(K),
        "--directions",
        "6",
        "--seed",
        "2",
        "--chunk-size",
        "1",
        "--workers",
        str(workers),
        "--out",
        str(out),
        "--no-progress",
    ]


def make_long_run(tmp_path_factory) -> tuple[Path, Path]:
    """(docs file, reference sketch) of `_compile_cmd(docs, out, 200, W)`: the subprocess
    tests' run, T = 200, M = 6, chunks of 1 (here and in tests/test_faults.py)."""
    d = tmp_path_factory.mktemp("long")
    docs = write_docs(d / "docs.txt")
    ref = d / "ref"
    spec = TrainingSpec(tuple(DOCS), 200, seed=2)
    precompute(ref, spec, K, num_directions=6, seed=2, chunk_size=1, docs_sha256=sha256_file(docs))
    return docs, ref


@pytest.fixture(scope="module")
def long_run(tmp_path_factory) -> tuple[Path, Path]:
    return make_long_run(tmp_path_factory)


def start_and_wait(cmd: list[str], ready: Callable[[], bool], what: str) -> subprocess.Popen:
    """Start `cmd` in its own process group (so it and its workers can be signalled) and
    return once `ready()` holds; AssertionError if it ends first or 180 s pass."""
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 180
    while not ready():
        if proc.poll() is not None:
            raise AssertionError(f"the command ended before {what}: {proc.communicate()}")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(f"no {what} within 180 s")
        time.sleep(0.005)
    return proc


def _start_and_wait_for_a_chunk(cmd: list[str], out: Path) -> subprocess.Popen:
    # until the manifest records a finished chunk (a chunk file alone may not be in the
    # manifest yet when the signal lands)
    return start_and_wait(cmd, lambda: _recorded(out), "a finished chunk")


def _recorded(out: Path) -> bool:
    try:
        return _done(out) >= 1
    except SketchError:  # the manifest is not written yet
        return False


def _done(out: Path) -> int:
    return len(Sketch.open(out, require_complete=False).done_chunks())


def test_killed_compile_resumes_bit_identically(tmp_path, long_run):
    """SIGKILL mid-run, rerun the same command: nothing finished is lost or changed."""
    docs, ref = long_run  # ~0.3 s per one-direction chunk: slow enough to be caught mid-run
    out = tmp_path / "killed"
    proc = _start_and_wait_for_a_chunk(_compile_cmd(docs, out, 200, 1), out)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = _done(out)
    assert 1 <= done < 6, done
    with pytest.raises(SketchError, match="incomplete"):
        Sketch.open(out)
    res = subprocess.run(_compile_cmd(docs, out, 200, 1), cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert f"{6 - done} directions ({6 - done} chunks, {done} already done)" in res.stdout
    same_sketch(out, ref)


def test_interrupted_parallel_compile_resumes(tmp_path, long_run):
    """Ctrl-C (SIGINT to the process group) with 2 workers: clean exit, then resume."""
    docs, ref = long_run
    out = tmp_path / "sk"
    proc = _start_and_wait_for_a_chunk(_compile_cmd(docs, out, 200, 2), out)
    os.killpg(proc.pid, signal.SIGINT)
    _stdout, stderr = proc.communicate(timeout=60)
    # at least 4 of 6 chunks (~0.3 s each) are left when the signal is sent: finishing would
    # mean the interrupt was lost, not a reason to skip
    assert proc.returncode != 0, "compile finished before it could be interrupted"
    assert proc.returncode == 130, stderr
    assert "rerun the same command to resume" in stderr and "Traceback" not in stderr
    res = subprocess.run(_compile_cmd(docs, out, 200, 2), cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    same_sketch(out, ref)


INTERRUPT_WHILE_SENDING = """
import sys
sys.path.insert(0, {root!r})
from runtime.parallel import run_tasks

def big(task):
    return bytes(40_000_000)  # a result that takes a while to send

def stop(task, result):
    raise KeyboardInterrupt

if __name__ == "__main__":
    try:
        run_tasks(big, list(range(6)), stop, workers=2)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
"""


def test_interrupt_while_a_worker_sends_its_result_exits(tmp_path):
    """An interrupt kills the pool's workers, one of them likely half-way through
    sending a result.  The process must still exit: it used to wait for ever, at
    exit, on the executor's thread that was reading the half message."""
    script = tmp_path / "interrupt.py"
    script.write_text(INTERRUPT_WHILE_SENDING.format(root=str(ROOT)))
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == "interrupted", res.stderr


def _worker_pids(parent: int) -> list[int]:
    """Pool worker processes of `parent` (Linux /proc), forked or spawned, not its
    resource tracker."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmd = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == parent and b"resource_tracker" not in cmd:
            pids.append(int(stat.parent.name))
    return pids


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_killed_worker_stops_cleanly_and_resumes(tmp_path, long_run):
    docs, ref = long_run
    out = tmp_path / "sk"
    proc = _start_and_wait_for_a_chunk(_compile_cmd(docs, out, 200, 2), out)
    workers = _worker_pids(proc.pid)
    assert workers, "no worker processes found"
    os.kill(workers[0], signal.SIGKILL)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode != 0, "compile finished although a worker was killed"
    assert proc.returncode == 2 and stderr.startswith("error: a worker process died"), stderr
    assert "rerun the same command to resume" in stderr and "Traceback" not in stderr
    assert 1 <= _done(out) < 6
    res = subprocess.run(_compile_cmd(docs, out, 200, 2), cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    same_sketch(out, ref)


# ---------------------------------------------------------------- queries
def test_query_cache_is_used_and_verified(tmp_path, sketch_w1):
    sk_dir = tmp_path / "sk"
    shutil.copytree(sketch_w1, sk_dir, ignore=shutil.ignore_patterns("cache"))
    sk = Sketch.open(sk_dir)
    first = coefficients(sk, ["noah"])["noah"]
    cached = list((sk_dir / "cache").glob("*.npy"))
    assert len(cached) == 1
    import runtime.query as rq

    def no_program(_sketch):
        raise AssertionError("a cached doc must not build or run the compiled program")

    original, rq.sketch_program = rq.sketch_program, no_program
    try:
        again = coefficients(Sketch.open(sk_dir), ["noah"])["noah"]
    finally:
        rq.sketch_program = original
    np.testing.assert_array_equal(first, again)
    # a damaged cache entry is reported and recomputed, never trusted
    data = bytearray(cached[0].read_bytes())
    data[-1] ^= 1
    cached[0].write_bytes(bytes(data))
    warnings = []
    third = coefficients(Sketch.open(sk_dir), ["noah"], warn=warnings.append)["noah"]
    np.testing.assert_array_equal(first, third)
    assert warnings and "corrupt" in warnings[0]


def test_corrupt_chunk_makes_query_fail_naming_it(tmp_path, sketch_w1):
    sk_dir = tmp_path / "sk"
    shutil.copytree(sketch_w1, sk_dir)
    f = sk_dir / chunk_name(2)
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x10
    f.write_bytes(bytes(data))
    with pytest.raises(SketchError, match=r"chunks/phi_00002\.npy: corrupt"):
        coefficients(Sketch.open(sk_dir), ["noah"])


def test_manifest_fingerprint_mismatch_is_refused(tmp_path, sketch_w1):
    import json

    sk_dir = tmp_path / "sk"
    shutil.copytree(sketch_w1, sk_dir)
    m = json.loads((sk_dir / MANIFEST).read_text())
    m["config"]["fingerprints"]["step:8"] = "0" * 24
    (sk_dir / MANIFEST).write_text(json.dumps(m))
    # edited by hand: the manifest's seal names the field (issue 21)
    with pytest.raises(SketchError, match=r'altered: field config\.fingerprints\["step:8"\]'):
        coefficients(Sketch.open(sk_dir), ["noah"])
    # written (sealed) by a circuitsketch whose tracing differs: the circuit is named
    write_manifest(sk_dir, m)
    with pytest.raises(SketchError, match="step circuit for bucket 8 differs"):
        coefficients(Sketch.open(sk_dir), ["noah"])


def test_predict_against_estimator(sketch_w1):
    """predict() is the documented estimator (tests/estimator_reference.py, 2 groups for
    M = 8) on the sketch's coefficients and the deletion set's weights."""
    from tests import estimator_reference as ref

    sk = Sketch.open(sketch_w1)
    w, sel, _ = deletion_weights(sk.docs(), contains="y")
    assert sel == [7, 8, 11, 18, 19]
    (r,) = predict(sk, ["zoe"], w, groups=2)
    e = ref.estimate(coefficients(sk, ["zoe"])["zoe"], sk.directions(), w, K)
    assert r["prediction"] == pytest.approx(e["prediction"][0], rel=1e-13) and r["groups"] == 2
    assert r["stderr"]["total"] == pytest.approx(e["stderr"][0], rel=1e-12)
    assert r["median_of_means"] == pytest.approx(e["median_of_means"][0], rel=1e-13)


def test_deletion_selection(tmp_path):
    docs = ["ann", "bob", "anna", "bob", "cy"]
    w, sel, _ = deletion_weights(docs, indices="0,3-4", weight=0.5)
    assert sel == [0, 3, 4] and list(w) == [0.5, 0, 0, 0.5, 0.5]
    f = tmp_path / "del.txt"
    f.write_text("bob\ncy\n")
    assert deletion_weights(docs, file=f)[1] == [1, 3, 4]
    f.write_text("4\n0\n")
    assert deletion_weights(docs, file=f)[1] == [0, 4]
    assert deletion_weights(docs, contains="an")[1] == [0, 2]
    for kwargs, msg in [
        ({"indices": "5"}, "index 5 is out of range"),
        ({"indices": "-1"}, "not an index"),
        ({"indices": "x"}, "not an index"),
        ({"contains": "zz"}, "no training document contains"),
        ({"contains": "a", "weight": 1.5}, r"--weight must be in \[0, 1\]"),
        ({}, "exactly one"),
    ]:
        with pytest.raises(ValueError, match=msg):
            deletion_weights(docs, **kwargs)
    f.write_text("dave\n")
    with pytest.raises(ValueError, match="'dave' is not one of the training documents"):
        deletion_weights(docs, file=f)
