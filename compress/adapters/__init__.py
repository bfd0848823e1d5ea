"""Family adapters and the lookup that picks one for a model."""

from __future__ import annotations

from torch import nn

from compress.adapters.base import FamilyAdapter
from compress.adapters.bert import (
    BertAdapter,
    CamembertAdapter,
    DistilBertAdapter,
    ElectraAdapter,
    MPNetAdapter,
    RobertaAdapter,
    XLMRobertaAdapter,
)
from compress.adapters.speech import Data2VecAudioAdapter, HubertAdapter, Wav2Vec2Adapter, WavLMAdapter
from compress.errors import UnsupportedModelError
from compress.families import FAMILIES

ADAPTERS: tuple[type[FamilyAdapter], ...] = (
    BertAdapter, RobertaAdapter, XLMRobertaAdapter, CamembertAdapter, ElectraAdapter, DistilBertAdapter, MPNetAdapter,
    HubertAdapter, Wav2Vec2Adapter,
    Data2VecAudioAdapter, WavLMAdapter,
)


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
    for adapter in ADAPTERS:
        if adapter.family == model_type:  # a family we know, with a head we do not
            raise UnsupportedModelError(
                f"cannot compress {type(model).__name__}: the {adapter.family} adapter does not know its head. "
                f"Supported {adapter.family} classes: {', '.join(adapter.student_classes)}; load the teacher with one "
                "of them (AutoModel for the bare encoder) and put the head back after compression"
            )
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
