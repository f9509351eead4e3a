"""A user program whose test output is a cubic polynomial of the data weights, in closed form.

The training loss of document i is linear in the parameters, -t_i <theta, x_i>,
so plain SGD (no momentum) moves theta by lr * (1 - w_i) t_i x_i at every
step on document i: the trained parameters are affine in w,

    theta_T(w) = theta_0 + lr * sum_i m_i (1 - w_i) t_i x_i      (m_i: steps on document i)

and the output on a test input (x, t), q(e) = e^2 + e^3 / 2 with
e = <theta_T, x> - t, is a cubic polynomial of w.  ``closed_form`` gives
e*, b (e(w) = e* - <b, w>) and with them F(w) = q(e* - <b, w>), its gradient
and its Taylor coefficients along any direction, independently of the
compiler: the tests' exact reference.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import circuitsketch as cs

N, P, LR, EPOCHS = 12, 3, 0.05, 2
SPEC = f"{Path(__file__).resolve()}:build"  # as --program and ``runtime.api.program`` take it


def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    return rng.normal(size=(N, P)), rng.normal(size=N)


def loss(params, x, t):
    return -t * (params["theta"] * x).sum()


def output(params, x, t):
    e = (params["theta"] * x).sum() - t
    return e * e + 0.5 * e * e * e


def output_quartic(params, x, t):
    """``output`` plus e^4 / 4: F then has a fourth order (``build_quartic``)."""
    e = (params["theta"] * x).sum() - t
    return e * e + 0.5 * e * e * e + 0.25 * e * e * e * e


def theta0() -> np.ndarray:
    return np.array([0.3, -0.2, 0.1])


def build(quartic: bool = False):
    x, t = data()
    docs = [{"x": x[i], "t": np.array(t[i])} for i in range(N)]
    return cs.training_program(
        name="quartic12" if quartic else "cubic12",
        params={"theta": theta0()},
        loss=loss,
        output=output_quartic if quartic else output,
        docs=docs,
        optimizer=cs.SGD(lr=LR, momentum=0.0),
        steps=EPOCHS * N,
    )


def build_quartic():
    """The same training with the quartic output: F(w) = q(e) + e^4 / 4."""
    return build(quartic=True)


SPEC_QUARTIC = f"{Path(__file__).resolve()}:build_quartic"


def q(e):
    return e * e + 0.5 * e**3


def closed_form(x_test: np.ndarray, t_test: float) -> tuple[float, np.ndarray]:
    """(e*, b): the test residual e(w) = e* - <b, w> of the trained parameters."""
    x, t = data()
    a = EPOCHS * LR * t[:, None] * x  # (N, P): what document i adds to theta
    theta_star = theta0() + a.sum(axis=0)
    return float(theta_star @ x_test - t_test), a @ x_test


def truth(x_test, t_test, weights) -> np.ndarray:
    """F(w) for weights (N,) or (S, N)."""
    e, b = closed_form(x_test, t_test)
    return q(e - np.asarray(weights) @ b)


def gradient(x_test, t_test) -> np.ndarray:
    """dF/dw at w = 0: -q'(e*) b."""
    e, b = closed_form(x_test, t_test)
    return -(2 * e + 1.5 * e * e) * b


def hessian(x_test, t_test) -> np.ndarray:
    """d^2F/dw dw at w = 0: q''(e*) b b^T, q''(e) = 2 + 3 e."""
    e, b = closed_form(x_test, t_test)
    return (2.0 + 3.0 * e) * np.outer(b, b)


def coefficients(x_test, t_test, psi: np.ndarray) -> np.ndarray:
    """Taylor coefficients c_0..c_3 of F(z psi_j) for each direction (M, 4): exact."""
    e, b = closed_form(x_test, t_test)
    beta = np.asarray(psi) @ b  # F(z psi) = q(e - z beta)
    d = [q(e), 2 * e + 1.5 * e * e, 2 + 3 * e, 3.0]  # q, q', q'', q'''
    return np.stack(
        [np.full_like(beta, d[0]), -d[1] * beta, d[2] / 2 * beta**2, -d[3] / 6 * beta**3], axis=1
    )
