"""microgpt in JAX, written from docs/microgpt.md alone: the peer bench/bench_scale.py times.

Not part of circuitsketch (JAX is the optional ``bench`` extra).  The model,
its minibatch loss (1/B) sum_d (1 - w_d) loss_d and Adam (eps inside the root,
rate, bias corrections and optional decoupled weight decay) follow the spec;
only the data (padded token rows) and the per-step rate come from the
circuitsketch program's schedule, so that both train on the same inputs.

Series mode runs the same step through ``jax.experimental.jet`` with every
value complex128 (the order-0 parts are real, the directions complex; jet has no
mixed real/complex arithmetic).  XLA's erf takes no complex argument, so the
gelu's erf is a small primitive here: erf of the real part at order 0 (order-0
values have no imaginary part) and jet's erf rule (the series of the derivative
2/sqrt(pi) exp(-x^2)) above.
"""

from __future__ import annotations

import math
import os
from functools import partial

# one core for XLA, as circuitsketch's compiled code (set before jax is imported)
os.environ.setdefault(
    "XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
)

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import jet
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

jax.config.update("jax_enable_x64", True)

RMS_EPS = 1e-5


# ---------------------------------------------------------------- erf of complex series
def _cerf_impl(x):
    return lax.complex(lax.erf(lax.real(x)), jnp.zeros(x.shape, jnp.float64))


def _erf_deriv(x):
    return (2.0 / math.sqrt(math.pi)) * jnp.exp(-(x * x))


cerf_p = Primitive("cerf")
cerf_p.def_impl(_cerf_impl)
cerf_p.def_abstract_eval(lambda x: jax.core.ShapedArray(x.shape, x.dtype))
mlir.register_lowering(cerf_p, mlir.lower_fun(_cerf_impl, multiple_results=False))
ad.defjvp(cerf_p, lambda g, x: g * _erf_deriv(x))
batching.defvectorized(cerf_p)
jet.jet_rules[cerf_p] = partial(jet.deriv_prop, cerf_p, _erf_deriv)


def erf(x):
    return cerf_p.bind(x) if jnp.iscomplexobj(x) else lax.erf(x)


# ---------------------------------------------------------------- the model
def param_names(n_layer: int) -> list[str]:
    names = ["wte", "wpe", "lm_head"]
    for i in range(n_layer):
        names += [f"layer{i}.{w}" for w in ("attn_wq", "attn_wk", "attn_wv", "attn_wo",
                                            "mlp_fc1", "mlp_fc2")]
    return names


def rmsnorm(x):
    return x * (jnp.mean(x * x, axis=-1, keepdims=True) + RMS_EPS) ** -0.5


def gelu(x):
    return x * 0.5 * (1.0 + erf(x / math.sqrt(2.0)))


def _shift(x, axis):
    """A constant per row for a stable softmax: the max of the real parts, no gradient."""
    return jnp.max(jnp.real(lax.stop_gradient(x)), axis=axis, keepdims=True).astype(x.dtype)


