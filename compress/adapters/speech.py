"""HuBERT and wav2vec2: axes of the convolutional feature extractor and the transformer encoder.

The two families have the same modules under the same names (``feature_extractor.conv_layers``,
``feature_projection``, ``encoder.layers.{i}.attention`` / ``feed_forward``); they differ only in
their family name, their classes and their heterogeneous student config, which ``HubertAdapter``
and ``Wav2Vec2Adapter`` name. Encoder layers get their axes from ``compress.adapters.layers``, as
BERT's do.

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

from transformers import PretrainedConfig, PreTrainedModel

from compress.adapters.layers import EncoderAdapter, LayerModules, encoder_layer_axes, linear_dims
from compress.errors import TargetError, UnsupportedModelError
from compress.students import modeling_compressed_hubert as students
from reparam import Axis, GateSite, TensorDim

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

    def axes(self, head_width: bool = False) -> list[Axis]:
        self.refuse_head_width(head_width)
        cfg = self.config
        # The residual stream: never gated for speech (see the module docstring), so it names no tensors.
        axes = [Axis("hidden", "hidden", cfg.hidden_size)]
        axes += [self._conv_axis(j) for j in range(len(cfg.conv_dim))]
        for i in range(cfg.num_hidden_layers):
            modules = self.layer_modules(i)
            layer_axes = encoder_layer_axes(i, modules, cfg.num_attention_heads, self.head_dim, cfg.intermediate_size)
            if cfg.do_stable_layer_norm:
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
        if cfg.feat_extract_norm == "layer":
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

    def student_config(self, sizes: Mapping[str, int], stock: bool) -> PretrainedConfig:
        common = {k: v for k, v in self.config.to_dict().items() if k not in _META_KEYS}
        common["conv_dim"] = self._conv_dim(sizes)
        if stock:
            common["intermediate_size"] = sizes["layers.0.ffn"]
            return type(self.config)(**common)
        return self.compressed_config(
            layer_heads=self.per_layer(sizes, "heads"),
            layer_intermediate_size=self.per_layer(sizes, "ffn"),
            layer_attention=[bool(n) for n in self.per_layer(sizes, "attention")],
            layer_mlp=[bool(n) for n in self.per_layer(sizes, "mlp")],
            **common,
        )


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
