"""HuBERT, wav2vec2, data2vec-audio and WavLM: axes of the convolutional feature extractor and the encoder.

The families have the same modules under the same names (``feature_extractor.conv_layers``,
``feature_projection``, ``encoder.layers.{i}.attention`` / ``feed_forward``); they differ in their
family name, their classes and their heterogeneous student config, which each adapter names, and:

- data2vec-audio puts a LayerNorm after every conv (``layer`` extractors below, whatever the config
  says) and is post-LN only; its positional embedding is a stack of convolutions over the residual
  stream, which no axis slices (see below).
- WavLM's attention has a gated relative position bias per head (``WavLMAdapter``).

Encoder layers get their axes from ``compress.adapters.layers``, as BERT's do.

Conv channel gates (``conv.{j}``) and where they fold:

- ``group`` feature extractors normalise conv 0 with a GroupNorm of one group per channel: the gate
  multiplies the GroupNorm output and folds into its affine weight and bias, and slicing channels
  is exact because each channel is normalised on its own.
- ``layer`` feature extractors put a LayerNorm over channels after every conv: it becomes a masked
  LayerNorm over the kept channels, and the gate folds into its affine weight and bias.
- convs 1.. of a ``group`` extractor are conv -> GELU with no norm: a soft gate cannot pass through
  the GELU, so it multiplies the activation and folds into the reader, the next conv's input channels.
- the last conv is read by the feature projection's LayerNorm (over channels), which absorbs no
  per-channel scale. That LayerNorm is masked to the kept channels, and the gate (where no norm of
  the conv itself takes it) is a ``soft_in_training`` site: the soft value while training, so the
  gate learns, and the 0/1 mask in eval, so nothing has to fold. The fold then treats the kept
  values as 1 and is exact.

The residual stream (``hidden``) is not prunable here: the positional convolution is a grouped,
weight-normed conv whose groups would have to keep equal numbers of channels, which per-unit gates
do not guarantee. The recipe schema refuses ``hidden`` for speech families.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor
from transformers import PretrainedConfig, PreTrainedModel
from transformers.models.hubert.modeling_hubert import eager_attention_forward
from transformers.models.wavlm.modeling_wavlm import WavLMAttention

from compress.adapters.layers import EncoderAdapter, LayerModules, encoder_layer_axes, linear_dims
from compress.errors import TargetError, UnsupportedModelError
from compress.students import modeling_compressed_data2vec_audio as data2vec_students
from compress.students import modeling_compressed_hubert as students
from compress.students import modeling_compressed_wavlm as wavlm_students
from reparam import Axis, GateSite, TensorDim, layer_axis_name

#: Config entries that describe the saved object rather than the architecture.
_META_KEYS = (
    "architectures",
    "auto_map",
    "transformers_version",
    "model_type",
    "_name_or_path",
    "num_feat_extract_layers",
)


class SpeechAdapter(EncoderAdapter):
    """Axes of a HuBERT-style speech encoder (base model, CTC or sequence-classification head).

    ``model`` is the job's copy of the teacher: its LayerDrop is switched off (see ``__init__``).
    """

    students = students
    #: the heterogeneous config class of the family
    compressed_config: type[PretrainedConfig]

    def __init__(self, model: PreTrainedModel) -> None:
        super().__init__(model)
        self._check_supported()
        # Layer-to-layer distillation needs every layer's output, so LayerDrop (a fine-tuning regulariser)
        # is off in the gated copy and in the student it folds into; set config.layerdrop to fine-tune again.
        self.config.layerdrop = 0.0
        self.prefix = "" if model.base_model is model else f"{model.base_model_prefix}."

    def _check_supported(self) -> None:
        cfg, name = self.config, type(self.model).__name__
        if getattr(cfg, "add_adapter", False) or getattr(cfg, "adapter_attn_dim", None) is not None:
            raise UnsupportedModelError(
                f"{name} has adapter layers (add_adapter / adapter_attn_dim), which cannot be pruned; "
                "load the teacher without adapters (add_adapter=False, adapter_attn_dim=None)"
            )
        if getattr(cfg, "conv_pos_batch_norm", False):
            raise UnsupportedModelError(
                f"{name} uses conv_pos_batch_norm, which is not supported; use a teacher with a weight-normed "
                "positional convolution (conv_pos_batch_norm=False, the HuBERT / wav2vec2 default)"
            )

    @property
    def conv_norm(self) -> str:
        """``group`` (a GroupNorm after conv 0 only) or ``layer`` (a LayerNorm over channels after every conv)."""
        return self.config.feat_extract_norm

    @property
    def pre_ln(self) -> bool:
        """Whether encoder layers normalise their sublayers' inputs (``do_stable_layer_norm``) rather than outputs."""
        return self.config.do_stable_layer_norm

    # -- axes ----------------------------------------------------------------------------
    def _conv(self, j: int) -> str:
        return f"{self.prefix}feature_extractor.conv_layers.{j}"

    def layer_prefix(self, i: int) -> str:
        return f"{self.prefix}encoder.layers.{i}."

    def layer_modules(self, i: int) -> LayerModules:
        layer = self.layer_prefix(i).rstrip(".")
        return LayerModules(
            *(f"{layer}.attention.{m}_proj" for m in ("q", "k", "v")),
            attention_out=f"{layer}.attention.out_proj",
            ffn_in=f"{layer}.feed_forward.intermediate_dense",
            ffn_out=f"{layer}.feed_forward.output_dense",
        )

    def post_norms(self, i: int) -> tuple[str, str] | None:
        layer = self.layer_prefix(i).rstrip(".")
        return None if self.pre_ln else (f"{layer}.layer_norm", f"{layer}.final_layer_norm")

    def axes(self, head_width: bool = False) -> list[Axis]:
        self.refuse_head_width(head_width)
        cfg = self.config
        # The residual stream: never gated for speech (see the module docstring), so it names no tensors.
        axes = [Axis("hidden", "hidden", cfg.hidden_size)]
        axes += [self._conv_axis(j) for j in range(len(cfg.conv_dim))]
        for i in range(cfg.num_hidden_layers):
            modules = self.layer_modules(i)
            layer_axes = encoder_layer_axes(i, modules, cfg.num_attention_heads, self.head_dim, cfg.intermediate_size)
            if self.pre_ln:
                # Pre-LN: each sublayer's input LayerNorm goes with the sublayer.
                attention, _, mlp, _ = layer_axes
                layer = self.layer_prefix(i).rstrip(".")
                attention.owns += [f"{layer}.layer_norm.{t}" for t in ("weight", "bias")]
                mlp.owns += [f"{layer}.final_layer_norm.{t}" for t in ("weight", "bias")]
            axes += layer_axes
        return axes

    def _conv_axis(self, j: int) -> Axis:
        """Output channels of conv ``j``: its writers, norm, reader and gate site (see the module docstring)."""
        cfg, conv = self.config, self._conv(j)
        last = j == len(cfg.conv_dim) - 1
        projection = f"{self.prefix}feature_projection"
        reader_norm = last and getattr(cfg, "feat_proj_layer_norm", True)
        axis = Axis(f"conv.{j}", "conv", cfg.conv_dim[j])
        axis.writers = self.existing(linear_dims(f"{conv}.conv", 0))
        if last:
            axis.readers = linear_dims(f"{projection}.projection", 1)
            if reader_norm:
                axis.normalisers.append(f"{projection}.layer_norm")
        else:
            axis.readers = [TensorDim(f"{self._conv(j + 1)}.conv.weight", 1)]
        if self.conv_norm == "layer":
            axis.normalisers.append(f"{conv}.layer_norm")
            axis.sites.append(GateSite(f"{conv}.layer_norm"))
        elif j == 0:
            axis.writers += [TensorDim(f"{conv}.layer_norm.{t}", 0) for t in ("weight", "bias")]
            axis.sites.append(GateSite(f"{conv}.layer_norm", dim=1))
        elif not last:
            axis.sites.append(GateSite(f"{self._conv(j + 1)}.conv", on="input", dim=1))
        elif reader_norm:
            axis.sites.append(GateSite(conv, dim=1, binary=True, soft_in_training=True))
        else:
            axis.sites.append(GateSite(f"{projection}.projection", on="input"))
        return axis

    # -- size accounting -------------------------------------------------------------------
    def is_encoder(self, name: str) -> bool:
        """Every parameter of the base model counts, as in DPHuBERT; CTC / classifier heads do not."""
        return name.startswith(self.prefix)

    def is_backbone(self, name: str) -> bool:
        """The base model: here the same parameters as ``is_encoder``."""
        return self.is_encoder(name)

    def kind_limits(self) -> dict[str, int]:
        cfg = self.config
        return {
            "hidden": cfg.hidden_size,
            "conv": max(cfg.conv_dim),
            "heads": cfg.num_attention_heads,
            "ffn": cfg.intermediate_size,
            "attention": cfg.num_hidden_layers,
            "mlp": cfg.num_hidden_layers,
        }

    # -- student ---------------------------------------------------------------------------
    def _conv_dim(self, sizes: Mapping[str, int]) -> list[int]:
        conv_dim = [sizes[f"conv.{j}"] for j in range(len(self.config.conv_dim))]
        if 0 in conv_dim:
            raise TargetError(
                f"conv layer {conv_dim.index(0)} keeps no channel, so no signal reaches the encoder; "
                "lower the target sparsity or leave conv out of prune.axes"
            )
        return conv_dim

    def is_stock_shape(self, sizes: Mapping[str, int]) -> bool:
        heads, ffn = set(self.per_layer(sizes, "heads")), set(self.per_layer(sizes, "ffn"))
        sublayers = self.per_layer(sizes, "attention") + self.per_layer(sizes, "mlp")
        return all(sublayers) and heads == {self.config.num_attention_heads} and len(ffn) == 1 and min(ffn) > 0

    def student_config(self, sizes: Mapping[str, int], stock: bool, kept: Mapping[str, Tensor]) -> PretrainedConfig:
        common = {k: v for k, v in self.config.to_dict().items() if k not in _META_KEYS}
        common["conv_dim"] = self._conv_dim(sizes)
        if stock:
            common["intermediate_size"] = sizes["layers.0.ffn"]
            return type(self.config)(**common)
        return self.compressed_config(**self.per_layer_fields(sizes, kept), **common)

    def per_layer_fields(self, sizes: Mapping[str, int], kept: Mapping[str, Tensor]) -> dict[str, list]:
        """The heterogeneous config's per-layer entries for a student keeping ``sizes`` (``kept``: their indices)."""
        return {
            "layer_heads": self.per_layer(sizes, "heads"),
            "layer_intermediate_size": self.per_layer(sizes, "ffn"),
            "layer_attention": [bool(n) for n in self.per_layer(sizes, "attention")],
            "layer_mlp": [bool(n) for n in self.per_layer(sizes, "mlp")],
        }


