"""microgpt: the one-layer, 4,192-parameter GPT of the spec, as a traced training program.

Layout follows ``spec/microgpt.md``: linear layers are ``y = W x`` with W of
shape (out, in), written here on rows of positions as ``x @ W.T``.  A document
of n positions runs in the step circuit of the smallest length bucket L >= n;
the extra positions carry token BOS and target -1 (a zero one-hot row), and
causality keeps them invisible to the real ones, so the loss and its gradient
equal the unpadded ones up to summation order (exact zeros are added).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np

from circuitsketch import nn
from circuitsketch import ops as O
from circuitsketch.optim import Adam, init_buffers
from circuitsketch.program import Program, Step, build_output_circuit, build_step_circuit
from circuitsketch.tracing import Input, Traced, where

N_EMBD, N_HEAD, HEAD_DIM, BLOCK_SIZE, MLP_DIM = 16, 4, 4, 16, 64
INIT_STD = 0.08
RMS_EPS = 1e-5
DEFAULT_BUCKETS = (8, 16)


def param_shapes(vocab_size: int = 27) -> dict[str, tuple[int, int]]:
    """Parameter names and (out, in) shapes, in the spec's flattening order."""
    return {
        "wte": (vocab_size, N_EMBD),
        "wpe": (BLOCK_SIZE, N_EMBD),
        "lm_head": (vocab_size, N_EMBD),
        "layer0.attn_wq": (N_EMBD, N_EMBD),
        "layer0.attn_wk": (N_EMBD, N_EMBD),
        "layer0.attn_wv": (N_EMBD, N_EMBD),
        "layer0.attn_wo": (N_EMBD, N_EMBD),
        "layer0.mlp_fc1": (MLP_DIM, N_EMBD),
        "layer0.mlp_fc2": (N_EMBD, MLP_DIM),
    }


# ---------------------------------------------------------------- data
def corpus_path() -> Path:
    """The names corpus shipped with the package."""
    return Path(str(resources.files("circuitsketch") / "data" / "names.txt"))


def read_docs(path: str | Path, what: str = "documents file") -> list[str]:
    """Documents of a text file: one per line, stripped, blank lines skipped.

    `what` names the file in the errors (e.g. "--delete-file").
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{what} {str(p)!r} does not exist")
    docs = [line.strip() for line in p.read_text(encoding="utf-8").splitlines()]
    docs = [d for d in docs if d]
    if not docs:
        raise ValueError(f"{what} {str(p)!r} holds no documents")
    return docs


class Tokenizer:
    """Characters of the corpus -> ids 0..V-1; BOS = V."""

    def __init__(self, chars: Sequence[str]):
        self.chars = list(chars)
        self.index = {ch: i for i, ch in enumerate(self.chars)}
        self.bos = len(self.chars)
        self.vocab_size = self.bos + 1

    @classmethod
    def from_corpus(cls, path: str | Path | None = None) -> Tokenizer:
        text = Path(path or corpus_path()).read_text(encoding="utf-8")
        return cls(sorted(set("".join(line.strip() for line in text.splitlines()))))

    def encode(self, doc: str) -> list[int]:
        """[BOS] + ids + [BOS]; a character outside the vocabulary is an error naming it."""
        for pos, ch in enumerate(doc):
            if ch not in self.index:
                raise ValueError(
                    f"document {doc!r}: character {ch!r} at position {pos} is not in the "
                    f"vocabulary ({''.join(self.chars)})"
                )
        if not doc:
            raise ValueError("empty document")
        return [self.bos] + [self.index[ch] for ch in doc] + [self.bos]


# ---------------------------------------------------------------- parameters
def init_params(seed: int = 0, vocab_size: int = 27) -> dict[str, np.ndarray]:
    """i.i.d. N(0, 0.08^2) parameters from numpy's default_rng(seed), in spec order."""
    rng = np.random.default_rng(seed)
    return {n: rng.normal(0.0, INIT_STD, size=s) for n, s in param_shapes(vocab_size).items()}


def load_params(path: str | Path, vocab_size: int = 27) -> dict[str, np.ndarray]:
    """Parameters from an .npz whose keys are the spec's names; checks every key and shape."""
    shapes = param_shapes(vocab_size)
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: np.asarray(f[k]) for k in f.files}
    except (OSError, ValueError) as e:
        raise ValueError(f"init file {str(path)!r} is not a readable .npz: {e}") from None
    for name, shape in shapes.items():
        if name not in arrays:
            raise ValueError(f"init file {str(path)!r}: missing key {name!r}")
        if arrays[name].shape != shape:
            raise ValueError(
                f"init file {str(path)!r}: key {name!r} has shape "
                f"{arrays[name].shape}, expected {shape}"
            )
        if not np.issubdtype(arrays[name].dtype, np.floating) or not np.all(
            np.isfinite(arrays[name])
        ):
            raise ValueError(f"init file {str(path)!r}: key {name!r} must hold finite floats")
    extra = sorted(set(arrays) - set(shapes))
    if extra:
        raise ValueError(f"init file {str(path)!r}: unexpected key {extra[0]!r}")
    return {n: arrays[n].astype(np.float64) for n in shapes}


# ---------------------------------------------------------------- the model
def rmsnorm(x: Traced) -> Traced:
    return nn.rmsnorm(x, RMS_EPS)


gelu = nn.gelu