def losses(P, tokens, targets, n_pos, n_layer: int, n_head: int):
    """(B,) losses of documents padded to one length: tokens, targets (B, L), n_pos (B,)."""
    B, L = tokens.shape
    E = P["wte"].shape[1]
    D = E // n_head
    x = rmsnorm(P["wte"][tokens] + P["wpe"][:L])  # (B, L, E)
    causal = jnp.tril(jnp.ones((L, L), bool))
    for i in range(n_layer):
        W = {k: P[f"layer{i}.{k}"] for k in ("attn_wq", "attn_wk", "attn_wv", "attn_wo",
                                             "mlp_fc1", "mlp_fc2")}
        h = rmsnorm(x)

        def heads(t):
            return t.reshape(B, L, n_head, D).transpose(0, 2, 1, 3)

        q, k, v = heads(h @ W["attn_wq"].T), heads(h @ W["attn_wk"].T), heads(h @ W["attn_wv"].T)
        s = (q @ k.transpose(0, 1, 3, 2)) / math.sqrt(D)  # (B, H, L, L)
        shift = _shift(jnp.where(causal, s, -jnp.inf), -1)
        e = jnp.where(causal, jnp.exp(jnp.where(causal, s - shift, 0.0)), 0.0)
        a = e / e.sum(-1, keepdims=True)
        out = (a @ v).transpose(0, 2, 1, 3).reshape(B, L, E)
        x = out @ W["attn_wo"].T + x
        x = gelu(rmsnorm(x) @ W["mlp_fc1"].T) @ W["mlp_fc2"].T + x
    logits = x @ P["lm_head"].T  # (B, L, V)
    z = logits - _shift(logits, -1)
    logp = z - jnp.log(jnp.exp(z).sum(-1, keepdims=True))
    onehot = (targets[..., None] == jnp.arange(logits.shape[-1])).astype(logits.dtype)
    return -(onehot * logp).sum((1, 2)) / n_pos


def make_step(n_layer: int, n_head: int, beta1=0.85, beta2=0.99, eps=1e-3, weight_decay=0.0):
    """step(state, w, lr, bias1, bias2, tokens, targets, n_pos, B) -> (new state, loss).

    state: {name: p} | {"m." name, "v." name}; w (B,) data weights; loss of the step
    (1/B) sum_d (1 - w_d) loss_d with B the batch's size."""

    def step(state, w, hyper, tokens, targets, n_pos):
        names = param_names(n_layer)
        P = {n: state[n] for n in names}

        def total(P):
            per_doc = losses(P, tokens, targets, n_pos, n_layer, n_head)
            return ((1.0 - w) * per_doc).sum() / w.shape[0]

        loss, vjp = jax.vjp(total, P)
        (g,) = vjp(jnp.ones((), loss.dtype))
        lr, bias1, bias2 = hyper[0], hyper[1], hyper[2]
        new = {}
        for n in names:
            m = beta1 * state["m." + n] + (1.0 - beta1) * g[n]
            v = beta2 * state["v." + n] + (1.0 - beta2) * (g[n] * g[n])
            p = state[n] * (1.0 - lr * weight_decay) if weight_decay else state[n]
            new[n] = p - lr * (m / bias1) / jnp.sqrt(v / bias2 + eps)
            new["m." + n], new["v." + n] = m, v
        return new, loss

    return step


def make_series_step(n_layer: int, n_head: int, K: int, **adam):
    """The step on truncated series along directions, vmapped over them.

    (state0 {name: array}, series {name: (directions, K, *shape)}, w0 (B,), psi
    (directions, B), hyper, data) -> (state0', series', loss0), every value complex;
    series hold the normalised coefficients c_1..c_K, as circuitsketch's."""
    step = make_step(n_layer, n_head, **adam)

    def one(state0, state_series, w0, psi, hyper, tokens, targets, n_pos):
        names = sorted(state0)

        def f(w, *leaves):
            return step(dict(zip(names, leaves, strict=True)), w, hyper, tokens, targets, n_pos)

        primals = (w0, *(state0[n] for n in names))
        terms = ([psi] + [jnp.zeros_like(psi)] * (K - 1),
                 *([state_series[n][r] for r in range(K)] for n in names))
        (out0, loss0), (out_s, _) = jet.jet(f, primals, terms, factorial_scaled=False)
        return out0, {n: jnp.stack(out_s[n]) for n in names}, loss0

    def series_step(state0, state_series, w0, psi, hyper, tokens, targets, n_pos):
        return jax.vmap(one, in_axes=(None, 0, None, 0, None, None, None, None),
                        out_axes=(None, 0, None))(
            state0, state_series, w0, psi, hyper, tokens, targets, n_pos)

    return series_step


def to_complex(tree):
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.complex128), tree)


__all__ = ["losses", "make_series_step", "make_step", "param_names", "to_complex"]
