"""The paper experiments (examples/paper_*.py) in their --quick mode, against independent numbers.

Each script runs end to end on N = T = 20 documents with a small sketch (M = 8
directions of seed 0, K = 3) into a temporary directory, in one process, and
its numbers are compared with references computed without the code under
test (no series arithmetic, no estimator, no metagradient):

* the scalar oracle (tests/oracle/): the test loss of "max" after real
  training with D (the names containing the quick setting's letter) deleted,
  run here (~3 s), and c_0..c_3 along 1_D, computed once (``ORACLE_ALONG_D``,
  whose c_0 is the undeleted loss); 1e-12 for losses;
* plain compiled real training (degree 0, itself checked against the oracle in
  test_compiler.py and here), where a number is defined by retraining: the
  "true" losses, and Taylor coefficients.  c_r of t -> F(t d) along a real d is
  read off the polynomial through F at NODES Chebyshev points of |t d| <= RADIUS;
  along a complex psi = a + ib it follows from four real directions a + s b
  (c_r is homogeneous of degree r, so s -> c_r(a + s b) is a polynomial of degree
  r: interpolate at s = 0, 1, -1, 2 and evaluate at s = i).  Against the
  oracle's and the compiled series these are within ~1e-15, 1e-12, 1e-10, 5e-9,
  1e-8, 2e-7 for r = 0..5, hence ``COEF_TOL``.  The metagradient is c_1 along e_i;
* the estimator, its standard error and median of means written out from
  runtime/estimate.py's documented formulas (tests/estimator_reference.py) and
  applied to those references.
  ``PRED_TOL`` covers what the reference coefficients' errors move a prediction
  (binom(22, 3) |u|^3 times c_3's error dominates; ~1.5e-9 observed).

The scripts' own seeds and sizes (paper_common.QUICK*, DIRECTION_SEED, ...) are
taken as given; the deletion sets and the stability test name are re-derived
from their documented definitions.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from circuitsketch.models import microgpt
from compiler.compiled import CompiledProgram
from examples import (
    paper_accuracy,
    paper_common,
    paper_error_vs_m,
    paper_exact_series,
    paper_series_curve,
    paper_sketch,
    paper_stability,
)
from runtime.directions import gaussian_directions
from tests.conftest import assert_rel
from tests.estimator_reference import estimate as ref_estimate
from tests.oracle import microgpt as OM

TEST_DOC = paper_common.TEST_DOC
NODES, RADIUS = 21, 0.75
COEF_TOL = (1e-13, 1e-10, 1e-9, 1e-7, 1e-6, 1e-5)  # c_r vs its reference, rel. to max |c_r|
ORACLE_TOL = 1e-12
PRED_TOL = 1e-8  # absolute, on test losses of ~3.3
# c_0..c_3 of the test loss of "max" along 1_D (D: the names with an "o"), by the oracle's
# series training, computed once (16 s of pure Python) for the quick setting:
# OM.train(init_params(0), tokens, 20, [Series.var(w_i, 3) for w_i in 1_D], K=3), then
# OM.test_loss(final, tokenize("max")).coeffs (all imaginary parts 0).  c_0 is the
# undeleted run's loss.
ORACLE_ALONG_D = (
    3.3288065348917106,
    -0.043456602841397136,
    -0.020849766469398096,
    -0.005532078399992023,
)


def stability_doc(docs: list[str]) -> str:
    """The training name of the stability experiment (its docstring: rng(1) picks the index)."""
    return docs[int(np.random.default_rng(1).integers(len(docs)))]


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return tmp_path_factory.mktemp("paper")


def run(module, out):
    """Run a script's main in quick mode; (returned result, the JSON it wrote)."""
    result = module.main(["--quick", "--out", str(out), "--workers", "1"])
    saved = json.loads(next(out.glob(f"{module.__name__.split('.')[-1]}_quick.json")).read_text())
    # the file holds the returned numbers (NaN written as null)
    assert saved == json.loads(json.dumps(paper_common.finite_json(result)))
    return result, saved


