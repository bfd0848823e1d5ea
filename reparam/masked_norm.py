"""LayerNorm whose statistics run over the kept units of a gated axis only.

With a plain LayerNorm, zeroed units still count in the mean and variance, so removing them
changes every other unit's value and the fold is only approximate. Normalising over the kept
units makes the gated model compute exactly what the smaller student computes.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn


class GateValues(Protocol):
    """Anything that holds the current gate vector of each gated axis by name."""

    values: dict[str, torch.Tensor]


class MaskedLayerNorm(nn.LayerNorm):
    """LayerNorm over the units whose gate on ``axis`` is non-zero; dropped units output zero."""

    def __init__(self, layer_norm: nn.LayerNorm, gates: GateValues, axis: str) -> None:
        if len(layer_norm.normalized_shape) != 1:
            raise ValueError("MaskedLayerNorm supports LayerNorm over the last dimension only")
        super().__init__(layer_norm.normalized_shape, eps=layer_norm.eps, elementwise_affine=False)
        # Share the original parameters so the state_dict keys and values stay the same.
        self.weight = layer_norm.weight
        self.bias = layer_norm.bias
        # A plain attribute, not a submodule: the gates belong to the model, not to each norm.
        self.__dict__["gates"] = gates
        self.axis = axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keep = (self.gates.values[self.axis] != 0).to(x.dtype)
        if bool(keep.all()):
            # Nothing removed: the stock kernel, bit for bit the teacher's LayerNorm.
            return super().forward(x)
        count = keep.sum()
        # Reductions as mat-vec products with the mask, and the mask folded into the affine
        # vectors: few passes over the activations (this runs in every layer, every step).
        centred = x - (x @ keep).unsqueeze(-1) / count
        var = (centred * centred) @ keep / count
        scale = keep if self.weight is None else self.weight * keep
        y = centred * torch.rsqrt(var + self.eps).unsqueeze(-1) * scale
        return y if self.bias is None else y + self.bias * keep

    def plain(self) -> nn.LayerNorm:
        """A stock LayerNorm over all units, sharing this norm's parameters."""
        norm = nn.LayerNorm(self.normalized_shape, eps=self.eps, elementwise_affine=False)
        norm.weight, norm.bias = self.weight, self.bias
        return norm

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, axis={self.axis!r}"
