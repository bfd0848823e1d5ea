"""Axes of one transformer encoder layer, shared by every family (BERT, HuBERT, wav2vec2).

A layer has an attention sublayer (Q/K/V projections split into heads, an output projection) and
a feed-forward sublayer (an input and an output projection around the activation). Families differ
only in module names and in where their LayerNorms sit, which their adapters add to ``hidden``.
"""

from __future__ import annotations

import copy
from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType

import torch
import transformers
from transformers import PretrainedConfig, PreTrainedModel

from compress.adapters.base import FamilyAdapter
from reparam import Axis, GateSite, TensorDim, layer_axis_name


def linear_dims(name: str, dim: int) -> list[TensorDim]:
    """A Linear's weight dimension, plus its bias when that dimension is the output."""
    return [TensorDim(f"{name}.weight", dim)] + ([TensorDim(f"{name}.bias", 0)] if dim == 0 else [])


@dataclass(frozen=True)
class LayerModules:
    """Module names of one encoder layer's projections."""

    query: str
    key: str
    value: str
    attention_out: str
    ffn_in: str
    ffn_out: str

    @property
    def qkv(self) -> tuple[str, str, str]:
        return (self.query, self.key, self.value)


def encoder_layer_axes(
    index: int, modules: LayerModules, heads: int, head_dim: int, ffn: int, head_width: bool = False
) -> list[Axis]:
    """The ``attention``, ``heads`` (or ``head_width``), ``mlp`` and ``ffn`` axes of layer ``index``, parents first.

    Sublayer gates multiply the output projections' outputs (a removed sublayer adds nothing to the
    residual stream); head and FFN-unit gates multiply the output projections' inputs. With
    ``head_width`` the layer's heads all keep the same dimensions instead of whole heads being kept
    or removed (the two axes would lie on the same Q/K/V rows, so a layer has one or the other).
    """
    m = modules
    attention = Axis.in_layer(index, "attention", 1, sites=[GateSite(m.attention_out)])
    attention.owns = [f"{name}.{t}" for name in (*m.qkv, m.attention_out) for t in ("weight", "bias")]
    head_axis = (_head_width_axis if head_width else _heads_axis)(index, modules, heads, head_dim, attention.name)
    head_axis.writers = [d for name in m.qkv for d in linear_dims(name, 0)]
    head_axis.readers = linear_dims(m.attention_out, 1)
    mlp = Axis.in_layer(index, "mlp", 1, sites=[GateSite(m.ffn_out)])
    mlp.owns = [f"{name}.{t}" for name in (m.ffn_in, m.ffn_out) for t in ("weight", "bias")]
    ffn_axis = Axis.in_layer(index, "ffn", ffn, parent=mlp.name)
    ffn_axis.writers = linear_dims(m.ffn_in, 0)
    ffn_axis.readers = linear_dims(m.ffn_out, 1)
    ffn_axis.sites = [GateSite(m.ffn_out, on="input")]
    return [attention, head_axis, mlp, ffn_axis]


def _heads_axis(index: int, modules: LayerModules, heads: int, head_dim: int, parent: str) -> Axis:
    """Whole heads: unit h is rows h * head_dim .. (h + 1) * head_dim - 1; its gate scales the head's context."""
    return Axis.in_layer(
        index, "heads", heads, group=head_dim, parent=parent,
        sites=[GateSite(modules.attention_out, on="input")],
    )


def _head_width_axis(index: int, modules: LayerModules, heads: int, head_dim: int, parent: str) -> Axis:
    """Head width: unit j is dimension j of every head (row h * head_dim + j for each head h).

    The gate multiplies the Q, K and V outputs, so ``q . k`` sums over kept dimensions only and
    dropped value dimensions add nothing. Attention scales scores by ``1 / sqrt(width)``, so the
    query projection is the axis's ``dot_scaled`` tensor: the fold corrects the narrower student's scale in it.
    """
    return Axis.in_layer(
        index, "head_width", head_dim, copies=heads, parent=parent,
        sites=[GateSite(name) for name in modules.qkv],
        dot_scaled=[f"{modules.query}.weight", f"{modules.query}.bias"],
    )


