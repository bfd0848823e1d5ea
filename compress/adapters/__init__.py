"""Family adapters and the lookup that picks one for a model."""

from __future__ import annotations

from torch import nn

from compress.adapters.base import FamilyAdapter
from compress.adapters.bert import BertAdapter
from compress.adapters.speech import HubertAdapter, Wav2Vec2Adapter
from compress.errors import UnsupportedModelError
from compress.families import FAMILIES

ADAPTERS: tuple[type[FamilyAdapter], ...] = (BertAdapter, HubertAdapter, Wav2Vec2Adapter)


def supported_models() -> str:
    """A one-line list of supported families and classes, for error messages and docs."""
    return "; ".join(f"{a.family}: {', '.join(a.student_classes)}" for a in ADAPTERS)


def adapter_for(model: nn.Module) -> type[FamilyAdapter]:
    """The adapter class for ``model``, or an error that names what is supported."""
    for adapter in ADAPTERS:
        if adapter.supports(model):
            return adapter
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    described = type(model).__name__ + (f" (model_type {model_type!r})" if model_type else "")
    raise UnsupportedModelError(
        f"cannot compress {described}: no adapter for it. Supported families and classes: "
        f"{supported_models()}. Load the teacher with one of these classes (e.g. AutoModel for an "
        "encoder of a supported family)."
    )


def modality_of(model: nn.Module) -> str:
    """``text`` or ``speech``: the modality of the model's family, or for a model without an adapter its main input."""
    for adapter in ADAPTERS:
        if adapter.supports(model):
            return FAMILIES[adapter.family].modality
    return "speech" if getattr(model, "main_input_name", None) == "input_values" else "text"


__all__ = ["ADAPTERS", "FamilyAdapter", "adapter_for", "modality_of", "supported_models"]
