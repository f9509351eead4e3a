"""Independent scalar oracle for the microgpt training program.

Implements /work/shared/spec/microgpt.md literally, one scalar at a time, with
Python lists.  It is slow on purpose (pure Python) and used only by tests and
benchmarks.  It imports nothing from the project (circuitsketch/, compiler/,
runtime/).

Conventions
-----------
* A *scalar* is a Python float (real mode) or a ``Series`` (series mode:
  truncated power series in z of degree K, complex128, *normalised*
  coefficients c_r = (1/r!) d^r/dz^r).  The same model code runs on both, and on
  autodiff ``Value`` nodes wrapping either.
* Parameters: dict name -> list of rows of scalars, shape (out, in), names and
  shapes in ``PARAM_SHAPES``.  Every public function also accepts numpy arrays:
  float arrays of shape (out, in), or complex arrays of shape (K+1, out, in)
  holding series coefficients.  ``to_array`` converts back.
* Linear layer: ``y[o] = sum_i W[o][i] * x[i]`` (no bias).
* Softmax shifts use c = max of the real parts of the order-0 values, a plain
  float constant (so it gets no gradient).
* Gradients: exact reverse mode through the scalar graph (autodiff.Value).
  With series-valued parameters / weights the backward pass is series-valued.
"""

from __future__ import annotations

import numbers

import numpy as np

from .autodiff import Value, vsum
from .series import Series, erf, exp, log, real_part0, sqrt

N_EMBD = 16
N_HEAD = 4
HEAD_DIM = N_EMBD // N_HEAD
BLOCK_SIZE = 16
VOCAB_SIZE = 27
MLP_HIDDEN = 4 * N_EMBD
RMS_EPS = 1e-5
BETA1, BETA2, ADAM_EPS, LR0 = 0.85, 0.99, 1e-3, 0.01
# the spec's literals 0.15 and 0.01 (note 1 - 0.85 != 0.15 in floating point)
ONE_MINUS_BETA1, ONE_MINUS_BETA2 = 0.15, 0.01

# flattening order of the spec's table
PARAM_SHAPES = {
    "wte": (VOCAB_SIZE, N_EMBD),
    "wpe": (BLOCK_SIZE, N_EMBD),
    "lm_head": (VOCAB_SIZE, N_EMBD),
    "layer0.attn_wq": (N_EMBD, N_EMBD),
    "layer0.attn_wk": (N_EMBD, N_EMBD),
    "layer0.attn_wv": (N_EMBD, N_EMBD),
    "layer0.attn_wo": (N_EMBD, N_EMBD),
    "layer0.mlp_fc1": (MLP_HIDDEN, N_EMBD),
    "layer0.mlp_fc2": (N_EMBD, MLP_HIDDEN),
}


# ---- data ------------------------------------------------------------------------------
def vocab_from_corpus(lines) -> list:
    """Sorted set of the characters of the whole corpus (lines stripped, blanks skipped)."""
    return sorted({ch for line in lines for ch in line.strip()})


def tokenize(doc: str, chars) -> list:
    """[BOS] + ids(doc) + [BOS] with BOS = len(chars)."""
    bos = len(chars)
    index = {ch: i for i, ch in enumerate(chars)}
    return [bos] + [index[ch] for ch in doc] + [bos]


# ---- parameter containers --------------------------------------------------------------
def _lift(x, K):
    """A scalar as a Series of degree K (K=None: leave as is; numpy reals become floats)."""
    if isinstance(x, Series):
        return x
    if isinstance(x, numbers.Real):
        x = float(x)
    return x if K is None else Series.const(x, K)


def as_scalars(params, K=None) -> dict:
    """dict name -> list of rows of scalars, from numpy arrays or nested lists.

    Float arrays (out, in) give floats; complex arrays (K+1, out, in) give Series.
    With K given, every scalar is lifted to a Series of degree K."""
    out = {}
    for name, mat in params.items():
        if isinstance(mat, np.ndarray) and mat.ndim == 3:
            rows = [
                [Series(mat[:, o, i]) for i in range(mat.shape[2])] for o in range(mat.shape[1])
            ]
        elif isinstance(mat, np.ndarray):
            rows = [[float(x) for x in row] for row in mat]
        else:
            rows = [list(row) for row in mat]
        out[name] = [[_lift(x, K) for x in row] for row in rows]
    return out


def to_array(params_scalars) -> dict:
    """dict name -> float64 array (out, in) for floats, or complex128 (K+1, out, in) if
    any entry is a Series."""
    out = {}
    for name, rows in params_scalars.items():
        flat = [x for row in rows for x in row]
        series = [x for x in flat if isinstance(x, Series)]
        n_out, n_in = len(rows), len(rows[0])
        if not series:
            out[name] = np.array([[float(x) for x in row] for row in rows], dtype=np.float64)
            continue
        K = series[0].K
        arr = np.zeros((K + 1, n_out, n_in), dtype=np.complex128)
        for o, row in enumerate(rows):
            for i, x in enumerate(row):
                arr[:, o, i] = _lift(x, K).coeffs
        out[name] = arr
    return out


