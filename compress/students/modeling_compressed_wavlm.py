"""WavLM encoders whose transformer layers may each have a different size.

These are the per-layer encoders of ``modeling_compressed_hubert`` (the one file this imports; export copies both,
so ``trust_remote_code=True`` loads a student with only torch and transformers) plus WavLM's gated relative
position bias, which is per head:

- layer 0 holds the table ``rel_attn_embed`` (one column per head); the bias it gives is computed once, in layer 0,
  and passed on to every later layer, as in transformers' WavLM;
- each layer gates its heads' bias by ``gru_rel_pos_linear`` (shared by the heads) applied to the head's slice of
  the layer input, and a per-head constant ``gru_rel_pos_const``.

Head ``h`` of the teacher reads input dimensions ``h * head_dim`` to ``(h + 1) * head_dim - 1`` and column ``h``
of the table. A pruned layer keeps some of the teacher's heads, ``layer_head_index[i]`` says which, and each kept
head reads the same slice, table column and constant as in the teacher: the table and the constants keep one
entry per teacher head (a few numbers each), so every layer indexes them with its own heads. Layer 0's table
stays when layer 0's attention is removed (later layers need it): that layer's ``attention`` then holds only the
table.
"""

import torch
from torch import nn
from transformers import PretrainedConfig, WavLMConfig, WavLMForCTC, WavLMForSequenceClassification, WavLMModel
from transformers.models.wavlm import modeling_wavlm as wavlm

from .modeling_compressed_hubert import (
    _RECORD_OUTPUTS,
    CompressedSpeechAttention,
    CompressedSpeechEncoderLayer,
    _init_base,
    _init_classification_head,
    _init_ctc_head,
    _init_encoder,
    _per_layer_config,
)


def _head_index_lists(values, num_heads: int, num_layers: int) -> list[list[int]]:
    """``layer_head_index`` checked: per layer, distinct teacher head indices in ``[0, num_heads)``."""
    if (
        not isinstance(values, (list, tuple))
        or len(values) != num_layers
        or not all(
            isinstance(heads, (list, tuple))
            and len(set(heads)) == len(heads)
            and all(isinstance(h, int) and not isinstance(h, bool) and 0 <= h < num_heads for h in heads)
            for heads in values
        )
    ):
        raise ValueError(
            f"layer_head_index must be a list of {num_layers} lists (one per layer) of distinct head indices in "
            f"[0, {num_heads}), got {values!r}"
        )
    return [list(heads) for heads in values]


class CompressedWavLMConfig(_per_layer_config(WavLMConfig, "compressed_wavlm", "CompressedWavLMConfig")):
    """The per-layer WavLM config, plus ``layer_head_index``: the teacher heads each layer keeps.

    ``layer_heads`` follows from it (and must agree when both are given); without it layer ``i`` keeps the
    teacher's first ``layer_heads[i]`` heads.
    """

    layer_head_index: list[list[int]] | None = None

    def __post_init__(self, **kwargs):
        if self.layer_head_index is not None:
            index = _head_index_lists(self.layer_head_index, self.num_attention_heads, self.num_hidden_layers)
            heads = [len(kept) for kept in index]
            if self.layer_heads is not None and list(self.layer_heads) != heads:
                raise ValueError(
                    f"layer_heads {self.layer_heads} disagrees with layer_head_index {index} (which keeps {heads} "
                    "heads); give one of the two"
                )
            self.layer_heads, self.layer_head_index = heads, index
        super().__post_init__(**kwargs)
        if self.layer_head_index is None:
            self.layer_head_index = [list(range(n)) for n in self.layer_heads]



class _PositionTable:
    """Layer 0's relative position table, one column per teacher head, read as transformers' WavLM reads it."""

    compute_bias = wavlm.WavLMAttention.compute_bias
    _relative_positions_bucket = wavlm.WavLMAttention._relative_positions_bucket

    def _add_table(self, config: PretrainedConfig) -> None:
        self.num_buckets = config.num_buckets
        self.max_distance = config.max_bucket_distance
        self.rel_attn_embed = nn.Embedding(config.num_buckets, config.num_attention_heads)


class CompressedWavLMPositionTable(_PositionTable, nn.Module):
    """What stays of layer 0's attention when the sublayer is removed: the table the later layers read."""

    def __init__(self, config: PretrainedConfig) -> None:
        nn.Module.__init__(self)
        self._add_table(config)


