"""An independent numpy reference of microgpt of any size, and of the optimizers' updates.

Written from docs/microgpt.md (generalised to n_layer layers of n_head heads
of n_embd / n_head dimensions, an MLP 4 x n_embd wide of GELUs or ReLUs,
context block_size), with whole-array numpy and a loop over heads, sharing no
code with ``circuitsketch``: the traced model reshapes and transposes its heads
instead.  The optimizer updates are the formulas of ``docs/api.md`` written out.
"""

from __future__ import annotations

import math

import numpy as np

_erf = np.vectorize(math.erf)


def _rmsnorm(x: np.ndarray) -> np.ndarray:
    return x * (np.mean(x * x, axis=-1, keepdims=True) + 1e-5) ** -0.5


def _gelu(x: np.ndarray) -> np.ndarray:
    return x * 0.5 * (1.0 + _erf(x / math.sqrt(2.0)))


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def doc_loss(params: dict, tokens: list[int], n_layer: int, n_head: int, block_size: int,
             activation: str = "gelu") -> float:
    """Mean over the document's n = min(block_size, len - 1) positions of -log p(next)."""
    act = {"gelu": _gelu, "relu": _relu}[activation]
    n = min(block_size, len(tokens) - 1)
    E = params["wte"].shape[1]
    D = E // n_head
    x = _rmsnorm(params["wte"][tokens[:n]] + params["wpe"][:n])
    future = np.triu(np.ones((n, n), dtype=bool), k=1)
    for i in range(n_layer):
        P = {k.split(".", 1)[1]: v for k, v in params.items() if k.startswith(f"layer{i}.")}
        r, h = x, _rmsnorm(x)
        q, k, v = h @ P["attn_wq"].T, h @ P["attn_wk"].T, h @ P["attn_wv"].T
        out = np.empty((n, E))
        for head in range(n_head):
            cols = slice(head * D, (head + 1) * D)
            s = q[:, cols] @ k[:, cols].T / math.sqrt(D)
            s[future] = -np.inf
            a = np.exp(s - s.max(axis=1, keepdims=True))
            out[:, cols] = (a / a.sum(axis=1, keepdims=True)) @ v[:, cols]
        x = out @ P["attn_wo"].T + r
        x = act(_rmsnorm(x) @ P["mlp_fc1"].T) @ P["mlp_fc2"].T + x
    logits = x @ params["lm_head"].T
    top = logits.max(axis=1, keepdims=True)
    logp = logits - top - np.log(np.exp(logits - top).sum(axis=1, keepdims=True))
    return float(-np.mean(logp[np.arange(n), tokens[1 : n + 1]]))


def rate(lr: float, schedule: str, warmup: int, s: int, T: int) -> float:
    """Warmup (s + 1) / W * lr, then constant, linear to 0, or half a cosine to 0."""
    if s < warmup:
        return lr * (s + 1) / warmup
    p = (s - warmup) / (T - warmup)
    return {"constant": lr, "linear": lr * (1 - p),
            "cosine": lr * 0.5 * (1 + math.cos(math.pi * p))}[schedule]


def clip(grads: dict, max_norm: float | None) -> dict:
    if max_norm is None:
        return grads
    norm = math.sqrt(sum(float(np.sum(g * g)) for g in grads.values()))
    scale = max_norm / norm if norm > max_norm else 1.0
    return {k: g * scale for k, g in grads.items()}


def adamw_step(p, g, m, v, s, lr, wd, b1=0.85, b2=0.99, eps=1e-3):
    """One AdamW update (eps inside the root; decay p * (1 - lr * wd) decoupled)."""
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    mhat, vhat = m / (1 - b1 ** (s + 1)), v / (1 - b2 ** (s + 1))
    return p * (1 - lr * wd) - lr * mhat / np.sqrt(vhat + eps), m, v


def sgd_step(p, g, vel, lr, mu, nesterov, wd):
    """One SGD update with momentum (PyTorch's form), optionally Nesterov, decoupled decay."""
    vel = mu * vel + g
    step = g + mu * vel if nesterov else vel
    return p * (1 - lr * wd) - lr * step, vel