class HubertAdapter(SpeechAdapter):
    family = "hubert"
    student_classes = {
        "HubertModel": "CompressedHubertModel",
        "HubertForCTC": "CompressedHubertForCTC",
        "HubertForSequenceClassification": "CompressedHubertForSequenceClassification",
    }
    compressed_config = students.CompressedHubertConfig


class Wav2Vec2Adapter(SpeechAdapter):
    family = "wav2vec2"
    student_classes = {
        "Wav2Vec2Model": "CompressedWav2Vec2Model",
        "Wav2Vec2ForCTC": "CompressedWav2Vec2ForCTC",
        "Wav2Vec2ForSequenceClassification": "CompressedWav2Vec2ForSequenceClassification",
    }
    compressed_config = students.CompressedWav2Vec2Config


class Data2VecAudioAdapter(SpeechAdapter):
    family = "data2vec-audio"
    students = data2vec_students
    student_classes = {
        "Data2VecAudioModel": "CompressedData2VecAudioModel",
        "Data2VecAudioForCTC": "CompressedData2VecAudioForCTC",
        "Data2VecAudioForSequenceClassification": "CompressedData2VecAudioForSequenceClassification",
    }
    compressed_config = data2vec_students.CompressedData2VecAudioConfig
    # Every conv has a LayerNorm over its channels, and the encoder is post-LN (the config names neither).
    conv_norm = "layer"
    pre_ln = False


