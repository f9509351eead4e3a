"""microgpt's size (layers, width, heads, context) and MLP nonlinearity, checked once.

The default is the spec's model (one layer, 16 wide, 4 heads of 4, context
16, GELU); ``changed()`` lists the settings that differ from it, which is what
a sketch records and compares.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["ACTIVATIONS", "Config"]

ACTIVATIONS = ("gelu", "relu")  # the first is the spec's


@dataclass(frozen=True)
class Config:
    """The shape of a microgpt model (the MLP is 4 x wider than the residual stream) and
    its MLP's nonlinearity."""

    n_layer: int = 1
    n_embd: int = 16
    n_head: int = 4
    block_size: int = 16
    activation: str = "gelu"

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}"
            )
        for f in fields(self):
            if f.name == "activation":
                continue
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{f.name} must be a positive integer, got {v!r}")
        if self.n_embd % self.n_head:
            raise ValueError(
                f"n_embd = {self.n_embd} is not a multiple of n_head = {self.n_head}: "
                "each head takes n_embd / n_head dimensions"
            )

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def mlp_dim(self) -> int:
        return 4 * self.n_embd

    def changed(self) -> dict[str, Any]:
        """The settings that differ from the spec's model (empty for it)."""
        default = asdict(Config())
        return {k: v for k, v in asdict(self).items() if v != default[k]}
