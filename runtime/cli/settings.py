"""microgpt's model and training options (--n-layer ..., --activation, --batch-size ...).

The training commands read them into ``TrainingOptions.model_config`` /
``train_config`` (only the options given; the source keeps those that differ
from the spec's).  Commands on a SKETCH take the model options as a check: a
value that differs from the sketch's model is refused, naming the setting.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from runtime.cli.common import nonnegative_int, positive_int, user_errors
from runtime.sources import check_model_settings
from runtime.store import Sketch

__all__ = [
    "MODEL_OPTIONS",
    "TRAIN_OPTIONS",
    "add_model_options",
    "add_train_options",
    "check_sketch_settings",
    "given",
]


def _float_at_least(low: float, strict: bool) -> Callable[[str], float]:
    """A finite float > (`strict`) or >= `low`: nan and inf would only fail after the run
    has started (a manifest cannot hold them)."""
    what = f"a number {'>' if strict else '>='} {low:g}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite {what[2:]}, got {value:g}")
        if not (value > low if strict else value >= low):
            raise argparse.ArgumentTypeError(f"expected {what}, got {value:g}")
        return value

    return parse


@dataclass(frozen=True)
class Setting:
    """One option: its key in the configuration, argparse keywords, and its help."""

    key: str
    help: str
    kwargs: dict[str, Any]

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")


MODEL_OPTIONS = (
    Setting("n_layer", "transformer layers (default 1)",
            {"type": positive_int, "metavar": "L"}),
    Setting("n_embd", "width of the residual stream (default 16)",
            {"type": positive_int, "metavar": "E"}),
    Setting("n_head", "attention heads; --n-embd must be a multiple of it (default 4)",
            {"type": positive_int, "metavar": "H"}),
    Setting("block_size", "context: positions a document trains on (default 16)",
            {"type": positive_int, "metavar": "C"}),
    Setting("activation", "the MLP's nonlinearity: gelu (the spec's, default) or relu",
            {"choices": ["gelu", "relu"]}),  # Config.activation's
)
TRAIN_OPTIONS = (
    Setting("batch_size", "documents per step; the loss is the mean of their weighted "
            "losses (default 1)", {"type": positive_int, "metavar": "B"}),
    Setting("shuffle_seed", "visit the documents of each epoch in a fresh order drawn from "
            "numpy's default_rng(S) (default: in file order)",
            {"type": nonnegative_int, "metavar": "S"}),
    Setting("optimizer", "adam (the spec's; with --weight-decay it is AdamW) or sgd "
            "(default adam)", {"choices": ["adam", "sgd"]}),
    Setting("lr", "peak learning rate (default 0.01)",
            {"type": _float_at_least(0.0, True), "metavar": "RATE"}),
    Setting("lr_schedule", "learning-rate schedule after the warmup (default linear: decays "
            "to 0 at the end)", {"choices": ["constant", "linear", "cosine"]}),
    Setting("warmup", "steps of linear warmup of the rate (default 0)",
            {"type": nonnegative_int, "metavar": "W"}),
    Setting("weight_decay", "decoupled weight decay: each step scales the parameters by "
            "1 - rate * WD (default 0)", {"type": _float_at_least(0.0, False), "metavar": "WD"}),
    Setting("momentum", "momentum of --optimizer sgd (default 0.9)",
            {"type": _float_at_least(0.0, False), "metavar": "MU"}),
    Setting("nesterov", "Nesterov momentum for --optimizer sgd",
            {"action": "store_const", "const": True}),
    Setting("clip_norm", "clip the gradients to this global 2-norm before the update",
            {"type": _float_at_least(0.0, True), "metavar": "MAX"}),
)


def add_model_options(p: argparse.ArgumentParser, check: bool = False) -> None:
    """--n-layer ... --activation: the model to build, or (`check`) the model the SKETCH
    must have."""
    title = (
        "microgpt's size and MLP (given with SKETCH: must be the sketch's)" if check
        else "microgpt's size and MLP (default: the spec's one-layer GELU model)"
    )
    g = p.add_argument_group(title)
    for s in MODEL_OPTIONS:
        g.add_argument(s.flag, dest=s.key, default=None, help=s.help, **s.kwargs)


def add_train_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("how microgpt is trained (default: the spec's)")
    for s in TRAIN_OPTIONS:
        g.add_argument(s.flag, dest=s.key, default=None, help=s.help, **s.kwargs)


def given(args: argparse.Namespace, table: tuple[Setting, ...]) -> dict[str, Any]:
    """The options of `table` that were given on the command line."""
    return {s.key: getattr(args, s.key) for s in table if getattr(args, s.key, None) is not None}


def check_sketch_settings(args: argparse.Namespace, sketch: Sketch) -> None:
    """CLIError naming the first model option given that differs from the sketch's model."""
    asked = given(args, MODEL_OPTIONS)
    if asked:
        with user_errors():
            check_model_settings(sketch, asked)
