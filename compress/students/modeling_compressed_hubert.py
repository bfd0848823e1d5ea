"""HuBERT and wav2vec2 encoders whose transformer layers may each have a different size.

Structured pruning leaves every encoder layer with its own number of attention heads and feed-forward width, and
may remove a whole attention or feed-forward sublayer. Stock ``HubertModel`` / ``Wav2Vec2Model`` cannot express
that (per-layer conv widths they can: ``conv_dim`` is a list). The classes here are the stock ones with a
per-layer encoder: the feature extractor, feature projection, positional convolution, SpecAugment and every head
are transformers' own, and the encoder's submodule names match transformers' exactly, so a pruned state dict
loads with ``strict=True``.

``modeling_compressed_data2vec_audio`` and ``modeling_compressed_wavlm`` build on the per-layer layers and encoders
here (``make_attention``, ``layer_class``, the ``encoders`` of ``_init_base``).

The file is self-contained on purpose. It imports only ``torch`` and ``transformers`` so it can be copied alone
next to a checkpoint and loaded with ``AutoModel.from_pretrained(folder, trust_remote_code=True)`` where the
library that wrote it is not installed.
"""

import warnings
from collections.abc import Sequence

import torch
from torch import nn
from transformers import (
    HubertConfig,
    HubertForCTC,
    HubertForSequenceClassification,
    HubertModel,
    PretrainedConfig,
    PreTrainedModel,
    Wav2Vec2Config,
    Wav2Vec2ForCTC,
    Wav2Vec2ForSequenceClassification,
    Wav2Vec2Model,
)
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.hubert import modeling_hubert as hubert
from transformers.models.wav2vec2 import modeling_wav2vec2 as wav2vec2
from transformers.utils.output_capturing import OutputRecorder


def _size_list(name: str, values: Sequence[int] | None, default: int, num_layers: int) -> list[int]:
    """A per-layer list of sizes (``default`` everywhere when None); ValueError naming the field otherwise."""
    if values is None:
        return [default] * num_layers
    if (
        not isinstance(values, (list, tuple))
        or len(values) != num_layers
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values)
    ):
        raise ValueError(f"{name} must be a list of {num_layers} non-negative ints (one per layer), got {values!r}")
    return list(values)


def _flag_list(name: str, values: Sequence[bool] | None, num_layers: int) -> list[bool]:
    """A per-layer list of booleans (all True when None); ValueError naming the field otherwise."""
    if values is None:
        return [True] * num_layers
    if not isinstance(values, (list, tuple)) or len(values) != num_layers or not all(isinstance(v, bool) for v in values):
        raise ValueError(f"{name} must be a list of {num_layers} bools (one per layer), got {values!r}")
    return list(values)


def _per_layer_config(base: type[PretrainedConfig], model_type: str, name: str) -> type[PretrainedConfig]:
    """``base`` (the family's stock config) plus per-layer heads, FFN widths and sublayer flags.

    ``num_attention_heads`` stays the teacher's: it fixes the head width (``hidden_size // num_attention_heads``);
    ``layer_heads[i]`` says how many heads layer ``i`` has. ``intermediate_size`` is ignored in favour of
    ``layer_intermediate_size``. Sizes of a removed sublayer (``layer_attention[i]`` / ``layer_mlp[i]`` False)
    are ignored.
    """

    class Config(base):
        layer_heads: list[int] | None = None
        layer_intermediate_size: list[int] | None = None
        layer_attention: list[bool] | None = None
        layer_mlp: list[bool] | None = None

        def __post_init__(self, **kwargs):
            n = self.num_hidden_layers
            self.layer_heads = _size_list("layer_heads", self.layer_heads, self.num_attention_heads, n)
            self.layer_intermediate_size = _size_list(
                "layer_intermediate_size", self.layer_intermediate_size, self.intermediate_size, n
            )
            self.layer_attention = _flag_list("layer_attention", self.layer_attention, n)
            self.layer_mlp = _flag_list("layer_mlp", self.layer_mlp, n)
            if getattr(self, "add_adapter", False) or getattr(self, "adapter_attn_dim", None) is not None:
                raise ValueError(f"{name} does not support adapter layers; set add_adapter=False and adapter_attn_dim=None")
            super().__post_init__(**kwargs)

    Config.model_type = model_type
    Config.__name__ = Config.__qualname__ = name
    return Config