@pytest.fixture(scope="module")
def setting():
    return paper_common.make_setting(quick=True)


@pytest.fixture(scope="module")
def deleted(setting) -> np.ndarray:
    """1_D: the documents holding the quick setting's letter."""
    w = np.array([float(paper_common.QUICK["letter"] in d) for d in setting.docs])
    assert 0 < w.sum() < len(w)
    return w


@pytest.fixture(scope="module")
def oracle(setting, deleted) -> dict[str, float]:
    """The oracle's test loss of TEST_DOC after training with D deleted (run here, ~3 s),
    and without (order 0 of ORACLE_ALONG_D)."""
    chars = OM.vocab_from_corpus(microgpt.corpus_path().read_text(encoding="utf-8").splitlines())
    toks = [OM.tokenize(d, chars) for d in setting.docs]
    init = {name: setting.program.init_state[name] for name in OM.PARAM_SHAPES}
    final, _, _, _ = OM.train(init, toks, setting.steps, [float(x) for x in deleted])
    return {"base": ORACLE_ALONG_D[0], "deleted": OM.test_loss(final, OM.tokenize(TEST_DOC, chars))}


class Retraining:
    """Test losses after plain compiled real training, and Taylor coefficients from them."""

    def __init__(self, setting, tests: tuple[str, ...]):
        self.cp = CompiledProgram(setting.program, 0)
        self.tests = tests

    def losses(self, weights: np.ndarray) -> np.ndarray:
        state, _ = self.cp.train(np.asarray(weights, np.float64))
        return np.array([self.cp.output(state, t) for t in self.tests])

    def taylor(self, d: np.ndarray, degree: int) -> np.ndarray:
        """(degree+1, tests): c_r of t -> F(t d), d real, by interpolation."""
        h = RADIUS / np.linalg.norm(d)
        x = np.cos((2 * np.arange(NODES) + 1) * np.pi / (2 * NODES))
        f = np.array([self.losses(h * xi * d) for xi in x])
        a = np.linalg.solve(np.vander(x, NODES, increasing=True), f)
        return a[: degree + 1] / (h ** np.arange(degree + 1))[:, None]

    def taylor_complex(self, psi: np.ndarray, degree: int) -> np.ndarray:
        """(degree+1, tests) complex: c_r along psi = a + ib from real directions a + s b."""
        s = np.array([0.0, 1.0, -1.0, 2.0, -2.0, 3.0][: degree + 1])
        at_i = [
            np.prod([(1j - s[j]) / (s[k] - s[j]) for j in range(len(s)) if j != k])
            for k in range(len(s))
        ]
        along = [self.taylor(psi.real + sk * psi.imag, degree) for sk in s]
        return sum(wk * c for wk, c in zip(at_i, along, strict=True))


@pytest.fixture(scope="module")
def reference(setting, deleted):
    """Retraining references: coefficients along the sketch's directions (both test docs),
    along 1_D (degree 5) and along each e_i (the metagradient), and psi itself."""
    n, m, k = setting.n, paper_common.QUICK_M, paper_common.QUICK_K
    tests = (TEST_DOC, stability_doc(setting.docs))
    retrain = Retraining(setting, tests)
    psi = gaussian_directions(paper_common.DIRECTION_SEED, 0, m, n)  # pinned in test_runtime_store
    along_psi = np.array([retrain.taylor_complex(p, k) for p in psi])  # (M, K+1, tests)
    g = np.array([retrain.taylor(np.eye(n)[i], 1)[1, 0] for i in range(n)])
    return {
        "psi": psi,
        "coeffs": {t: along_psi[:, :, i] for i, t in enumerate(tests)},
        "along_D": retrain.taylor(deleted, paper_exact_series.QUICK_EXTRA_K)[:, 0],
        "g": g,
        "retrain": retrain,
    }


