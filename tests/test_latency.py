"""Latency (issue 20): a query compiles nothing and maps the sketch; workers only load code.

A query runs in a fresh process (``python -c``) with Numba's compiler entry
point (``numba.core.compiler.compile_extra``, what a cache miss calls) made to
raise: answering from code that is in the disk cache must not call it.  The
same patched process on an empty cache must fail, which shows the patch
catches a compile.  A query of a test input asked before must not even import
Numba.  Arrays come back memory-mapped and read-only, hashed only when their
stamp says they changed since they were last verified.
"""

from __future__ import annotations

import mmap
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import runtime.store as store_mod
from runtime.cli import main
from runtime.store import Sketch, SketchError, chunk_name
from tests.conftest import NAMES20

ROOT = Path(__file__).resolve().parents[1]

# a query in a fresh process: compiling anything raises; prints whether numba was imported
QUERY = """
import sys
import numba.core.compiler as c

def refuse(*args, **kwargs):
    raise RuntimeError("numba compiled a function")

c.compile_extra = refuse
from runtime.cli import main
rc = main(sys.argv[1:])
print("NUMBA-LOADED" if "numba.core.dispatcher" in sys.modules else "NO-NUMBA", rc)
raise SystemExit(rc)
"""
# the same, without touching numba first (so an import of it would show)
QUERY_PLAIN = """
import sys
from runtime.cli import main
rc = main(sys.argv[1:])
print("NUMBA-LOADED" if "numba" in sys.modules else "NO-NUMBA", rc)
raise SystemExit(rc)
"""


def _python(code: str, *argv, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, argv)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )


@pytest.fixture(scope="module")
def sketch(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("latency")
    docs = d / "docs.txt"
    docs.write_text("".join(x + "\n" for x in NAMES20))
    out = d / "sketch"
    rc = main(["compile", "--docs", str(docs), "--degree", "3", "--directions", "8",
               "--seed", "1", "--workers", "1", "--out", str(out), "--no-progress"])  # fmt: skip
    assert rc == 0
    # one query in this process compiles (or loads) the output function of the short bucket
    assert main(["query", str(out), "--doc", "zoe", "--delete-indices", "1", "--json"]) == 0
    return out


def test_a_query_of_a_new_input_compiles_nothing(sketch, capsys):
    capsys.readouterr()
    res = _python(QUERY, "query", sketch, "--doc", "amy", "--delete-indices", "1")
    assert res.returncode == 0, res.stderr
    assert "NUMBA-LOADED 0" in res.stdout and "predicted loss" in res.stdout


def test_the_compile_guard_can_fail(sketch, tmp_path):
    # on an empty cache the same query must compile, and the guard stops it
    res = _python(QUERY, "query", sketch, "--doc", "ann", "--delete-indices", "1",
                  env={"CIRCUITSKETCH_CACHE": str(tmp_path / "empty")})  # fmt: skip
    assert res.returncode != 0 and "numba compiled a function" in res.stderr


def test_a_query_asked_before_does_not_load_numba(sketch, capsys):
    capsys.readouterr()
    res = _python(QUERY_PLAIN, "query", sketch, "--doc", "zoe", "--delete-indices", "2")
    assert res.returncode == 0, res.stderr
    assert "NO-NUMBA 0" in res.stdout
    # and a new input does load it (the check above can tell the two apart)
    res = _python(QUERY_PLAIN, "query", sketch, "--doc", "bob", "--delete-indices", "2")
    assert res.returncode == 0, res.stderr
    assert "NUMBA-LOADED 0" in res.stdout


def _maps(arr: np.ndarray) -> bool:
    base = arr
    while base is not None:
        if isinstance(base, mmap.mmap):
            return True
        base = getattr(base, "base", None)
    return False


def test_sketch_arrays_are_memory_mapped_and_read_only(sketch):
    sk = Sketch.open(sketch)
    for arr in (sk.chunk(0), sk.directions(), sk.params0()):
        assert _maps(arr)
        assert not arr.flags.writeable
        with pytest.raises(ValueError):
            arr[(0,) * arr.ndim] = 0
    loaded = np.load(sketch / chunk_name(0), allow_pickle=False)
    np.testing.assert_array_equal(sk.chunk(0), loaded)
    assert sk.docs() == list(NAMES20)


def test_a_mapped_file_is_hashed_only_when_its_stamp_changed(sketch, tmp_path, monkeypatch):
    copy = tmp_path / "copy"
    shutil.copytree(sketch, copy)  # new inodes: every stamp is stale
    hashed: list[tuple[str, bool]] = []
    real = store_mod.map_verified

    def spy(path, entry, label, trusted):
        arr, stamp, did = real(path, entry, label, trusted)
        hashed.append((Path(path).name, did))
        return arr, stamp, did

    monkeypatch.setattr(store_mod, "map_verified", spy)
    Sketch.open(copy).chunk(0)
    Sketch.open(copy).chunk(0)  # a second process would see the stamp recorded
    assert hashed == [("phi_00000.npy", True), ("phi_00000.npy", False)]
    # a byte flipped in place: the stamp changes, the file is hashed again and refused
    f = copy / chunk_name(0)
    data = bytearray(f.read_bytes())
    data[-1] ^= 1
    with open(f, "r+b") as fh:
        fh.write(data)
    with pytest.raises(SketchError, match="corrupt"):
        Sketch.open(copy).chunk(0)


@pytest.mark.parametrize("forks", [False, True])
@pytest.mark.parametrize("cached", [False, True])
def test_the_parent_compiles_while_workers_start(tmp_path, monkeypatch, cached, forks):
    import runtime.parallel as parallel
    import runtime.precompute as pre
    from runtime.sources import MicrogptSource

    monkeypatch.setattr(parallel, "forks", lambda: forks)
    marker = tmp_path / "marker"
    if cached:
        marker.write_text("")
    monkeypatch.setattr(pre, "_loaded_marker", lambda cp: marker)
    calls: list[str] = []
    monkeypatch.setattr(pre, "load_series_code", lambda cp: calls.append("load"))
    seen: dict = {}

    def inline(fn, tasks, on_result, workers=1, scheduler=None, warm=None, prepare=None):
        seen.update(workers=workers, warm=warm)
        calls.append("start workers")
        if prepare is not None:
            prepare()
        calls.append("run")
        for t in tasks:
            on_result(t, fn(t))

    monkeypatch.setattr(parallel, "run_tasks", inline)
    source = MicrogptSource(NAMES20, len(NAMES20), seed=1)
    pre.precompute(tmp_path / "sk", source, 3, num_directions=4, chunk_size=2, workers=2,
                   progress=False)  # fmt: skip
    # spawned workers, a cold cache: compiled once, by the parent; a warm one: the workers
    # only load it.  Forked workers: always loaded by the parent, the workers copy it
    loads = forks or not cached
    assert calls == (["start workers", "load", "run"] if loads else ["start workers", "run"])
    assert seen["workers"] == 2 and seen["warm"] == (pre.warm_worker, (source, 3))


def test_loading_the_series_code_marks_it_cached(monkeypatch, tmp_path):
    import runtime.precompute as pre
    from runtime.sources import MicrogptSource
    from runtime.spec import compiled

    cp = compiled(MicrogptSource(NAMES20, len(NAMES20), seed=1), 3)
    marker = tmp_path / "marker"
    monkeypatch.setattr(pre, "_loaded_marker", lambda cp: marker)
    pre.load_series_code(cp)
    assert marker.exists()
    monkeypatch.undo()  # the real marker lives in the keyed cache directory
    from compiler import cache

    assert pre._loaded_marker(cp).parent == cache.cache_dir()
    assert cache.source_hash(cp.source) in pre._loaded_marker(cp).name


# in the workers of the next test (spawned processes import this module)
_SEEN: list[bool] = []


def _wait_then_look(marker: str, ready) -> None:
    Path(f"{marker}.started.{os.getpid()}").write_text("")
    ready.wait()
    _SEEN.append(Path(marker).exists())


def _what_warm_saw(task: int) -> list[bool]:
    return list(_SEEN)


def test_spawned_workers_warm_up_after_the_parents_prepare(tmp_path, monkeypatch):
    import time

    from runtime import parallel
    from runtime.parallel import run_tasks

    monkeypatch.setattr(parallel, "forks", lambda: False)
    marker = tmp_path / "compiled"

    def prepare() -> None:
        # both workers are in their warm-up before this returns: had they not waited for
        # it, they would have looked for the marker already
        for _ in range(6000):
            if len(list(tmp_path.glob("compiled.started.*"))) == 2:
                break
            time.sleep(0.01)
        time.sleep(0.2)
        marker.write_text("done")

    got: list[list[bool]] = []
    run_tasks(_what_warm_saw, list(range(4)), lambda t, r: got.append(r), workers=2,
              warm=(_wait_then_look, (str(marker),)), prepare=prepare)  # fmt: skip
    assert len(got) == 4 and all(r == [True] for r in got), got


FORKED_WORKERS = """
import os, signal, sys
sys.path.insert(0, {root!r})
from runtime import parallel

PREPARED = []

def prepare():
    PREPARED.append(os.getpid())

def warm(ready):
    raise AssertionError("a forked worker ran warm")

def look(task):
    default = signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    return [PREPARED == [os.getppid()], default]

def stop(signum, frame):
    raise KeyboardInterrupt

if __name__ == "__main__":
    signal.signal(signal.SIGTERM, stop)
    assert parallel.forks()
    got = []
    parallel.run_tasks(look, [0, 1, 2], lambda t, r: got.append(r), workers=2,
                       warm=(warm, ()), prepare=prepare)
    print(got)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers fork on Linux only")
def test_forked_workers_copy_the_prepared_parent(tmp_path):
    """In a process with no other thread (a CLI command), workers are forked after the
    parent's `prepare`: they hold what it loaded, skip `warm`, and take SIGTERM's default
    (the compile command's handler would turn the pool's terminate into a caught
    KeyboardInterrupt)."""
    script = tmp_path / "forked.py"
    script.write_text(FORKED_WORKERS.format(root=str(Path(__file__).resolve().parents[1])))
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str([[True, True]] * 3)


def test_load_series_code_loads_every_step_function(monkeypatch):
    from runtime.precompute import load_series_code
    from runtime.sources import MicrogptSource
    from runtime.spec import compiled

    # names of both buckets (8 and 16 positions): two step circuits
    cp = compiled(MicrogptSource(NAMES20, len(NAMES20), seed=1), 3)
    assert len(cp.step_keys) == 2
    ran: list[int] = []
    real = cp.train_series
    monkeypatch.setattr(cp, "train_series", lambda psi, start, stop: (ran.append(start),
                                                                      real(psi, start=start,
                                                                           stop=stop)))  # fmt: skip
    load_series_code(cp)
    assert sorted({int(cp.keys[s]) for s in ran}) == [0, 1] and len(ran) == 2
    for i in range(len(cp.step_keys)):
        for part in getattr(cp.module, f"step_{i}_PARTS"):
            assert part.signatures, f"step_{i}: a part was neither compiled nor loaded"


def test_demo_draws_its_picture(capsys, tmp_path):
    from tests.cli_helpers import run_json

    r = run_json(capsys, "demo", "--num-docs", "20", "--directions", "4", "--letter", "y",
                 "--test", "zoe", "--out", tmp_path / "demo")  # fmt: skip
    assert r["workers"] == 1 and r["directions"] == 4
    png = Path(r["picture"])
    assert png == (tmp_path / "demo" / "circuitsketch-demo.png").resolve()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert r["output_compiled_in"] in ("helper", "main")
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == [
        "circuitsketch-demo.png", "docs.txt", "sketch"]  # the claim's flag is removed
    r = run_json(capsys, "demo", "--num-docs", "20", "--directions", "4", "--letter", "y",
                 "--test", "zoe", "--out", tmp_path / "demo2", "--no-plot")  # fmt: skip
    assert r["picture"] is None and not (tmp_path / "demo2" / "circuitsketch-demo.png").exists()


def test_one_process_claims_the_demo_output_function(tmp_path):
    from runtime.demo import _claim

    flag = tmp_path / "flag"
    assert [_claim(flag), _claim(flag), _claim(flag)] == [True, False, False]


def test_demo_refuses_a_picture_it_cannot_write(capsys, tmp_path):
    from tests.cli_helpers import one_line_error

    err = one_line_error(capsys, "demo", "--num-docs", "20", "--plot", tmp_path / "no" / "x.png")
    assert err.startswith("error: --plot") and "no such directory" in err
    assert not (tmp_path / "no").exists()


def _pid(task: int) -> int:
    return os.getpid()


def test_spawned_workers_are_kept_for_the_next_call(monkeypatch):
    """Where workers are spawned (a notebook's threads rule out forking), the second call
    finds them started: the same processes, warmed once; the fixture then ends them."""
    from runtime import parallel

    monkeypatch.setattr(parallel, "forks", lambda: False)
    prepared: list[int] = []
    first: list[int] = []
    parallel.run_tasks(_pid, list(range(6)), lambda t, r: first.append(r), workers=2,
                       prepare=lambda: prepared.append(1))  # fmt: skip
    again: list[int] = []
    parallel.run_tasks(_pid, list(range(6)), lambda t, r: again.append(r), workers=2,
                       prepare=lambda: prepared.append(2))  # fmt: skip
    assert set(again) <= set(first) and len(set(first)) >= 1 and os.getpid() not in first
    assert prepared == [1, 2] and len(parallel._KEPT) == 1
    other: list[int] = []  # another number of workers: another pool
    parallel.run_tasks(_pid, list(range(6)), lambda t, r: other.append(r), workers=3)
    assert not set(other) & set(first) and len(parallel._KEPT) == 2
    parallel.shutdown_workers()
    assert not parallel._KEPT
