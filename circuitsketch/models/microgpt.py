"""microgpt: the one-layer, 4,192-parameter GPT of the spec, as a traced training program.

Layout follows ``spec/microgpt.md``: linear layers are ``y = W x`` with W of
shape (out, in), written here on rows of positions as ``x @ W.T``.  A document
of n positions runs in the step circuit of the smallest length bucket L >= n;
the extra positions carry token BOS and target -1 (a zero one-hot row), and
causality keeps them invisible to the real ones, so the loss and its gradient
equal the unpadded ones up to summation order (exact zeros are added).

The model's size is a ``Config`` (layers, width, heads, context, and the MLP's
GELU or ReLU; the default is the spec's model, traced exactly as before).  A
minibatch step runs its documents together (``batched_loss``): their real
positions packed one after another into the rows of every linear layer (a
padded layout spends products on padding: bench/RESULTS.md, run 12), and only
attention, which needs each document's positions side by side, gathers them
into a (document, position) layout padded to the bucket of the longest, and
back.
"""

from __future__ import annotations

import contextlib
import math
import zipfile
import zlib
from collections import Counter
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from circuitsketch import nn
from circuitsketch import ops as O
from circuitsketch.batches import minibatches
from circuitsketch.models.microgpt_config import Config
from circuitsketch.optim import Adam, init_buffers
from circuitsketch.program import Program, Step, build_output_circuit, build_step_circuit
from circuitsketch.tracing import Input, Traced, where

N_EMBD, N_HEAD, HEAD_DIM, BLOCK_SIZE, MLP_DIM = 16, 4, 4, 16, 64
INIT_STD = 0.08
RMS_EPS = 1e-5
DEFAULT_BUCKETS = (8, 16)
DEFAULT = Config()


def param_shapes(vocab_size: int = 27, config: Config = DEFAULT) -> dict[str, tuple[int, int]]:
    """Parameter names and (out, in) shapes, in the spec's flattening order (layer by layer)."""
    e, h = config.n_embd, config.mlp_dim
    shapes = {"wte": (vocab_size, e), "wpe": (config.block_size, e), "lm_head": (vocab_size, e)}
    for i in range(config.n_layer):
        shapes.update({
            f"layer{i}.attn_wq": (e, e),
            f"layer{i}.attn_wk": (e, e),
            f"layer{i}.attn_wv": (e, e),
            f"layer{i}.attn_wo": (e, e),
            f"layer{i}.mlp_fc1": (h, e),
            f"layer{i}.mlp_fc2": (e, h),
        })
    return shapes


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
def init_params(seed: int = 0, vocab_size: int = 27, config: Config = DEFAULT
                ) -> dict[str, np.ndarray]:
    """i.i.d. N(0, 0.08^2) parameters from numpy's default_rng(seed), in spec order."""
    rng = np.random.default_rng(seed)
    shapes = param_shapes(vocab_size, config)
    return {n: rng.normal(0.0, INIT_STD, size=s) for n, s in shapes.items()}