def assert_coeffs(got, want, what: str) -> None:
    """Coefficient arrays (..., K+1): order r within COEF_TOL[r], relative to max |want_r|."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    for r in range(want.shape[-1]):
        assert_rel(got[..., r], want[..., r], COEF_TOL[r], f"{what}: c_{r}")


def assert_close(got, want, tol: float, what: str) -> None:
    err = float(np.max(np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64))))
    assert err <= tol, f"{what}: off by {err:.3e} > {tol:.0e}"


# ================================================================ setting and helpers
def test_setting_is_the_documented_shuffle(setting):
    docs = microgpt.read_docs(microgpt.corpus_path())
    order = np.random.default_rng(0).permutation(len(docs))[:20]
    assert setting.docs == [docs[i] for i in order]
    assert setting.letter_weights().sum() > 0


def test_spearman_matches_definition():
    a = np.array([0.1, 0.5, 0.3, 0.9, 0.2])
    assert paper_common.spearman(a, a**3) == pytest.approx(1.0)
    assert paper_common.spearman(a, -a) == pytest.approx(-1.0)
    # ties get average ranks: ranks (1.5, 1.5, 3) and (1, 2, 3) -> Pearson of the ranks
    assert paper_common.spearman([1.0, 1.0, 2.0], [1.0, 2.0, 3.0]) == pytest.approx(
        np.corrcoef([1.5, 1.5, 3], [1, 2, 3])[0, 1]
    )


def test_references_are_accurate(setting, reference):
    """The interpolated coefficients along 1_D (and the undeleted loss) against the
    oracle's series arithmetic, ORACLE_ALONG_D."""
    assert_coeffs(reference["along_D"][:4], ORACLE_ALONG_D, "interpolated c_r along 1_D vs oracle")
    base = reference["retrain"].losses(np.zeros(setting.n))[0]
    assert_rel(base, ORACLE_ALONG_D[0], ORACLE_TOL, "undeleted loss vs oracle")


# ================================================================ the experiments
def test_sketch(setting, out, reference, oracle):
    """The shared sketch: every direction's c_0 is the undeleted run bit for bit and the
    oracle's loss; c_1..c_3 of all M directions are the retraining references."""
    result, _ = run(paper_sketch, out)
    sk = paper_common.shared_sketch(setting, 1, out)
    c = sk.coeffs[TEST_DOC]
    base = reference["retrain"].losses(np.zeros(setting.n))[0]
    assert np.all(c[:, 0] == base)  # every direction's order 0 is the undeleted run, bit for bit
    assert result["c0"] == base
    assert_rel(base, oracle["base"], ORACLE_TOL, "undeleted loss vs oracle")
    want = reference["coeffs"][TEST_DOC]
    assert_coeffs(c, want, "sketch coefficients vs retraining")
    assert_coeffs(result["mean_abs_coeff"], np.mean(np.abs(want), axis=0), "mean |c_r|")
    np.testing.assert_array_equal(sk.psi, reference["psi"])
    # resuming reads the stored chunks: same numbers, nothing recomputed
    again = paper_common.shared_sketch(setting, 1, out)
    assert again.seconds == 0.0 and np.array_equal(again.coeffs[TEST_DOC], c)


def test_exact_series(out, deleted, reference, oracle):
    """Degree-3 and degree-5 series along 1_D are the interpolated coefficients; the 11
    retrainings are plain training at t 1_D (the ends: the oracle); the truncation errors
    at t = 1 follow from those."""
    result, _ = run(paper_exact_series, out)
    K, long_k = result["K"], result["long_K"]
    want = reference["along_D"]
    assert_coeffs(result["coefficients"], want[: K + 1], f"degree {K} along 1_D")
    assert_coeffs(result["long_coefficients"], want[: long_k + 1], f"degree {long_k} along 1_D")
    truth = np.array(result["truth"])
    ts = np.array(result["t"])
    np.testing.assert_allclose(ts, np.linspace(0.0, 1.0, 11), rtol=0, atol=1e-12)
    retrained = [reference["retrain"].losses(t * deleted)[0] for t in ts]
    assert_rel(truth, retrained, 1e-13, "retrained losses at t 1_D")
    assert_rel(truth[0], oracle["base"], ORACLE_TOL, "t = 0 vs oracle")
    assert_rel(truth[-1], oracle["deleted"], ORACLE_TOL, "t = 1 vs oracle")
    assert result["c0_minus_retrained_t0"] == 0.0
    slack = sum(COEF_TOL[r] * abs(want[r]) for r in range(K + 1))
    for k in range(K + 1):
        err = want[: k + 1].sum() - oracle["deleted"]
        assert_close(result["error_at_t1"][str(k)], err, slack + 1e-12, f"error at t=1, k={k}")
    # the exact series converges on this small problem: degree K beats degree 1
    assert abs(result["error_at_t1"][str(K)]) < abs(result["error_at_t1"]["1"])


