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

Helpers (``rel_err``, ``assert_rel``) are imported by the test files as
``from tests.conftest import ...``.
"""

from __future__ import annotations

import shutil
import signal
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
    return OM.vocab_from_corpus(microgpt.corpus_path().read_text(encoding="utf-8").splitlines())


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


@pytest.fixture(scope="session")
def oracle_real(init_params, chars):
    """Oracle real training with WEIGHTS: final params (arrays), losses, Adam m and v."""
    toks = [OM.tokenize(d, chars) for d in DOCS]
    final, losses, m, v = OM.train(init_params, toks, T, list(WEIGHTS))
    return OM.to_array(final), np.array(losses, dtype=np.float64), OM.to_array(m), OM.to_array(v)


@pytest.fixture(scope="session")
def oracle_series(init_params, chars):
    """Oracle degree-6 series training along direction()[0]: (final params, test-loss coeffs)."""
    toks = [OM.tokenize(d, chars) for d in DOCS]
    psi = directions()[0]
    final, _, _, _ = OM.train(
        init_params, toks, T, [Series.var(p, ORACLE_K) for p in psi], K=ORACLE_K
    )
    coeffs = np.array(OM.test_loss(final, OM.tokenize(HELD_OUT, chars)).coeffs)
    return OM.to_array(final), coeffs


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