def add_layer_to_hidden(hidden: Axis, modules: LayerModules) -> None:
    """Record the layer's projections that write (outputs) and read (inputs) the residual stream."""
    m = modules
    hidden.writers += linear_dims(m.attention_out, 0) + linear_dims(m.ffn_out, 0)
    hidden.readers += [d for name in (*m.qkv, m.ffn_in) for d in linear_dims(name, 1)]


class EncoderAdapter(FamilyAdapter):
    """What every adapter of a stack of attention + FFN layers shares: layer module names, sizes per layer, student classes."""

    #: the module holding the family's heterogeneous student classes
    students: ModuleType

    def __init__(self, model: PreTrainedModel) -> None:
        super().__init__(model)
        self.config = model.config
        self.head_dim = self.config.hidden_size // self.config.num_attention_heads
        self.params = {name for name, _ in model.named_parameters()} | set(model.state_dict())

    @abstractmethod
    def layer_modules(self, i: int) -> LayerModules:
        """Module names of layer ``i``'s projections."""

    @abstractmethod
    def layer_prefix(self, i: int) -> str:
        """The state-dict prefix of encoder layer ``i`` (``encoder.layer.3.``)."""

    def keep_layers(self, state: Mapping[str, torch.Tensor], kept: list[int]) -> dict[str, torch.Tensor]:
        """``state`` with the layers not in ``kept`` removed and the kept ones renumbered 0, 1, ... (layer drop)."""
        prefixes = {self.layer_prefix(i): i for i in range(self.config.num_hidden_layers)}
        renamed = {}
        for key, value in state.items():
            prefix = next((p for p in prefixes if key.startswith(p)), None)
            if prefix is None:
                renamed[key] = value
            elif prefixes[prefix] in kept:
                renamed[self.layer_prefix(kept.index(prefixes[prefix])) + key[len(prefix):]] = value
        return renamed

    def truncated_config(self, layers: int) -> PretrainedConfig:
        """The teacher's stock config with ``layers`` encoder layers."""
        config = copy.deepcopy(self.config)
        config.num_hidden_layers = layers
        return config

    def attention_projections(self, layer: int) -> tuple[str, str, str]:
        return self.layer_modules(layer).qkv

    def post_norms(self, i: int) -> tuple[str, str] | None:
        """The LayerNorms reading layer ``i``'s residual sums after attention and after the FFN (post-LN), else None."""
        return None

    def residual_sums(self, i: int) -> list[tuple[str, str]]:
        """Layer ``i``'s (output projection, module whose input is the residual sum it writes), attention first.

        Post-LN layers only (``post_norms``): there the LayerNorm after each sublayer reads the sum. Empty
        for pre-LN layers. ``compress.reconstruct`` refits the projections against these sums.
        """
        norms = self.post_norms(i)
        if norms is None:
            return []
        modules = self.layer_modules(i)
        return [(modules.attention_out, norms[0]), (modules.ffn_out, norms[1])]

    def existing(self, dims: list[TensorDim]) -> list[TensorDim]:
        """The dimensions whose tensors this model has (heads and poolers differ between classes)."""
        return [d for d in dims if d.tensor in self.params]

    def per_layer(self, sizes: Mapping[str, int], kind: str) -> list[int]:
        """Kept units of axis kind ``kind`` in each layer, in layer order."""
        return [sizes[layer_axis_name(i, kind)] for i in range(self.config.num_hidden_layers)]

    def student_class(self, stock: bool) -> type[PreTrainedModel]:
        name = type(self.model).__name__
        return getattr(transformers, name) if stock else getattr(self.students, self.student_classes[name])