def test_series_curve(out, deleted, reference, oracle):
    """The predicted curve at every degree, its standard errors and median of means are
    the documented estimator on the retraining references; the truth is retraining and the
    exact Taylor coefficients are the interpolated ones."""
    result, _ = run(paper_series_curve, out)
    ts = np.array(result["t"])
    truth = np.array(result["truth"])
    assert_rel(truth, [reference["retrain"].losses(t * deleted)[0] for t in ts], 1e-13, "truth")
    assert_rel(truth[-1], oracle["deleted"], ORACLE_TOL, "t = 1 vs oracle")
    assert result["c0_minus_retrained_t0"] == 0.0
    assert np.all(np.asarray(result["prediction"]["0"]) == truth[0])
    K = result["K"]
    taylor = reference["along_D"][: K + 1]
    assert_coeffs(result["exact_taylor_coefficients"], taylor, "exact Taylor along 1_D")
    curve = [np.polyval(taylor[::-1], t) for t in ts]
    assert_close(result["exact_taylor_curve"], curve, PRED_TOL, "exact Taylor curve")
    W = ts[:, None] * deleted[None, :]
    for k in range(1, K + 1):
        ref = ref_estimate(reference["coeffs"][TEST_DOC], reference["psi"], W, k)
        assert_close(result["prediction"][str(k)], ref["prediction"], PRED_TOL, f"degree {k}")
        assert_close(result["stderr"][str(k)], ref["stderr"], PRED_TOL, f"stderr, degree {k}")
    assert_close(result["median_of_means"], ref["median_of_means"], PRED_TOL, "median of means")


def _random_sets(n: int, sizes, count: int) -> dict[str, np.ndarray]:
    """paper_accuracy's documented families: rng(SETS_SEED).choice(N, size) per set, in
    order of size, then the 26 letter sets (built in the test below)."""
    rng = np.random.default_rng(paper_accuracy.SETS_SEED)
    out = {}
    for size in sizes:
        w = np.zeros((count, n))
        for q in range(count):
            w[q, rng.choice(n, size, replace=False)] = 1.0
        out[f"random, |D| = {size}"] = w
    return out


