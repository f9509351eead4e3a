"""Shared fixtures: ONE microgpt setting, its compiled programs and its oracle runs.

Every test that trains microgpt uses the documents, init, step count and
bucket set below, so one generated module per degree (0, 1, 3, 6) serves the
whole suite and Numba compiles each once (then it is cached on disk).  The
pure-Python oracle is slow, so its runs are computed once per session:

* ``oracle_real``: real training with the fractional weights ``WEIGHTS``;
* ``oracle_series``: degree-6 series training along ``direction()`` (base
  weights 0).  Its coefficients 0..K are also the oracle for degrees K < 6:
  a truncated series recurrence computes order r from orders <= r only, so
  truncating at K = 6 and then dropping orders > K is the degree-K run.

Both oracle runs are computed in a process of their own, started as soon as the
collected tests are known to need them (``pytest_collection_modifyitems``), and the
fixture reads the arrays that process wrote (the same arithmetic, so the same bits), or
computes them here if it could not.  They take ~30 s of one core.  Under pytest-xdist
(the suite's default, two workers) each worker collects every test and so starts both
runs: ~30 s of CPU twice, in a cold run of ~400 s on two cores; sharing one run between
workers would need a file they both wait on, not worth it at that size.

Helpers (``rel_err``, ``assert_rel``) are imported by the test files as
``from tests.conftest import ...``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest

from circuitsketch.models import microgpt
from tests.oracle import microgpt as OM
from tests.oracle.series import Series


def pytest_configure(config: pytest.Config) -> None:
    """Ctrl-C as at a terminal, however the suite was started: a shell without job control
    (a script, CI) starts a background job with SIGINT ignored, the commands the tests
    start inherit that, and the tests that interrupt them would see them run to the end."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


# Short names (3-5 letters) keep the oracle cheap; "christina" (10 positions) lands in
# the 16 bucket, so both step circuits are used and padding is exercised in both buckets.
DOCS = ("ava", "emma", "leo", "mia", "noah", "christina")
# the runtime and CLI tests' larger training set; "isabella" has 9 positions (the 16 bucket)
NAMES20 = (
    "emma",
    "olivia",
    "ava",
    "sophia",
    "mia",
    "amelia",
    "isabella",
    "evelyn",
    "emily",
    "mila",
    "ella",
    "avery",
    "sofia",
    "camila",
    "aria",
    "luna",
    "grace",
    "chloe",
    "layla",
    "riley",
)
HELD_OUT = "olivia"
HELD_OUT_LONG = "jacqueline"  # 11 positions: evaluated in the 16 bucket
T = 20
INIT_SEED = 3
BUCKETS = (8, 16)
# fractional data weights (one document deleted outright) for the real-training checks
WEIGHTS = np.array([0.0, 0.25, 0.0, 1.0, 0.0, 0.5])
ORACLE_K = 6
SERIES_DEGREES = (1, 3, 6)
B = 4


def rel_err(got, want) -> float:
    """max |got - want| / max |want|: error relative to the array's scale."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"shape {got.shape} != {want.shape}"
    scale = float(np.max(np.abs(want))) if want.size else 0.0
    diff = float(np.max(np.abs(got - want))) if want.size else 0.0
    return diff / scale if scale > 0 else diff


def assert_rel(got, want, tol: float, what: str) -> None:
    err = rel_err(got, want)
    assert err <= tol, f"{what}: relative error {err:.3e} > {tol:.0e}"


def directions(n: int = B, seed: int = 11) -> np.ndarray:
    """n complex Gaussian directions over the documents, each of unit 2-norm (spec)."""
    rng = np.random.default_rng(seed)
    psi = rng.normal(size=(n, len(DOCS))) + 1j * rng.normal(size=(n, len(DOCS)))
    return psi / np.linalg.norm(psi, axis=1, keepdims=True)


@pytest.fixture(scope="session")
def init_params() -> dict[str, np.ndarray]:
    return microgpt.init_params(INIT_SEED)


@pytest.fixture(scope="session")
def chars() -> list[str]:
    return _chars()


@pytest.fixture(scope="session")
def program(init_params):
    return microgpt.build(list(DOCS), steps=T, init=init_params, buckets=BUCKETS)


@pytest.fixture(scope="session")
def compiled(program):
    """compiled(degree) -> the session's CompiledProgram of that degree (built once)."""
    from compiler.compiled import CompiledProgram

    cache: dict[int, CompiledProgram] = {}

    def get(degree: int) -> CompiledProgram:
        if degree not in cache:
            cache[degree] = CompiledProgram(program, degree)
        return cache[degree]

    return get


def _chars() -> list[str]:
    return OM.vocab_from_corpus(microgpt.corpus_path().read_text(encoding="utf-8").splitlines())


def _oracle_real(init_params, chars):
    """Oracle real training with WEIGHTS: final params (arrays), losses, Adam m and v."""
    toks = [OM.tokenize(d, chars) for d in DOCS]
    final, losses, m, v = OM.train(init_params, toks, T, list(WEIGHTS))
    return OM.to_array(final), np.array(losses, dtype=np.float64), OM.to_array(m), OM.to_array(v)


