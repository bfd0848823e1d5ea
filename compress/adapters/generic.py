"""A fallback adapter for transformers encoders without a family adapter: FFN units from torch-pruning groups.

torch-pruning traces the model and finds its coupled channel groups. A group of exactly one Linear's
outputs read by exactly one Linear's inputs, inside a numbered layer, whose width is the config's
FFN size, is an FFN: its units can go, with the gate on the second projection's input (exact fold,
as for BERT's ``ffn`` axis). Only FFN units are pruned here: removing hidden units or heads would
change sizes a stock config ties together (head width = hidden / heads), which needs an adapter.
Every layer keeps the same width, so the student is saved with the teacher's stock config and class.
A model whose FFN is a fused GLU (ModernBERT's ``Wi``) or whose layers hold several FFNs (a Conformer's
half-step FFNs around its convolution module) is refused with that reason.
"""

from __future__ import annotations

import copy
import re
from collections import Counter
from collections.abc import Mapping

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from compress.adapters.base import FamilyAdapter, example_inputs
from compress.adapters.layers import linear_dims
from compress.errors import TargetError, UnsupportedModelError
from pruners.tp_groups import CoupledGroup, linear_groups
from reparam import Axis, GateSite, layer_axis_name

#: config keys that hold the FFN width, by family (BERT / ViT, DistilBERT, BART-style, T5)
FFN_CONFIG_KEYS = ("intermediate_size", "hidden_dim", "ffn_dim", "encoder_ffn_dim", "d_ff")
_LAYER = re.compile(r"^(.*?\.)(\d+)\.")
_NEEDS_ADAPTER = (
    "Compressing it needs a family adapter for its layers (compress/adapters), which does not exist yet; "
    "compress a teacher of a supported family instead"
)


def _ffn_key(config: PretrainedConfig) -> str:
    for key in FFN_CONFIG_KEYS:
        if isinstance(getattr(config, key, None), int):
            return key
    raise UnsupportedModelError(
        f"{type(config).__name__} has none of the FFN width keys {', '.join(FFN_CONFIG_KEYS)}; the generic path "
        "prunes FFN units and writes the kept width back to that key"
    )


def _ffn_layer(group: CoupledGroup, width: int, model: nn.Module) -> tuple[int, str, str, str] | None:
    """``(layer index, layer prefix, first projection, second projection)`` when ``group`` is a layer's FFN."""
    writers = [m.module for m in group.members if m.side == "out"]
    readers = [m.module for m in group.members if m.side == "in"]
    if group.size != width or len(writers) != 1 or len(readers) != 1:
        return None
    if not all(isinstance(model.get_submodule(name), nn.Linear) for name in (*writers, *readers)):
        return None
    match = _LAYER.match(writers[0])
    if match is None or not readers[0].startswith(match.group(0)):
        return None
    return int(match.group(2)), match.group(1), writers[0], readers[0]


def _groups(model: nn.Module) -> list[CoupledGroup]:
    """torch-pruning's groups of ``model``; a model the tracer cannot follow is refused, not a traceback."""
    inputs = example_inputs(model)
    try:
        return linear_groups(model, inputs)
    except Exception as err:  # the tracer fails in many ways on models it does not know: say which one
        detail = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise UnsupportedModelError(
            f"torch-pruning cannot trace {type(model).__name__} to find its FFNs ({type(err).__name__}: {detail})"
        ) from err


def _fused_glu(groups: list[CoupledGroup], width: int, key: str, model: nn.Module) -> str | None:
    """Why the FFN is not prunable here when it is a fused GLU (ModernBERT's ``Wi``: input and gate in one Linear)."""
    for group in groups:
        writers = [m.module for m in group.members if m.side == "out"]
        readers = [m.module for m in group.members if m.side == "in"]
        if len(writers) != 1 or len(readers) != 1:
            continue
        first, second = model.get_submodule(writers[0]), model.get_submodule(readers[0])
        if not (isinstance(first, nn.Linear) and isinstance(second, nn.Linear)):
            continue
        if first.out_features == 2 * width and second.in_features == width:
            return (
                f"the FFN of {type(model).__name__} is a fused GLU: {writers[0]} writes {2 * width} outputs (2 x "
                f"{key} {width}), split into the FFN input and its gate, which {readers[0]} reads as {width}; one "
                f"FFN unit is two rows of {writers[0]}, one in each half, and the generic path prunes only FFNs of "
                f"two plain Linears. {_NEEDS_ADAPTER}"
            )
    return None