def linear(x: Traced, w: Traced) -> Traced:
    return x @ w.T


def attention(P: dict[str, Traced], x: Traced, length: int) -> Traced:
    q = linear(x, P["layer0.attn_wq"])
    k = linear(x, P["layer0.attn_wk"])
    v = linear(x, P["layer0.attn_wv"])

    def heads(t: Traced) -> Traced:
        return t.reshape(length, N_HEAD, HEAD_DIM).transpose(1, 0, 2)

    q, k, v = heads(q), heads(k), heads(v)
    scores = (q @ k.transpose(0, 2, 1)) * (1.0 / math.sqrt(HEAD_DIM))
    causal = np.broadcast_to(np.tril(np.ones((length, length), dtype=bool)), scores.shape)
    shift = O.shift_max(where(causal, scores, -np.inf), axis=-1)
    e = where(causal, O.exp(where(causal, scores - shift, 0.0)), 0.0)
    a = e / e.sum(axis=-1, keepdims=True)
    out = (a @ v).transpose(1, 0, 2).reshape(length, N_EMBD)
    return linear(out, P["layer0.attn_wo"])


def logits(P: dict[str, Traced], tokens: Traced) -> Traced:
    length = tokens.shape[0]
    x = O.gather(P["wte"], tokens) + P["wpe"][:length]
    x = rmsnorm(x)
    c = x.circuit
    with c.scope("attention"):
        x = attention(P, rmsnorm(x), length) + x
    with c.scope("mlp"):
        h = gelu(linear(rmsnorm(x), P["layer0.mlp_fc1"]))
        x = linear(h, P["layer0.mlp_fc2"]) + x
    with c.scope("head"):
        return linear(x, P["lm_head"])


def doc_loss(P: dict[str, Traced], tokens: Traced, targets: Traced, n_positions: Traced) -> Traced:
    """Mean over real positions of -log softmax(logits)[target]; target -1 marks padding."""
    lg = logits(P, tokens)
    with lg.circuit.scope("loss"):
        return nn.cross_entropy(lg, targets) / n_positions


# ---------------------------------------------------------------- the program
def bucket_of(n: int, buckets: Sequence[int]) -> int:
    for b in sorted(buckets):
        if b >= n:
            return b
    raise ValueError(f"no length bucket holds {n} positions (buckets {tuple(buckets)})")


def encode_padded(tokens: list[int], length: int, bos: int) -> dict[str, np.ndarray]:
    """Inputs and targets of a tokenised document, padded to `length` positions."""
    n = min(BLOCK_SIZE, len(tokens) - 1)
    inp = np.full(length, bos, dtype=np.int64)
    tgt = np.full(length, -1, dtype=np.int64)
    inp[:n] = tokens[:n]
    tgt[:n] = tokens[1 : n + 1]
    return {"tokens": inp, "targets": tgt, "n_positions": np.float64(n)}


def build(
    docs: Sequence[str],
    steps: int | None = None,
    init: dict[str, np.ndarray] | None = None,
    seed: int = 0,
    buckets: Sequence[int] = DEFAULT_BUCKETS,
    tokenizer: Tokenizer | None = None,
) -> Program:
    """microgpt trained for `steps` steps (default: one pass) on `docs`, step s on doc s mod N."""
    tok = tokenizer or Tokenizer.from_corpus()
    if not docs:
        raise ValueError("no training documents")
    num_steps = len(docs) if steps is None else int(steps)
    if num_steps < 1:
        raise ValueError(f"number of steps must be >= 1, got {num_steps}")
    buckets = tuple(sorted(set(int(b) for b in buckets)))
    if not buckets or buckets[-1] < BLOCK_SIZE or buckets[0] < 1:
        raise ValueError(f"length buckets {buckets} must be positive and include {BLOCK_SIZE}")
    shapes = param_shapes(tok.vocab_size)
    params = init if init is not None else init_params(seed, tok.vocab_size)
    encoded = [tok.encode(d) for d in docs]
    opt = Adam()

    def data_specs(length: int) -> dict[str, Input]:
        return {
            "tokens": Input((length,), "int"),
            "targets": Input((length,), "int"),
            "n_positions": Input(()),
        }

    sched = []
    for s in range(num_steps):
        i = s % len(docs)
        key = bucket_of(min(BLOCK_SIZE, len(encoded[i]) - 1), buckets)
        sched.append(Step(key, i, encode_padded(encoded[i], key, tok.bos)))
    used = sorted({st.key for st in sched})
    step_circuits = {L: build_step_circuit(doc_loss, shapes, data_specs(L), opt) for L in used}
    output_circuits = {L: build_output_circuit(doc_loss, shapes, data_specs(L)) for L in buckets}

    def encode_test(doc: str):
        toks = tok.encode(doc)
        key = bucket_of(min(BLOCK_SIZE, len(toks) - 1), buckets)
        return key, encode_padded(toks, key, tok.bos)

    state = {
        **{n: np.array(v, dtype=np.float64) for n, v in params.items()},
        **init_buffers(opt, params),
    }
    return Program(
        name="microgpt",
        init_state=state,
        params=tuple(shapes),
        step_circuits=step_circuits,
        output_circuits=output_circuits,
        steps=sched,
        num_docs=len(docs),
        optimizer=opt,
        encode_test=encode_test,
        meta={"buckets": buckets, "seed": seed},
    )