class CompressedWavLMAttention(_PositionTable, CompressedSpeechAttention):
    """Self-attention over the teacher heads ``config.layer_head_index[index]``, with WavLM's gated position bias."""

    def __init__(self, config: PretrainedConfig, index: int) -> None:
        heads = list(config.layer_head_index[index])
        super().__init__(config, len(heads))
        self.head_index = heads
        self.gru_rel_pos_const = nn.Parameter(torch.ones(1, config.num_attention_heads, 1, 1))
        self.gru_rel_pos_linear = nn.Linear(self.head_dim, 8)
        if index == 0:
            self._add_table(config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_bias: torch.Tensor | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``attention_mask``: additive, over keys (batch, 1, 1, keys); ``position_bias``: every teacher head's bias."""
        if self.num_heads == 0:
            return super().forward(hidden_states, **kwargs)
        mask = self.gated_position_bias(hidden_states, position_bias)
        if attention_mask is not None:
            mask = mask + attention_mask
        return super().forward(hidden_states, mask, **kwargs)

    def gated_position_bias(self, hidden_states: torch.Tensor, position_bias: torch.Tensor) -> torch.Tensor:
        """Each kept head's bias (batch, heads, T, T), gated from that head's teacher slice of ``hidden_states``."""
        batch, length, _ = hidden_states.shape
        index = torch.as_tensor(self.head_index, device=hidden_states.device)
        slices = hidden_states.view(batch, length, -1, self.head_dim).index_select(2, index).transpose(1, 2)
        projected = self.gru_rel_pos_linear(slices).view(batch, self.num_heads, length, 2, 4).sum(-1)
        gate_a, gate_b = torch.sigmoid(projected).chunk(2, dim=-1)
        gate = gate_a * (gate_b * self.gru_rel_pos_const.index_select(1, index) - 1.0) + 2.0
        return gate * position_bias.index_select(0, index)


class CompressedWavLMEncoderLayer(CompressedSpeechEncoderLayer):
    """A per-layer encoder layer that takes and returns the position bias, as transformers' WavLM layers do."""

    def __init__(self, config: PretrainedConfig, index: int) -> None:
        super().__init__(config, index)
        if index == 0 and not self.has_attention:
            self.attention = CompressedWavLMPositionTable(config)

    def make_attention(self, config: PretrainedConfig, index: int) -> nn.Module:
        return CompressedWavLMAttention(config, index)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_bias: torch.Tensor | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``attention_mask``: (batch, frames), 1 where a frame is attended to; ``position_bias``: None in layer 0,
        which computes every teacher head's bias from its table and returns it for the later layers."""
        if position_bias is None:
            position_bias = self.attention.compute_bias(hidden_states.shape[1], hidden_states.shape[1])
        padding = None
        if attention_mask is not None:
            padded = attention_mask.ne(1)[:, None, None, :]
            padding = torch.zeros(padded.shape, dtype=hidden_states.dtype, device=hidden_states.device)
            padding = padding.masked_fill(padded, torch.finfo(hidden_states.dtype).min)
        hidden_states = super().forward(hidden_states, padding, position_bias=position_bias, **kwargs)
        return hidden_states, position_bias


class CompressedWavLMEncoder(wavlm.WavLMEncoder):
    """Post-LN encoder (the stock forward) with per-layer layers."""

    layer_class = CompressedWavLMEncoderLayer

    def __init__(self, config: PretrainedConfig, positional: type[nn.Module]) -> None:
        nn.Module.__init__(self)
        _init_encoder(self, config, positional)


class CompressedWavLMEncoderStableLayerNorm(wavlm.WavLMEncoderStableLayerNorm):
    """Pre-LN encoder (``do_stable_layer_norm``) with per-layer layers."""

    layer_class = CompressedWavLMEncoderLayer

    def __init__(self, config: PretrainedConfig, positional: type[nn.Module]) -> None:
        nn.Module.__init__(self)
        _init_encoder(self, config, positional)


#: the stock feature encoder, feature projection and positional convolution; the per-layer encoders
_PARTS = (wavlm.WavLMFeatureEncoder, wavlm.WavLMFeatureProjection, wavlm.WavLMPositionalConvEmbedding)
_ENCODERS = (CompressedWavLMEncoder, CompressedWavLMEncoderStableLayerNorm)


class CompressedWavLMModel(WavLMModel):
    config_class = CompressedWavLMConfig
    _can_record_outputs = _RECORD_OUTPUTS

    def __init__(self, config: CompressedWavLMConfig) -> None:
        wavlm.WavLMPreTrainedModel.__init__(self, config)
        _init_base(self, config, _PARTS, _ENCODERS)
        self.adapter = None
        self.post_init()


class CompressedWavLMForCTC(WavLMForCTC):
    config_class = CompressedWavLMConfig
    _can_record_outputs = _RECORD_OUTPUTS

    def __init__(self, config: CompressedWavLMConfig, target_lang: str | None = None) -> None:
        wavlm.WavLMPreTrainedModel.__init__(self, config)
        _init_ctc_head(self, config, CompressedWavLMModel, target_lang)
        self.post_init()


class CompressedWavLMForSequenceClassification(WavLMForSequenceClassification):
    config_class = CompressedWavLMConfig
    _can_record_outputs = _RECORD_OUTPUTS

    def __init__(self, config: CompressedWavLMConfig) -> None:
        wavlm.WavLMPreTrainedModel.__init__(self, config)
        _init_classification_head(self, config, CompressedWavLMModel)
        self.post_init()