def load_params(path: str | Path, vocab_size: int = 27, config: Config = DEFAULT
                ) -> dict[str, np.ndarray]:
    """Parameters from an .npz whose keys are the spec's names; checks every key and shape."""
    shapes = param_shapes(vocab_size, config)
    try:  # a damaged, empty or .npy file fails in np.load or zipfile in many ways
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError("it holds one array (.npy), not named arrays")
        with loaded as f:
            arrays = {k: np.asarray(f[k]) for k in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
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
NONLINEARITIES = {"gelu": gelu, "relu": nn.relu}  # Config.activation -> its function


def linear(x: Traced, w: Traced) -> Traced:
    return x @ w.T


def attention(
    P: dict[str, Traced], x: Traced, length: int, config: Config = DEFAULT, layer: int = 0,
    batch: int | None = None, packing: tuple[Traced, Traced] | None = None,
) -> Traced:
    """Causal multi-head attention over rows x: (length, E), or `batch` documents of
    `length` positions each, as (batch * length, E) rows or packed (``packing`` =
    (rows, slots) of ``encode_packed``: q, k and v are gathered into the padded layout,
    the output back)."""
    E, H, D = config.n_embd, config.n_head, config.head_dim
    q = linear(x, P[f"layer{layer}.attn_wq"])
    k = linear(x, P[f"layer{layer}.attn_wk"])
    v = linear(x, P[f"layer{layer}.attn_wv"])
    if packing is not None:
        q, k, v = (O.gather(t, packing[0]) for t in (q, k, v))

    def heads(t: Traced) -> Traced:  # -> (groups, length, D), a group = (document, head)
        if batch is None:
            return t.reshape(length, H, D).transpose(1, 0, 2)
        return t.reshape(batch, length, H, D).transpose(0, 2, 1, 3).reshape(batch * H, length, D)

    q, k, v = heads(q), heads(k), heads(v)
    scores = (q @ k.transpose(0, 2, 1)) * (1.0 / math.sqrt(D))
    causal = np.broadcast_to(np.tril(np.ones((length, length), dtype=bool)), scores.shape)
    shift = O.shift_max(where(causal, scores, -np.inf), axis=-1)
    e = where(causal, O.exp(where(causal, scores - shift, 0.0)), 0.0)
    a = e / e.sum(axis=-1, keepdims=True)
    out = a @ v
    if batch is None:
        out = out.transpose(1, 0, 2).reshape(length, E)
    else:
        out = out.reshape(batch, H, length, D).transpose(0, 2, 1, 3).reshape(batch * length, E)
    if packing is not None:
        out = O.gather(out, packing[1])
    return linear(out, P[f"layer{layer}.attn_wo"])


def _blocks(P: dict[str, Traced], x: Traced, length: int, config: Config,
            batch: int | None, packing: tuple[Traced, Traced] | None = None) -> Traced:
    c = x.circuit
    for i in range(config.n_layer):
        with c.scope(f"layer{i}") if config.n_layer > 1 else contextlib.nullcontext():
            with c.scope("attention"):
                x = attention(P, rmsnorm(x), length, config, i, batch, packing) + x
            with c.scope("mlp"):
                h = NONLINEARITIES[config.activation](linear(rmsnorm(x), P[f"layer{i}.mlp_fc1"]))
                x = linear(h, P[f"layer{i}.mlp_fc2"]) + x
    with c.scope("head"):
        return linear(x, P["lm_head"])


def logits(P: dict[str, Traced], tokens: Traced, config: Config = DEFAULT) -> Traced:
    length = tokens.shape[0]
    x = O.gather(P["wte"], tokens) + P["wpe"][:length]
    return _blocks(P, rmsnorm(x), length, config, None)


def packed_logits(P: dict[str, Traced], tokens: Traced, positions: Traced, rows: Traced,
                  slots: Traced, batch: int, config: Config = DEFAULT) -> Traced:
    """Logits (R, V) of a minibatch's packed positions (``encode_packed``)."""
    x = O.gather(P["wte"], tokens) + O.gather(P["wpe"], positions)
    return _blocks(P, rmsnorm(x), rows.shape[0] // batch, config, batch, (rows, slots))


def doc_loss(P: dict[str, Traced], tokens: Traced, targets: Traced, n_positions: Traced,
             config: Config = DEFAULT) -> Traced:
    """Mean over real positions of -log softmax(logits)[target]; target -1 marks padding."""
    lg = logits(P, tokens, config)
    with lg.circuit.scope("loss"):
        return nn.cross_entropy(lg, targets) / n_positions


def batched_loss(P: dict[str, Traced], tokens: Traced, positions: Traced, targets: Traced,
                 n_positions: Traced, rows: Traced, slots: Traced,
                 config: Config = DEFAULT) -> Traced:
    """The (batch,) losses of a minibatch's documents, packed as ``encode_packed`` packs them."""
    batch = n_positions.shape[0]
    length = rows.shape[0] // batch
    lg = packed_logits(P, tokens, positions, rows, slots, batch, config)
    with lg.circuit.scope("loss"):
        picked = O.one_hot(targets, lg.shape[-1]) * nn.log_softmax(lg, axis=-1)
        # per document, the sum over its positions and the vocabulary, in doc_loss's order
        # (a padded position reads a padding row's zero)
        per_row = O.gather(picked.sum(axis=1, keepdims=True), rows)
        return -(per_row.reshape(batch, length).sum(axis=1)) / n_positions


# ---------------------------------------------------------------- the program
def bucket_of(n: int, buckets: Sequence[int]) -> int:
    for b in sorted(buckets):
        if b >= n:
            return b
    raise ValueError(f"no length bucket holds {n} positions (buckets {tuple(buckets)})")


BATCH_BUCKETS = (8, 10, 12, 16)


def default_buckets(block_size: int, batched: bool = False) -> tuple[int, ...]:
    """(8, 16) for the spec's context of 16, (8, 10, 12, 16) for minibatches (a batch is
    padded to its longest document, so finer buckets waste fewer positions); for another
    context, the buckets below it, and it."""
    base = BATCH_BUCKETS if batched else DEFAULT_BUCKETS
    return tuple(sorted({b for b in base if b < block_size} | {block_size}))


def encode_padded(tokens: list[int], length: int, bos: int, block_size: int = BLOCK_SIZE
                  ) -> dict[str, np.ndarray]:
    """Inputs and targets of a tokenised document, padded to `length` positions."""
    n = min(block_size, len(tokens) - 1)
    inp = np.full(length, bos, dtype=np.int64)
    tgt = np.full(length, -1, dtype=np.int64)
    inp[:n] = tokens[:n]
    tgt[:n] = tokens[1 : n + 1]
    return {"tokens": inp, "targets": tgt, "n_positions": np.float64(n)}


PACK = 4  # packed rows come in multiples of this (the register tiles' row count)
RARE = 0.03  # a row count fewer steps than this share use gets no step circuit of its own


def packed_rows(needs: Sequence[tuple[int, int, int]]) -> list[int]:
    """The rows of each step's packed batch, from its (documents, bucket, positions).

    At least one padding row, rounded up to a multiple of PACK; then up to a row count
    that at least RARE of the steps use, or the largest of its (documents, bucket): each
    row count is one more step circuit to build, so rare ones are merged."""
    want = [(b, length, -(-(n + 1) // PACK) * PACK) for b, length, n in needs]
    runs = Counter(want)
    keep = {k for k, v in runs.items() if v >= RARE * len(want)}
    for group in {k[:2] for k in runs}:
        keep.add(max((k for k in runs if k[:2] == group), key=lambda k: k[2]))
    return [min(k[2] for k in keep if k[:2] == w[:2] and k[2] >= w[2]) for w in want]


def busiest_packed_key(steps: Sequence[Step], batch: int, length: int) -> tuple | None:
    """The key of batches of `batch` documents in length bucket `length` that most steps
    run (a bucket has one per packed row count), or None if no such batch trains."""
    runs = Counter(st.key for st in steps if st.key[:2] == (batch, length))
    return runs.most_common(1)[0][0] if runs else None


def encode_packed(docs: Sequence[list[int]], length: int, bos: int,
                  block_size: int = BLOCK_SIZE, total: int = 0) -> dict[str, np.ndarray]:
    """A minibatch's tokenised documents packed: their real positions one after another
    (tokens, positions, targets), then padding rows (BOS, position 0, target -1), at least
    one, up to `total` rows or the next multiple of PACK.  ``rows`` maps attention's
    (document, position) layout of `length` positions to packed rows (a padded position:
    the last row, padding); ``slots`` maps packed rows back (padding rows read slot 0, and
    their cotangent is 0)."""
    ns = [min(block_size, len(t) - 1) for t in docs]
    total = max(int(total), -(-(sum(ns) + 1) // PACK) * PACK)
    out = {
        "tokens": np.full(total, bos, dtype=np.int64),
        "positions": np.zeros(total, dtype=np.int64),
        "targets": np.full(total, -1, dtype=np.int64),
        "n_positions": np.array(ns, dtype=np.float64),
        "rows": np.full(len(docs) * length, total - 1, dtype=np.int64),
        "slots": np.zeros(total, dtype=np.int64),
    }
    r = 0
    for b, (t, n) in enumerate(zip(docs, ns, strict=True)):
        out["tokens"][r : r + n] = t[:n]
        out["targets"][r : r + n] = t[1 : n + 1]
        out["positions"][r : r + n] = np.arange(n)
        out["rows"][b * length : b * length + n] = np.arange(r, r + n)
        out["slots"][r : r + n] = np.arange(b * length, b * length + n)
        r += n
    return out


def padded_batch(data: dict[str, np.ndarray], length: int) -> dict[str, np.ndarray]:
    """A packed minibatch's data in the (document, position) layout: tokens and targets
    (batch, length), for peers that pad (the JAX benchmark) and tests."""
    batch = len(data["n_positions"])
    return {"tokens": data["tokens"][data["rows"]].reshape(batch, length),
            "targets": data["targets"][data["rows"]].reshape(batch, length),
            "n_positions": data["n_positions"]}


def _data_specs(length: int) -> dict[str, Input]:
    return {"tokens": Input((length,), "int"), "targets": Input((length,), "int"),
            "n_positions": Input(())}


def _packed_specs(batch: int, length: int, total: int) -> dict[str, Input]:
    return {
        "tokens": Input((total,), "int"),
        "positions": Input((total,), "int"),
        "targets": Input((total,), "int"),
        "n_positions": Input((batch,)),
        "rows": Input((batch * length,), "int"),
        "slots": Input((total,), "int"),
    }


def build(
    docs: Sequence[str],
    steps: int | None = None,
    init: dict[str, np.ndarray] | None = None,
    seed: int = 0,
    buckets: Sequence[int] | None = None,
    tokenizer: Tokenizer | None = None,
    *,
    n_layer: int = 1,
    n_embd: int = N_EMBD,
    n_head: int = N_HEAD,
    block_size: int = BLOCK_SIZE,
    activation: str = "gelu",
    batch_size: int = 1,
    epochs: int | None = None,
    shuffle_seed: int | None = None,
    optimizer: Any = None,
) -> Program:
    """microgpt of the given size and MLP `activation` ("gelu", the spec's, or "relu")
    trained on `docs` with `optimizer` (default: the spec's Adam).

    The steps follow ``circuitsketch.batches.minibatches`` (`steps` or `epochs`, not
    both; neither: one epoch); by default step s trains on document s mod N.  A batch
    size of 1 traces the spec's one-document step (a scalar weight).
    """
    tok = tokenizer or Tokenizer.from_corpus()
    cfg = Config(n_layer, n_embd, n_head, block_size, activation)
    if not docs:
        raise ValueError("no training documents")
    if steps is not None and int(steps) < 1:
        raise ValueError(f"number of steps must be >= 1, got {int(steps)}")
    batches = minibatches(len(docs), batch_size, steps, epochs, shuffle_seed)
    # test documents run alone: the coarse buckets (fewer output circuits to compile)
    out_buckets = tuple(sorted(set(int(b) for b in (buckets or default_buckets(block_size)))))
    buckets = tuple(sorted(set(int(b) for b in (buckets or
                                                default_buckets(block_size, batch_size > 1)))))
    if not buckets or buckets[-1] < block_size or buckets[0] < 1:
        raise ValueError(f"length buckets {buckets} must be positive and include {block_size}")
    shapes = param_shapes(tok.vocab_size, cfg)
    params = init if init is not None else init_params(seed, tok.vocab_size, cfg)
    encoded = [tok.encode(d) for d in docs]
    positions = [min(block_size, len(t) - 1) for t in encoded]
    lengths = [bucket_of(n, buckets) for n in positions]
    opt = optimizer if optimizer is not None else Adam()

    def loss(P, tokens, targets, n_positions):
        return doc_loss(P, tokens, targets, n_positions, cfg)

    def loss_of_batch(P, tokens, positions, targets, n_positions, rows, slots):
        return batched_loss(P, tokens, positions, targets, n_positions, rows, slots, cfg)

    sched = []
    bucket_of_step = [max(lengths[i] for i in b) for b in batches]
    if batch_size > 1:
        packed = packed_rows([(len(b), L, sum(positions[i] for i in b))
                              for b, L in zip(batches, bucket_of_step, strict=True)])
    for s, (b, length) in enumerate(zip(batches, bucket_of_step, strict=True)):
        if batch_size == 1:
            sched.append(Step(length, b[0], encode_padded(encoded[b[0]], length, tok.bos,
                                                          block_size)))
        else:  # key: documents, attention's length, packed rows
            data = encode_packed([encoded[i] for i in b], length, tok.bos, block_size,
                                 packed[s])
            sched.append(Step((len(b), length, packed[s]), b, data))
    step_circuits = {}
    for key in sorted({st.key for st in sched}):
        if batch_size == 1:
            step_circuits[key] = build_step_circuit(loss, shapes, _data_specs(key), opt)
        else:
            step_circuits[key] = build_step_circuit(
                loss_of_batch, shapes, _packed_specs(*key), opt, batch=key[0])
    output_circuits = {L: build_output_circuit(loss, shapes, _data_specs(L)) for L in out_buckets}

    def encode_test(doc: str):
        toks = tok.encode(doc)
        key = bucket_of(min(block_size, len(toks) - 1), out_buckets)
        return key, encode_padded(toks, key, tok.bos, block_size)

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