def _oracle_series(init_params, chars):
    """Oracle degree-6 series training along direction()[0]: (final params, test-loss coeffs)."""
    toks = [OM.tokenize(d, chars) for d in DOCS]
    psi = directions()[0]
    final, _, _, _ = OM.train(
        init_params, toks, T, [Series.var(p, ORACLE_K) for p in psi], K=ORACLE_K
    )
    coeffs = np.array(OM.test_loss(final, OM.tokenize(HELD_OUT, chars)).coeffs)
    return OM.to_array(final), coeffs


ORACLE_RUNS = {"oracle_real": _oracle_real, "oracle_series": _oracle_series}


def _pack(run: tuple) -> dict[str, np.ndarray]:
    """An oracle run (arrays and dicts of arrays) as flat npz entries "i" or "i/name"."""
    out = {}
    for i, part in enumerate(run):
        if isinstance(part, dict):
            out |= {f"{i}/{name}": arr for name, arr in part.items()}
        else:
            out[str(i)] = part
    return out


def _unpack(entries) -> tuple:
    parts: dict[int, object] = {}
    for key in entries.files:
        i, _, name = key.partition("/")
        if name:
            parts.setdefault(int(i), {})[name] = entries[key]
        else:
            parts[int(i)] = entries[key]
    return tuple(parts[i] for i in range(len(parts)))


def save_oracle_run(name: str, path: str) -> None:
    """Compute the oracle run `name` and write it to `path` (the background process)."""
    run = ORACLE_RUNS[name](microgpt.init_params(INIT_SEED), _chars())
    np.savez(path, **_pack(run))


_BACKGROUND = pytest.StashKey[dict]()


@pytest.hookimpl(trylast=True)  # after -k / -m deselected what will not run
def pytest_collection_modifyitems(session, config, items):
    """Start the oracle runs the collected tests need, each in a process of its own."""
    needed = {name for item in items for name in getattr(item, "fixturenames", ())}
    wanted = sorted(needed & set(ORACLE_RUNS))
    if config.option.collectonly or not wanted:
        return
    root = Path(__file__).resolve().parents[1]
    tmp = Path(tempfile.mkdtemp(prefix="cs-oracle-"))
    path = os.pathsep.join([str(root), *filter(None, [os.environ.get("PYTHONPATH")])])
    code = "import sys; from tests.conftest import save_oracle_run as s; s(*sys.argv[1:])"
    jobs = {}
    for name in wanted:
        out, log = tmp / f"{name}.npz", tmp / f"{name}.log"
        with open(log, "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-c", code, name, str(out)],
                cwd=root,
                env={**os.environ, "PYTHONPATH": path},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        jobs[name] = (proc, out, log)
    config.stash[_BACKGROUND] = jobs

    def cleanup() -> None:
        for proc, _, _ in jobs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)

    config.add_cleanup(cleanup)


def _oracle_run(config: pytest.Config, name: str, init_params, chars) -> tuple:
    """The background process's run `name`, or (none started, or it failed) computed here."""
    job = config.stash.get(_BACKGROUND, {}).get(name)
    if job is not None:
        proc, out, log = job
        if proc.wait() == 0:
            with np.load(out) as entries:
                return _unpack(entries)
        err = log.read_text(errors="replace")[-2000:]
        warnings.warn(f"the background {name} run failed, computed here: {err}", stacklevel=1)
    return ORACLE_RUNS[name](init_params, chars)


@pytest.fixture(scope="session")
def oracle_real(request, init_params, chars):
    """Oracle real training with WEIGHTS: final params (arrays), losses, Adam m and v."""
    return _oracle_run(request.config, "oracle_real", init_params, chars)


@pytest.fixture(scope="session")
def oracle_series(request, init_params, chars):
    """Oracle degree-6 series training along direction()[0]: (final params, test-loss coeffs)."""
    return _oracle_run(request.config, "oracle_series", init_params, chars)


@pytest.fixture(scope="session")
def poly_sketch(tmp_path_factory) -> Path:
    """A sketch of the cubic user program (``tests/poly_program``: K = 1, 4 directions),
    made once; tests that derive data from it take a copy (``poly_sketch_copy``)."""
    import runtime.api as rt
    from tests import poly_program as pp

    out = tmp_path_factory.mktemp("poly") / "sketch"
    rt.precompute(rt.program(pp.SPEC), out, degree=1, directions=4, seed=2)
    return out


@pytest.fixture
def poly_sketch_copy(poly_sketch, tmp_path) -> Path:
    """A fresh copy of ``poly_sketch``, nothing derived from it stored yet."""
    shutil.copytree(poly_sketch, tmp_path / "sk")
    return tmp_path / "sk"


@pytest.fixture(autouse=True)
def _no_kept_workers():
    """Worker pools a test's spawned run kept for reuse (``runtime.parallel._KEPT``) end with
    the test: their threads would keep the next tests from forking their workers."""
    yield
    from runtime import parallel

    parallel.shutdown_workers()
