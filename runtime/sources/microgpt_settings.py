"""microgpt's settings beyond the documents: the model's size and how it is trained.

Both are plain dicts of the settings that differ from the spec's (``model_config``:
n_layer, n_embd, n_head, block_size, activation; ``train_config``: minibatches,
shuffling, optimizer, rate schedule), so the spec's run has empty ones and keeps
the key and manifest it always had.  ``normalized_*`` check values (a ValueError names
the command-line option) and drop the defaults; ``make_optimizer`` and
``build_keywords`` turn them into what ``circuitsketch.models.microgpt.build``
takes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = [
    "MODEL_DEFAULTS",
    "TRAIN_DEFAULTS",
    "build_keywords",
    "make_optimizer",
    "normalized_model",
    "normalized_train",
    "num_steps",
    "schedule_array",
]

MODEL_DEFAULTS: dict[str, int | str] = {"n_layer": 1, "n_embd": 16, "n_head": 4, "block_size": 16,
                                        "activation": "gelu"}
TRAIN_DEFAULTS: dict[str, Any] = {
    "batch_size": 1,
    "shuffle_seed": None,
    "optimizer": "adam",
    "lr": 0.01,
    "lr_schedule": "linear",
    "warmup": 0,
    "weight_decay": 0.0,
    "momentum": 0.9,  # sgd only
    "nesterov": False,  # sgd only
    "clip_norm": None,
}
OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("constant", "linear", "cosine")


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def normalized_model(config: Mapping[str, Any]) -> dict[str, int | str]:
    """The model settings that differ from the spec's, checked (ValueError naming the option)."""
    from circuitsketch.models.microgpt_config import Config

    unknown = sorted(set(config) - set(MODEL_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown microgpt model setting {unknown[0]!r}")
    try:
        cfg = Config(**{k: v for k, v in config.items() if v is not None})
    except ValueError as e:
        raise ValueError(f"microgpt model: {e}") from None
    return cfg.changed()


def normalized_train(config: Mapping[str, Any]) -> dict[str, Any]:
    """The training settings that differ from the spec's, checked."""
    unknown = sorted(set(config) - set(TRAIN_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown microgpt training setting {unknown[0]!r}")
    given = {k: v for k, v in config.items() if v is not None}
    opt = given.get("optimizer", "adam")
    if opt not in OPTIMIZERS:
        raise ValueError(f"--optimizer {opt!r}: expected one of {', '.join(OPTIMIZERS)}")
    if given.get("lr_schedule", "linear") not in SCHEDULES:
        raise ValueError(
            f"--lr-schedule {given['lr_schedule']!r}: expected one of {', '.join(SCHEDULES)}"
        )
    if opt != "sgd":
        sgd_only = [k for k in ("momentum", "nesterov") if k in given and given[k] is not False]
        if sgd_only:
            raise ValueError(f"{_flag(sgd_only[0])} applies to --optimizer sgd")
    for key, low, strict in (("lr", 0.0, True), ("weight_decay", 0.0, False),
                             ("momentum", 0.0, False), ("clip_norm", 0.0, True)):
        value = given.get(key, 1.0)  # nan and inf: not in a manifest, not a training run
        if not (value > low if strict else value >= low) or not math.isfinite(value):
            raise ValueError(
                f"{_flag(key)} must be a finite number {'>' if strict else '>='} {low:g}, "
                f"got {value!r}"
            )
    if given.get("nesterov") and given.get("momentum", 0.9) == 0.0:
        raise ValueError("--nesterov needs a --momentum > 0")
    return {k: v for k, v in given.items() if v != TRAIN_DEFAULTS[k]}


def num_steps(num_docs: int, steps: int | None, epochs: int | None, batch_size: int) -> int:
    """Training steps: `steps`, or `epochs` (default 1) whole epochs of ceil(N / B) batches."""
    from circuitsketch.batches import epoch_steps

    if steps is not None and epochs is not None:
        raise ValueError("give --steps or --epochs, not both")
    if steps is not None:
        return int(steps)
    return int(epochs or 1) * epoch_steps(num_docs, batch_size)


def make_optimizer(train_config: Mapping[str, Any]) -> Any:
    """The optimizer of a (normalized) training configuration."""
    from circuitsketch.optim import SGD, Adam

    cfg = {**TRAIN_DEFAULTS, **train_config}
    common = {
        "lr": float(cfg["lr"]),
        "clip_norm": None if cfg["clip_norm"] is None else float(cfg["clip_norm"]),
        "weight_decay": float(cfg["weight_decay"]),
        "warmup": int(cfg["warmup"]),
    }
    if cfg["optimizer"] == "sgd":
        return SGD(momentum=float(cfg["momentum"]), nesterov=bool(cfg["nesterov"]),
                   lr_schedule=cfg["lr_schedule"], **common)
    # the spec's Adam decays linearly by default: name another schedule only when asked
    schedule = None if cfg["lr_schedule"] == "linear" else cfg["lr_schedule"]
    return Adam(lr_schedule=schedule, **common)


def build_keywords(model_config: Mapping[str, Any], train_config: Mapping[str, Any]
                   ) -> dict[str, Any]:
    """Keywords for ``microgpt.build``: the model's size, batches and the optimizer."""
    kw: dict[str, Any] = dict(model_config)
    if train_config.get("batch_size", 1) != 1:
        kw["batch_size"] = int(train_config["batch_size"])
    if train_config.get("shuffle_seed") is not None:
        kw["shuffle_seed"] = int(train_config["shuffle_seed"])
    if any(k not in ("batch_size", "shuffle_seed") for k in train_config):
        kw["optimizer"] = make_optimizer(train_config)
    return kw


def schedule_array(batches: list[tuple[int, ...]]):
    """The documents of every step as a (T, B) int64 array, -1 after a short batch's."""
    import numpy as np

    width = max(len(b) for b in batches)
    out = np.full((len(batches), width), -1, np.int64)
    for s, b in enumerate(batches):
        out[s, : len(b)] = b
    return out