CompressedHubertConfig = _per_layer_config(HubertConfig, "compressed_hubert", "CompressedHubertConfig")
CompressedWav2Vec2Config = _per_layer_config(Wav2Vec2Config, "compressed_wav2vec2", "CompressedWav2Vec2Config")


def _linear(in_features: int, out_features: int) -> nn.Linear:
    """``nn.Linear`` that accepts a zero-sized side (every head or unit pruned) without torch's warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors is a no-op")
        return nn.Linear(in_features, out_features)


def _layer_norm(config: PretrainedConfig) -> nn.LayerNorm:
    return nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)


class CompressedSpeechAttention(nn.Module):
    """Self-attention with this layer's own number of heads (same head width as the teacher)."""

    def __init__(self, config: PretrainedConfig, num_heads: int) -> None:
        super().__init__()
        self.config = config
        self.num_heads = num_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.dropout = config.attention_dropout
        self.is_causal = False
        width = num_heads * self.head_dim
        self.k_proj = _linear(config.hidden_size, width)
        self.v_proj = _linear(config.hidden_size, width)
        self.q_proj = _linear(config.hidden_size, width)
        self.out_proj = _linear(width, config.hidden_size)

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.num_heads == 0:
            # Every head was pruned but the sublayer kept: it adds the output projection's bias.
            return self.out_proj(hidden_states.new_zeros(*hidden_states.shape[:-1], 0)), None
        attend = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, hubert.eager_attention_forward)
        return project_and_attend(self, hidden_states, attention_mask, attend, **kwargs)


def project_and_attend(
    module: nn.Module, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None, attend, **kwargs
) -> tuple[torch.Tensor, torch.Tensor]:
    """``module``'s Q/K/V projections, ``attend`` (an attention interface) over its heads, its output projection.

    Each projection is called as a module, so hooks on it see its input and output. ``module`` has
    ``q_proj`` / ``k_proj`` / ``v_proj`` / ``out_proj``, ``head_dim``, ``scaling`` and ``dropout``.
    """
    shape = (*hidden_states.shape[:-1], -1, module.head_dim)
    query = module.q_proj(hidden_states).view(shape).transpose(1, 2)
    key = module.k_proj(hidden_states).view(shape).transpose(1, 2)
    value = module.v_proj(hidden_states).view(shape).transpose(1, 2)
    context, weights = attend(
        module,
        query,
        key,
        value,
        attention_mask,
        dropout=module.dropout if module.training else 0.0,
        scaling=module.scaling,
        **kwargs,
    )
    return module.out_proj(context.reshape(*shape[:-2], -1).contiguous()), weights


class CompressedSpeechFeedForward(nn.Module):
    """The feed-forward sublayer with this layer's own intermediate width."""

    def __init__(self, config: PretrainedConfig, width: int) -> None:
        super().__init__()
        self.intermediate_dropout = nn.Dropout(config.activation_dropout)
        self.intermediate_dense = _linear(config.hidden_size, width)
        self.intermediate_act_fn = ACT2FN[config.hidden_act]
        self.output_dense = _linear(width, config.hidden_size)
        self.output_dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.intermediate_dropout(self.intermediate_act_fn(self.intermediate_dense(hidden_states)))
        return self.output_dropout(self.output_dense(hidden_states))


