"""Issue 19: a third order from the row sums' own sweeps, tried on random deletion sets.

The second-order estimator's row sums H 1 are central differences of metagradients
at weights +-h 1.  The same three metagradients (at -h 1, 0, +h 1) give, as a
second difference, t = T(1, 1, .): the third derivatives of the test output in the
data weights summed twice against 1.  The symmetric tensor nearest to zero with
T(1, 1, .) = t (the third-order analogue of the estimator's secant matrix) is
T_ijk = (l_i + l_j + l_k) / 3 with l = (3 t - 2 (1't) / N) / N^2, so a set D of m
documents gets the third-order term (1/6) m^2 (3 t_D - 2 m (1't) / N) / N^2, t_D
the sum of t over D: free once the row sums are computed.  Compared here with
first and second order against exact retraining: LDS (Spearman over the sets,
averaged over test names) and mean absolute error, 40 random sets per size.

    python -m examples.third_order_mean_field [--quick]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from examples.paper_common import make_setting, parse_args, spearman, write_result
from runtime import hessian as hs
from runtime.metagrad import Metagradient

TESTS = ["max", "emma", "olivia", "jackson", "sophia", "liam", "noah", "ava"]
SIZES = (1, 10, 50, 100, 200, 500)
SETS = 40
H = 1e-3  # the step of the differences, as runtime.hessian.FD_STEP


def third_order_terms(t: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(S, Q): the mean-field third-order term of each set (rows of w, 0/1) and test input
    (rows of t)."""
    n = w.shape[1]
    m = w.sum(axis=1)[:, None]
    return m**2 * (3.0 * (w @ t.T) - 2.0 * m * t.sum(axis=1)[None, :] / n) / n**2 / 6.0


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(__doc__, argv)
    setting = make_setting(args.quick)
    n, real = setting.n, setting.compiled(0)
    tests = TESTS[:2] if args.quick else TESTS
    mg = Metagradient(setting.program, forward=real)
    g0 = mg.many(tests)
    mg.reweight(H * np.ones(n))
    plus = mg.many(tests)
    mg.reweight(-H * np.ones(n))
    minus = mg.many(tests)
    rows, t = (plus - minus) / (2 * H), (plus - 2 * g0 + minus) / H**2
    diag, _ = hs.hessian_diagonal(setting.program, tests, real=real)
    base = np.array([setting.retrain(np.zeros(n), d)[0] for d in tests])
    rng = np.random.default_rng(1)
    result: dict = {"setting": setting.describe(), "tests": tests, "h": H, "by_size": {}}
    for size in (s for s in SIZES if s < n):
        index = np.sort(np.array([rng.choice(n, size, replace=False) for _ in range(SETS)]), 1)
        w = np.zeros((SETS, n))
        np.put_along_axis(w, index, 1.0, axis=1)
        truth = np.stack([setting.retrain(w, d) - base[q] for q, d in enumerate(tests)], 1)
        first = w @ g0.T
        second = first + 0.5 * np.stack(
            [hs.quadratic_terms(diag[q], rows[q], index) for q in range(len(tests))], 1
        )
        preds = {"first": first, "second": second, "third": second + third_order_terms(t, w)}
        row = {
            name: {
                "lds": float(np.mean([spearman(p[:, q], truth[:, q]) for q in range(len(tests))])),
                "mae": float(np.mean(np.abs(p - truth))),
            }
            for name, p in preds.items()
        }
        row["mean_abs_true_change"] = float(np.mean(np.abs(truth)))
        result["by_size"][size] = row
        print(size, "  ".join(f"{k} LDS {v['lds']:.4f} MAE {v['mae']:.5f}"
                              for k, v in row.items() if isinstance(v, dict)))
    write_result(args, "third_order_mean_field", result)
    return result


if __name__ == "__main__":
    main()
