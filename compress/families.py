"""The model families the library knows, as a small table: modality and the axis kinds each can prune.

Light on purpose (no torch, no transformers): recipes are checked against it when they load, and
each family adapter (``compress.adapters``) declares its family by name in this table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Modality = Literal["text", "speech"]

#: every axis kind an adapter can build (see DESIGN.md, "axes")
AXIS_KINDS = ("hidden", "heads", "head_width", "ffn", "attention", "mlp", "conv")


@dataclass(frozen=True)
class Family:
    """A family's modality and the axis kinds its adapter builds gates for."""

    name: str
    modality: Modality
    axis_kinds: tuple[str, ...]

    @property
    def default_axes(self) -> list[str]:
        """``prune.axes`` when a recipe gives none: every kind it can prune, whole heads rather than head width."""
        return [kind for kind in self.axis_kinds if kind != "head_width"]


_TEXT = ("hidden", "heads", "head_width", "ffn", "attention", "mlp")
# Speech: the residual stream cannot be gated (the grouped positional conv; compress/adapters/speech.py).
_SPEECH = ("conv", "heads", "ffn", "attention", "mlp")

FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        Family("bert", "text", _TEXT),
        Family("hubert", "speech", _SPEECH),
        Family("wav2vec2", "speech", _SPEECH),
    )
}
