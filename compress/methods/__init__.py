"""Pruning methods by recipe name (``prune.method``)."""

from __future__ import annotations

from compress.errors import RecipeError
from compress.methods.base import PruningMethod
from compress.methods.l0 import LAGRANGIAN_ATTR, L0Method
from compress.methods.layer_drop import LayerDropMethod
from compress.methods.scheduled import MagnitudeMethod, RandomMethod, ScheduledTopK, TaylorMethod, TorchPruningTopK
from compress.methods.wid import COMPACTORS_ATTR, WIDMethod

METHODS: dict[str, type[PruningMethod]] = {m.name: m for m in (L0Method, MagnitudeMethod, WIDMethod, TaylorMethod, RandomMethod, LayerDropMethod)}
#: The design's generic name for the compactor method (``prune.method: compactor``) is WID.
METHODS["compactor"] = WIDMethod


def method_class(name: str) -> type[PruningMethod]:
    """The method a recipe names, or an error listing the known ones."""
    try:
        return METHODS[name]
    except KeyError:
        raise RecipeError(f"unknown pruning method {name!r}; known methods: {', '.join(METHODS)}") from None


__all__ = ["COMPACTORS_ATTR", "WIDMethod", "LAGRANGIAN_ATTR", "METHODS", "L0Method", "MagnitudeMethod", "PruningMethod", "ScheduledTopK", "method_class",
           "LayerDropMethod", "RandomMethod", "TaylorMethod", "TorchPruningTopK"]