class CompressedSpeechEncoderLayer(GradientCheckpointingLayer):
    """One encoder layer, post-LN or pre-LN (``do_stable_layer_norm``), whose sublayers may be missing.

    Post-LN layers keep both LayerNorms when a sublayer is removed (they sit on the residual stream); a pre-LN
    sublayer's input LayerNorm goes with the sublayer. Families with their own attention override ``make_attention``.
    """

    def __init__(self, config: PretrainedConfig, index: int) -> None:
        super().__init__()
        self.stable = getattr(config, "do_stable_layer_norm", False)
        self.has_attention, has_mlp = config.layer_attention[index], config.layer_mlp[index]
        self.attention = self.make_attention(config, index) if self.has_attention else None
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.layer_norm = _layer_norm(config) if self.has_attention or not self.stable else None
        self.feed_forward = CompressedSpeechFeedForward(config, config.layer_intermediate_size[index]) if has_mlp else None
        self.final_layer_norm = _layer_norm(config) if has_mlp or not self.stable else None

    def make_attention(self, config: PretrainedConfig, index: int) -> nn.Module:
        """Layer ``index``'s attention sublayer."""
        return CompressedSpeechAttention(config, config.layer_heads[index])

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        if self.stable:
            if self.has_attention:
                attended, _ = self.attention(self.layer_norm(hidden_states), attention_mask=attention_mask, **kwargs)
                hidden_states = hidden_states + self.dropout(attended)
            if self.feed_forward is not None:
                hidden_states = hidden_states + self.feed_forward(self.final_layer_norm(hidden_states))
            return hidden_states
        if self.has_attention:
            attended, _ = self.attention(hidden_states, attention_mask=attention_mask, **kwargs)
            hidden_states = hidden_states + self.dropout(attended)
        hidden_states = self.layer_norm(hidden_states)
        if self.feed_forward is not None:
            hidden_states = hidden_states + self.feed_forward(hidden_states)
        return self.final_layer_norm(hidden_states)


def _init_encoder(encoder: nn.Module, config: PretrainedConfig, positional: type[nn.Module]) -> None:
    """The stock encoder's modules, with per-layer encoder layers."""
    encoder.config = config
    encoder.pos_conv_embed = positional(config)
    encoder.layer_norm = _layer_norm(config)
    encoder.dropout = nn.Dropout(config.hidden_dropout)
    encoder.layers = nn.ModuleList(encoder.layer_class(config, i) for i in range(config.num_hidden_layers))
    encoder.gradient_checkpointing = False


class CompressedSpeechEncoder(hubert.HubertEncoder):
    """Post-LN encoder (the stock forward, which is the same for HuBERT and wav2vec2) with per-layer layers."""

    layer_class = CompressedSpeechEncoderLayer

    def __init__(self, config: PretrainedConfig, positional: type[nn.Module]) -> None:
        nn.Module.__init__(self)
        _init_encoder(self, config, positional)


class CompressedSpeechEncoderStableLayerNorm(hubert.HubertEncoderStableLayerNorm):
    """Pre-LN encoder (``do_stable_layer_norm``) with per-layer layers."""

    layer_class = CompressedSpeechEncoderLayer

    def __init__(self, config: PretrainedConfig, positional: type[nn.Module]) -> None:
        nn.Module.__init__(self)
        _init_encoder(self, config, positional)


#: hidden states are recorded at the per-layer layers, as the stock models record theirs.
_RECORD_OUTPUTS = {
    "hidden_states": [CompressedSpeechEncoderLayer],
    "attentions": OutputRecorder(CompressedSpeechAttention, index=1, layer_name="encoder"),
}


#: each family's stock feature encoder, feature projection and positional convolution
_HUBERT_PARTS = (hubert.HubertFeatureEncoder, hubert.HubertFeatureProjection, hubert.HubertPositionalConvEmbedding)
_WAV2VEC2_PARTS = (
    wav2vec2.Wav2Vec2FeatureEncoder,
    wav2vec2.Wav2Vec2FeatureProjection,
    wav2vec2.Wav2Vec2PositionalConvEmbedding,
)


#: the per-layer encoders, post-LN and pre-LN (``do_stable_layer_norm``)
_ENCODERS = (CompressedSpeechEncoder, CompressedSpeechEncoderStableLayerNorm)