def _several_ffns(layers: list[tuple[int, str, str, str]], width: int, key: str, model: nn.Module) -> str:
    """Why a model with more than one FFN per layer (a Conformer's half-step FFNs) is not prunable here."""
    index, count = Counter(i for i, *_ in layers).most_common(1)[0]
    prefix = layers[0][1]
    ffns = [first.rpartition(".")[0] for i, _, first, _ in layers if i == index]
    layer = model.get_submodule(f"{prefix}{index}")
    convs = [
        f"{prefix}{index}.{name}"
        for name, child in layer.named_children()
        if any(isinstance(m, nn.modules.conv._ConvNd) for m in child.modules())
    ]
    conformer = (
        f" and a convolution module ({', '.join(convs)}), as a Conformer layer does (half-step FFNs before and after "
        "its attention and convolution)"
        if convs
        else ""
    )
    return (
        f"each layer of {type(model).__name__} holds {count} FFNs of width {width} ({', '.join(ffns)}){conformer}; "
        f"the generic path prunes one FFN per layer and writes one {key}, so it cannot take this model. {_NEEDS_ADAPTER}"
    )


class GenericAdapter(FamilyAdapter):
    """The FFN units of any transformers encoder whose config names its FFN width (see module docstring)."""

    family = "generic"
    student_classes: Mapping[str, str] = {}
    axis_kinds = ("ffn",)

    @property
    def modality(self) -> str:
        """Speech for a model that reads raw audio, else text (the generic path has no families table entry)."""
        return "speech" if self.model.main_input_name == "input_values" else "text"

    def __init__(self, model: PreTrainedModel) -> None:
        super().__init__(model)
        self.ffn_key = _ffn_key(model.config)
        self.width = getattr(model.config, self.ffn_key)
        groups = _groups(model)
        found = [_ffn_layer(g, self.width, model) for g in groups]
        self.layers = sorted(f for f in found if f is not None)
        if not self.layers:
            plain = (
                f"found no FFN of width {self.width} ({self.ffn_key}) in {type(model).__name__}: no layer has a "
                "Linear whose outputs only one other Linear reads"
            )
            raise UnsupportedModelError(_fused_glu(groups, self.width, self.ffn_key, model) or plain)
        prefixes = {prefix for _, prefix, _, _ in self.layers}
        if len(prefixes) != 1:
            raise UnsupportedModelError(f"FFNs of {type(model).__name__} lie in more than one stack of layers: {prefixes}")
        self.prefix = prefixes.pop()
        if len({i for i, *_ in self.layers}) != len(self.layers):
            raise UnsupportedModelError(_several_ffns(self.layers, self.width, self.ffn_key, model))
        self.params = set(model.state_dict())

    def axes(self, head_width: bool = False) -> list[Axis]:
        self.refuse_head_width(head_width)
        axes = []
        for index, _, first, second in self.layers:
            axis = Axis.in_layer(index, "ffn", self.width, sites=[GateSite(second, on="input")])
            axis.writers = [d for d in linear_dims(first, 0) if d.tensor in self.params]
            axis.readers = linear_dims(second, 1)
            axes.append(axis)
        return axes

    def is_encoder(self, name: str) -> bool:
        return name.startswith(self.prefix)

    def is_backbone(self, name: str) -> bool:
        base = self.model.base_model_prefix
        return self.model.base_model is self.model or name.startswith(f"{base}.")

    def attention_projections(self, layer: int) -> tuple[str, str, str]:
        raise UnsupportedModelError(
            "attention-relation distillation needs a family adapter to find the Q/K/V projections; "
            "set distill.attention_relation=0 for models on the generic path"
        )

    def kind_limits(self) -> dict[str, int]:
        return {"ffn": self.width}

    def _widths(self, sizes: Mapping[str, int]) -> set[int]:
        return {sizes[layer_axis_name(index, "ffn")] for index, *_ in self.layers}

    def is_stock_shape(self, sizes: Mapping[str, int]) -> bool:
        widths = self._widths(sizes)
        return len(widths) == 1 and min(widths) > 0

    def student_config(self, sizes: Mapping[str, int], stock: bool, kept: Mapping[str, torch.Tensor]) -> PretrainedConfig:
        self._require_stock(stock)
        config = copy.deepcopy(self.model.config)
        setattr(config, self.ffn_key, self._widths(sizes).pop())
        return config

    def student_class(self, stock: bool) -> type[PreTrainedModel]:
        self._require_stock(stock)
        return type(self.model)

    def _require_stock(self, stock: bool) -> None:
        if not stock:
            raise TargetError(
                "the generic path saves students with the teacher's stock config only: every layer must keep "
                "the same number of FFN units (> 0) and export.format must be auto or stock"
            )
