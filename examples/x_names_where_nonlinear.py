"""Issue 19: where the x-names deletion's higher orders come from, and two cheap fixes tried.

Fig. 2's deletion (the 25 names containing "x", test name "max") changes the
test loss by 0.512 on retraining; exact first order predicts 0.27.  Two probes:

1. Parameters or loss?  One degree-3 series run along 1_D gives the trained
   parameters' series theta_0 + sum_r theta_r t^r.  The test loss evaluated
   exactly at the parameters truncated at order k is compared with the loss's
   own series truncated at order k.  If the loss's curvature in the parameters
   made the higher orders, the first would be much closer to the truth at k = 1.
2. (with ``--sketch DIR``: a sketch of this setting with second-order data, e.g.
   fig. 2's M = 500, K = 3 one after ``circuitsketch hessian``) Control variates:
   the sketch's order-2 samples minus the same samples of the second-order
   estimator's quadratic form (1/2) psi^T A psi, whose exact value at 1_D is
   added back; order 3 sampled as before.

    python -m examples.x_names_where_nonlinear [--sketch DIR]
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from compiler.layout import hi_block
from examples.paper_common import TEST_DOC, make_setting


def parameter_series(setting, k: int = 3) -> dict[str, list[float]]:
    """Loss series along 1_D against the loss at the parameters' truncated series."""
    w = setting.letter_weights()
    real, series = setting.compiled(0), setting.compiled(k)
    base = real.output(real.train()[0], TEST_DOC)
    truth = real.output(real.train(w)[0], TEST_DOC) - base
    s0, hi, _ = series.train_series(w[None, :].astype(np.complex128))
    coef = np.zeros((k, series.state_size))
    for off, size in series.state_layout.values():
        coef[:, off : off + size] = hi_block(hi, 1, k, off, size)[0].real
    loss_series = series.output(s0, TEST_DOC, hi).real[0, 1:]
    return {
        "truth": [truth],
        "loss series, orders <= k": np.cumsum(loss_series).tolist(),
        "loss at parameters of orders <= k": [
            real.output(s0 + coef[:r].sum(axis=0), TEST_DOC) - base for r in range(1, k + 1)
        ],
    }


def control_variates(sketch_dir: str, setting) -> dict[str, tuple[float, float]]:
    """Sketch estimates (and standard errors) of orders 2 and 3 at 1_D, plain and with the
    quadratic control."""
    from runtime.api import open_sketch
    from runtime.second_order import sketch_second_order

    sk = open_sketch(sketch_dir)
    c = sk.coefficients([TEST_DOC])[0]
    g = sk.metagradient([TEST_DOC])[0]
    so = next(iter(sketch_second_order(sk.store, [TEST_DOC], compute=False).values()))
    if so is None:
        raise SystemExit(f"{sketch_dir}: no second-order data for {TEST_DOC!r}")
    psi = np.load(f"{sketch_dir}/directions.npy")
    n = psi.shape[1]
    w = setting.letter_weights()
    a = (so.rows[:, None] + so.rows[None, :]) / n - so.rows.sum() / n**2
    np.fill_diagonal(a, so.diag)
    u = psi.conj() @ w
    b2, b3 = math.comb(n + 1, 2), math.comb(n + 2, 3)
    t2 = (c[:, 2] * u**2).real * b2
    t2_control = ((c[:, 2] - 0.5 * np.einsum("ji,ik,jk->j", psi, a, psi)) * u**2).real * b2
    t3 = (c[:, 3] * u**3).real * b3
    m = len(u)

    def se(x: np.ndarray) -> float:
        return float(x.std(ddof=1) / math.sqrt(m))

    first, quad = float(g @ w), float(0.5 * w @ a @ w)
    return {
        "first order (exact)": (first, 0.0),
        "order 2, sampled": (float(t2.mean()), se(t2)),
        "order 2, with the control": (quad + float(t2_control.mean()), se(t2_control)),
        "order 3, sampled": (float(t3.mean()), se(t3)),
        "hybrid: first + sampled 2, 3": (first + float((t2 + t3).mean()), se(t2 + t3)),
        "first + controlled 2 + sampled 3": (
            first + quad + float((t2_control + t3).mean()), se(t2_control + t3)),
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sketch", help="a sketch of this setting with second-order data")
    args = ap.parse_args()
    setting = make_setting()
    for name, values in parameter_series(setting).items():
        print(f"{name:36s}", " ".join(f"{v:.4f}" for v in values))
    if args.sketch:
        for name, (value, stderr) in control_variates(args.sketch, setting).items():
            print(f"{name:36s} {value:.4f} +- {stderr:.4f}")


if __name__ == "__main__":
    main()