def _init_base(
    model: PreTrainedModel,
    config: PretrainedConfig,
    parts: tuple[type[nn.Module], ...],
    encoders: tuple[type[nn.Module], type[nn.Module]] = _ENCODERS,
) -> None:
    """The stock base model's modules (the family's ``parts``) with the per-layer encoder (one of ``encoders``)."""
    feature_encoder, feature_projection, positional = parts
    model.feature_extractor = feature_encoder(config)
    model.feature_projection = feature_projection(config)
    if config.mask_time_prob > 0.0 or config.mask_feature_prob > 0.0:
        model.masked_spec_embed = nn.Parameter(torch.empty(config.hidden_size).uniform_())
    post_ln, pre_ln = encoders
    model.encoder = (pre_ln if getattr(config, "do_stable_layer_norm", False) else post_ln)(config, positional)


def _init_ctc_head(model: PreTrainedModel, config: PretrainedConfig, base: type[PreTrainedModel], target_lang) -> None:
    setattr(model, model.base_model_prefix, base(config))
    model.dropout = nn.Dropout(config.final_dropout)
    model.target_lang = target_lang
    if config.vocab_size is None:
        raise ValueError(f"{type(model).__name__} needs config.vocab_size for its CTC head; set it in the config")
    model.lm_head = nn.Linear(config.hidden_size, config.vocab_size)


def _init_classification_head(model: PreTrainedModel, config: PretrainedConfig, base: type[PreTrainedModel]) -> None:
    setattr(model, model.base_model_prefix, base(config))
    if config.use_weighted_layer_sum:
        num_layers = config.num_hidden_layers + 1
        model.layer_weights = nn.Parameter(torch.ones(num_layers) / num_layers)
    model.projector = nn.Linear(config.hidden_size, config.classifier_proj_size)
    model.classifier = nn.Linear(config.classifier_proj_size, config.num_labels)


class CompressedHubertModel(HubertModel):
    config_class = CompressedHubertConfig
    _can_record_outputs = _RECORD_OUTPUTS

    def __init__(self, config: CompressedHubertConfig) -> None:
        hubert.HubertPreTrainedModel.__init__(self, config)
        _init_base(self, config, _HUBERT_PARTS)
        self.post_init()


class CompressedHubertForCTC(HubertForCTC):
    config_class = CompressedHubertConfig
    _can_record_outputs = _RECORD_OUTPUTS

    def __init__(self, config: CompressedHubertConfig, target_lang: str | None = None) -> None:
        hubert.HubertPreTrainedModel.__init__(self, config)
        _init_ctc_head(self, config, CompressedHubertModel, target_lang)
        self.post_init()


class CompressedHubertForSequenceClassification(HubertForSequenceClassification):
    config_class = CompressedHubertConfig
    _can_record_outputs = _RECORD_OUTPUTS

    def __init__(self, config: CompressedHubertConfig) -> None:
        hubert.HubertPreTrainedModel.__init__(self, config)
        _init_classification_head(self, config, CompressedHubertModel)
        self.post_init()


class CompressedWav2Vec2Model(Wav2Vec2Model):
    config_class = CompressedWav2Vec2Config
    _can_record_outputs = _RECORD_OUTPUTS

    def __init__(self, config: CompressedWav2Vec2Config) -> None:
        wav2vec2.Wav2Vec2PreTrainedModel.__init__(self, config)
        _init_base(self, config, _WAV2VEC2_PARTS)
        self.adapter = None
        self.post_init()


class CompressedWav2Vec2ForCTC(Wav2Vec2ForCTC):
    config_class = CompressedWav2Vec2Config
    _can_record_outputs = _RECORD_OUTPUTS

    def __init__(self, config: CompressedWav2Vec2Config, target_lang: str | None = None) -> None:
        wav2vec2.Wav2Vec2PreTrainedModel.__init__(self, config)
        _init_ctc_head(self, config, CompressedWav2Vec2Model, target_lang)
        self.post_init()


class CompressedWav2Vec2ForSequenceClassification(Wav2Vec2ForSequenceClassification):
    config_class = CompressedWav2Vec2Config
    _can_record_outputs = _RECORD_OUTPUTS

    def __init__(self, config: CompressedWav2Vec2Config) -> None:
        wav2vec2.Wav2Vec2PreTrainedModel.__init__(self, config)
        _init_classification_head(self, config, CompressedWav2Vec2Model)
        self.post_init()