class _ModuleCallWavLMAttention(WavLMAttention):
    """WavLM's attention computing what the stock one does, with its projections called as modules.

    The stock attention hands the projections' weights to ``torch.nn.functional.multi_head_attention_forward``,
    so hooks on them never run; here they do, and head and sublayer gates act at ``out_proj`` as in the other
    families. Same parameters, same outputs (attention weights averaged over heads, as the stock ones are).
    """

    def torch_multi_head_self_attention(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None, gated_position_bias: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch, length, _ = hidden_states.shape
        mask = gated_position_bias.view(batch, self.num_heads, length, length)
        if attention_mask is not None:
            mask = mask.masked_fill(attention_mask.ne(1)[:, None, None, :], float("-inf"))
        output, weights = students.project_and_attend(self, hidden_states, mask, eager_attention_forward)
        return output, weights.mean(dim=1, keepdim=True).expand_as(weights)


class WavLMAdapter(SpeechAdapter):
    """WavLM: the speech axes, with each layer's position-bias gate owned by its attention sublayer.

    Per-head tensors of the gated relative position bias (layer 0's table ``rel_attn_embed``, each layer's
    ``gru_rel_pos_const``) keep every teacher head in the student, which indexes them with the heads a layer
    keeps (``layer_head_index``, see ``compress.students.modeling_compressed_wavlm``), so heads are sliced
    only in the projections; the fold is exact because a kept head reads the same bias as in the teacher.
    """

    family = "wavlm"
    students = wavlm_students
    student_classes = {
        "WavLMModel": "CompressedWavLMModel",
        "WavLMForCTC": "CompressedWavLMForCTC",
        "WavLMForSequenceClassification": "CompressedWavLMForSequenceClassification",
    }
    compressed_config = wavlm_students.CompressedWavLMConfig

    def __init__(self, model: PreTrainedModel) -> None:
        super().__init__(model)
        for module in model.modules():
            if type(module) is WavLMAttention:
                module.__class__ = _ModuleCallWavLMAttention

    def axes(self, head_width: bool = False) -> list[Axis]:
        axes = super().axes(head_width)
        for axis in axes:
            if axis.kind == "attention":
                attention = f"{self.layer_prefix(axis.layer)}attention"
                axis.owns += [f"{attention}.gru_rel_pos_const"]
                axis.owns += [f"{attention}.gru_rel_pos_linear.{t}" for t in ("weight", "bias")]
        return axes

    def per_layer_fields(self, sizes: Mapping[str, int], kept: Mapping[str, Tensor]) -> dict[str, list]:
        # Each kept head reads its own slice of the layer input and column of the position table: which, not how many.
        heads = [kept[layer_axis_name(i, "heads")].tolist() for i in range(self.config.num_hidden_layers)]
        return {**super().per_layer_fields(sizes, kept), "layer_head_index": heads}