# ---- model -----------------------------------------------------------------------------
def linear(W, x):
    return [vsum([w * xi for w, xi in zip(row, x, strict=True)]) for row in W]


def rmsnorm(x):
    ms = vsum([xi * xi for xi in x]) / len(x)
    scale = (ms + RMS_EPS) ** -0.5
    return [xi * scale for xi in x]


def softmax(logits):
    c = max(real_part0(v) for v in logits)  # plain float shift, no gradient
    e = [exp(v - c) for v in logits]
    total = vsum(e)
    return [ei / total for ei in e]


def gelu(x):
    return x * 0.5 * (1 + erf(x / sqrt(2.0)))


def forward_loss(P, tokens):
    """Mean over positions of -log softmax(logits)[target]; P holds scalars or Values."""
    n = min(BLOCK_SIZE, len(tokens) - 1)
    keys, values, losses = [], [], []
    for p in range(n):
        t, target = tokens[p], tokens[p + 1]
        # 1. embeddings
        x = [a + b for a, b in zip(P["wte"][t], P["wpe"][p], strict=True)]
        x = rmsnorm(x)
        # 2. attention block
        r = x
        x = rmsnorm(x)
        q = linear(P["layer0.attn_wq"], x)
        keys.append(linear(P["layer0.attn_wk"], x))
        values.append(linear(P["layer0.attn_wv"], x))
        out = []
        for h in range(N_HEAD):
            d = range(h * HEAD_DIM, (h + 1) * HEAD_DIM)
            scores = [vsum([q[j] * k[j] for j in d]) / 2 for k in keys]  # / sqrt(head_dim)
            a = softmax(scores)
            out += [vsum([a[s] * values[s][j] for s in range(len(keys))]) for j in d]
        x = [y + ri for y, ri in zip(linear(P["layer0.attn_wo"], out), r, strict=True)]
        # 3. MLP block
        r = x
        x = rmsnorm(x)
        hidden = [gelu(y) for y in linear(P["layer0.mlp_fc1"], x)]
        x = [y + ri for y, ri in zip(linear(P["layer0.mlp_fc2"], hidden), r, strict=True)]
        # 4. logits and -log softmax[target] = log(sum exp(l - c)) - (l_target - c)
        logits = linear(P["lm_head"], x)
        c = max(real_part0(v) for v in logits)
        shifted = [v - c for v in logits]
        lse = log(vsum([exp(v) for v in shifted]))
        losses.append(lse - shifted[target])
    return vsum(losses) / n


def doc_loss(params, tokens):
    """Loss of one document (no gradient): a float or a Series."""
    return forward_loss(as_scalars(params), tokens)


def test_loss(params, tokens):
    """Unweighted loss of a held-out document."""
    return doc_loss(params, tokens)


test_loss.__test__ = False  # not a pytest test


def _wrap(P):
    return {name: [[Value(x) for x in row] for row in rows] for name, rows in P.items()}


def doc_loss_and_grad(params, tokens, scale=1.0):
    """(scale * loss, d(scale * loss)/dparams) by reverse mode; grads as dict of rows."""
    Pv = _wrap(as_scalars(params))
    loss = forward_loss(Pv, tokens) * scale
    loss.backward()
    grads = {name: [[v.grad for v in row] for row in rows] for name, rows in Pv.items()}
    return loss.data, grads


def train(params, docs_tokens, T, weights, K=None):
    """T steps of weighted training with Adam, exactly as the spec.

    Step s uses doc i = s mod N with loss scaled by (1 - weights[i]).  weights are
    floats or Series (e.g. Series.var(psi_i, K)).  With K given every scalar is a
    Series of degree K.  Returns (final params, per-step weighted losses, m, v),
    parameters and Adam buffers as dict name -> list of rows of scalars."""
    N = len(docs_tokens)
    assert len(weights) == N
    P = as_scalars(params, K)
    weights = [_lift(w, K) for w in weights]
    m = {name: [[_lift(0.0, K) for _ in row] for row in rows] for name, rows in P.items()}
    v = {name: [[_lift(0.0, K) for _ in row] for row in rows] for name, rows in P.items()}
    losses = []
    for s in range(T):
        i = s % N
        loss, grads = doc_loss_and_grad(P, docs_tokens[i], scale=1 - weights[i])
        losses.append(loss)
        lr = LR0 * (1 - s / T)
        bc1 = 1 - BETA1 ** (s + 1)
        bc2 = 1 - BETA2 ** (s + 1)
        for name, rows in P.items():
            for o, row in enumerate(rows):
                for j in range(len(row)):
                    g = grads[name][o][j]
                    m[name][o][j] = BETA1 * m[name][o][j] + ONE_MINUS_BETA1 * g
                    v[name][o][j] = BETA2 * v[name][o][j] + ONE_MINUS_BETA2 * (g * g)
                    mhat = m[name][o][j] / bc1
                    vhat = v[name][o][j] / bc2
                    row[j] = row[j] - lr * mhat / sqrt(vhat + ADAM_EPS)
    return P, losses, m, v