def test_accuracy(setting, out, deleted, reference, oracle):
    """For every deletion set: the true change is retraining (the quick letter's set: the
    oracle), the exact first order is <g, w> with g from retraining, and the sketch and
    hybrid predictions, their standard errors and mean absolute errors are the documented
    estimator on the retraining references."""
    result, _ = run(paper_accuracy, out)
    base = oracle["base"]
    assert_rel(result["base_loss"], base, ORACLE_TOL, "undeleted loss vs oracle")
    assert result["c0_minus_retrained"] == 0.0
    sets = _random_sets(setting.n, paper_accuracy.QUICK_SIZES, paper_accuracy.QUICK_COUNT)
    letters = "abcdefghijklmnopqrstuvwxyz"
    sets["names containing letter L"] = np.array(
        [[float(a in d) for d in setting.docs] for a in letters]
    )
    assert set(result["families"]) == set(sets)
    coeffs, psi, g = reference["coeffs"][TEST_DOC], reference["psi"], reference["g"]
    retrain = reference["retrain"]
    base_c = retrain.losses(np.zeros(setting.n))[0]
    for name, W in sets.items():
        fam = result["families"][name]
        truth = np.array(fam["truth"])
        assert_close(truth, [retrain.losses(w)[0] - base_c for w in W], 1e-12, f"{name}: truth")
        np.testing.assert_array_equal(fam["sizes"], W.sum(axis=1))
        want = {"exact first order": (W @ g, None)}
        for k in (1, 3):
            e = ref_estimate(coeffs, psi, W, k)
            want[f"sketch K={k}"] = (e["prediction"] - coeffs[0, 0].real, e["stderr"])
        for k in (2, 3):
            e = ref_estimate(coeffs, psi, W, k, exact1=W @ g)
            want[f"hybrid K={k}"] = (e["prediction"] - coeffs[0, 0].real, e["stderr"])
        assert set(fam["predictions"]) == set(want) == set(paper_accuracy.ESTIMATORS)
        for est, (pred, se) in want.items():
            what = f"{name}, {est}"
            assert_close(fam["predictions"][est], pred, PRED_TOL, what)
            if se is not None:
                assert_close(fam["stderr"][est], se, PRED_TOL, f"{what}: stderr")
            mae = np.mean(np.abs(pred - truth))
            assert_close(fam["rows"][est]["MAE"], mae, PRED_TOL, f"{what}: MAE")
    i = letters.index(paper_common.QUICK["letter"])
    got = result["families"]["names containing letter L"]["truth"][i]
    assert_rel(got, oracle["deleted"] - base, 1e-10, "true change for D vs oracle")


def test_error_vs_m(out, deleted, reference, oracle):
    """Each block's degree-1 and degree-3 prediction and standard error are the documented
    estimator on the block's reference coefficients; the truth is the oracle's; the RMS
    errors and the exact Taylor values follow from those."""
    result, _ = run(paper_error_vs_m, out)
    assert_rel(result["truth"], oracle["deleted"], ORACLE_TOL, "truth vs oracle")
    along = reference["along_D"]
    for k, v in result["exact_taylor_at_1"].items():
        assert_close(v, along[: int(k) + 1].sum(), PRED_TOL, f"exact Taylor at 1, degree {k}")
    coeffs, psi = reference["coeffs"][TEST_DOC], reference["psi"]
    assert set(result["per_M"]) == {str(m) for m in paper_error_vs_m.QUICK_MS}
    for m_str, entry in result["per_M"].items():
        m = int(m_str)
        assert entry["blocks"] == len(psi) // m
        for k in (1, result["K"]):
            blocks = [slice(b * m, (b + 1) * m) for b in range(entry["blocks"])]
            refs = [ref_estimate(coeffs[sl], psi[sl], deleted, k) for sl in blocks]
            pred = np.array([r["prediction"][0] for r in refs])
            row, what = entry[str(k)], f"M = {m}, degree {k}"
            assert_close(row["predictions"], pred, PRED_TOL, what)
            if m > 1:
                assert_close(row["stderr"], [r["stderr"][0] for r in refs], PRED_TOL, what)
            rms = math.sqrt(np.mean((pred - oracle["deleted"]) ** 2))
            assert_close(row["rms_error_vs_retraining"], rms, PRED_TOL, f"{what}: RMS error")


def test_stability(setting, out, reference):
    """log2(sqrt(binom(N+r-1, r)) |c_r|) of the first QUICK_M directions, for the training
    name and for "max", from the retraining references (compared as |c_r|)."""
    result, _ = run(paper_stability, out)
    doc = stability_doc(setting.docs)
    assert result["test_doc"] == doc
    m, k, n = paper_stability.QUICK_M, paper_stability.QUICK_K, setting.n
    binom = np.array([math.comb(n + r - 1, r) for r in range(k + 1)])
    for t in (doc, TEST_DOC):
        vals = np.asarray(result["per_test"][t]["values"])
        assert vals.shape == (m, k + 1)
        want = np.abs(reference["coeffs"][t][:m])
        assert_coeffs(2.0**vals / np.sqrt(binom), want, f"stability, {t}: |c_r|")
