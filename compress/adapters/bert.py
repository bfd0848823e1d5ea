"""BERT family: axes of BertModel and its masked-LM, sequence and token classification heads."""

from __future__ import annotations

from collections.abc import Mapping

from transformers import BertConfig, PretrainedConfig, PreTrainedModel

from compress.adapters.layers import EncoderAdapter, LayerModules, add_layer_to_hidden, encoder_layer_axes, linear_dims
from compress.errors import UnsupportedModelError
from compress.students import modeling_compressed_bert as students
from reparam import Axis, GateSite, TensorDim


class BertAdapter(EncoderAdapter):
    family = "bert"
    students = students
    student_classes = {
        "BertModel": "CompressedBertModel",
        "BertForMaskedLM": "CompressedBertForMaskedLM",
        "BertForSequenceClassification": "CompressedBertForSequenceClassification",
        "BertForTokenClassification": "CompressedBertForTokenClassification",
    }

    def __init__(self, model: PreTrainedModel) -> None:
        super().__init__(model)
        if self.config.is_decoder or self.config.add_cross_attention:
            raise UnsupportedModelError(
                f"{type(model).__name__} is configured as a decoder (is_decoder / add_cross_attention); "
                "only bidirectional BERT encoders are supported: load it with is_decoder=False"
            )
        self.prefix = "" if type(model).__name__ == "BertModel" else "bert."
        self.base = model if not self.prefix else model.bert

    def _layer(self, i: int) -> str:
        return f"{self.prefix}encoder.layer.{i}"

    def layer_prefix(self, i: int) -> str:
        return f"{self._layer(i)}."

    def layer_modules(self, i: int) -> LayerModules:
        layer = self._layer(i)
        return LayerModules(
            *(f"{layer}.attention.self.{m}" for m in ("query", "key", "value")),
            attention_out=f"{layer}.attention.output.dense",
            ffn_in=f"{layer}.intermediate.dense",
            ffn_out=f"{layer}.output.dense",
        )

    def axes(self, head_width: bool = False) -> list[Axis]:
        cfg, p = self.config, self.prefix
        emb = f"{p}embeddings"
        hidden = Axis("hidden", "hidden", cfg.hidden_size)
        hidden.writers += [TensorDim(f"{emb}.{t}_embeddings.weight", 1) for t in ("word", "position", "token_type")]
        hidden.normalisers.append(f"{emb}.LayerNorm")
        hidden.sites.append(GateSite(f"{emb}.LayerNorm"))
        axes = [hidden]
        for i in range(cfg.num_hidden_layers):
            layer = self._layer(i)
            modules = self.layer_modules(i)
            norm1, norm2 = f"{layer}.attention.output.LayerNorm", f"{layer}.output.LayerNorm"
            axes += encoder_layer_axes(
                i, modules, cfg.num_attention_heads, self.head_dim, cfg.intermediate_size, head_width=head_width
            )
            add_layer_to_hidden(hidden, modules)
            hidden.normalisers += [norm1, norm2]
            hidden.sites += [GateSite(modules.attention_out), GateSite(norm1), GateSite(modules.ffn_out), GateSite(norm2)]
        self._head_dims(hidden)
        hidden.writers, hidden.readers = self.existing(hidden.writers), self.existing(hidden.readers)
        return axes

    def _head_dims(self, hidden: Axis) -> None:
        """Pooler, MLM transform and classifiers: what reads and writes the hidden axis outside the encoder."""
        if self.base.pooler is not None:
            pooler = f"{self.prefix}pooler.dense"
            hidden.writers += linear_dims(pooler, 0)
            hidden.readers += linear_dims(pooler, 1)
            # tanh follows the pooler, so its gate cannot fold into weights: pruned units just vanish.
            hidden.sites.append(GateSite(f"{self.prefix}pooler", binary=True))
        transform = "cls.predictions.transform"
        if f"{transform}.dense.weight" in self.params:
            hidden.writers += linear_dims(f"{transform}.dense", 0)
            hidden.readers += linear_dims(f"{transform}.dense", 1) + linear_dims("cls.predictions.decoder", 1)
            hidden.normalisers.append(f"{transform}.LayerNorm")
            hidden.sites.append(GateSite(f"{transform}.LayerNorm"))
        hidden.readers += linear_dims("classifier", 1)

    def is_encoder(self, name: str) -> bool:
        return name.startswith(f"{self.prefix}encoder.")

    def is_backbone(self, name: str) -> bool:
        return name.startswith((f"{self.prefix}embeddings.", f"{self.prefix}encoder."))

    def kind_limits(self) -> dict[str, int]:
        cfg = self.config
        return {
            "hidden": cfg.hidden_size,
            "heads": cfg.num_attention_heads,
            "head_width": self.head_dim,
            "ffn": cfg.intermediate_size,
            "attention": cfg.num_hidden_layers,
            "mlp": cfg.num_hidden_layers,
        }

    def _attention_shape(self, sizes: Mapping[str, int]) -> tuple[list[int], list[int]]:
        """Kept heads and head width per layer: the axis built (heads or head_width) shrinks one of the two."""
        n = self.config.num_hidden_layers
        if "layers.0.head_width" in sizes:
            return [self.config.num_attention_heads] * n, self.per_layer(sizes, "head_width")
        return self.per_layer(sizes, "heads"), [self.head_dim] * n

    def is_stock_shape(self, sizes: Mapping[str, int]) -> bool:
        heads, widths = self._attention_shape(sizes)
        ffn = self.per_layer(sizes, "ffn")
        sublayers = self.per_layer(sizes, "attention") + self.per_layer(sizes, "mlp")
        uniform = all(len(set(per_layer)) == 1 and min(per_layer) > 0 for per_layer in (heads, widths, ffn))
        # Stock BERT derives the head width from hidden / heads.
        return all(sublayers) and uniform and heads[0] * widths[0] == sizes["hidden"]

    def student_config(self, sizes: Mapping[str, int], stock: bool) -> PretrainedConfig:
        common = self.config.to_dict()
        for key in ("architectures", "auto_map", "transformers_version", "model_type", "_name_or_path"):
            common.pop(key, None)
        common["hidden_size"] = sizes["hidden"]
        heads, widths = self._attention_shape(sizes)
        if stock:
            common["num_attention_heads"] = heads[0]
            common["intermediate_size"] = sizes["layers.0.ffn"]
            return BertConfig(**common)
        for key in ("num_attention_heads", "intermediate_size"):
            common.pop(key)
        return students.CompressedBertConfig(
            layer_heads=heads,
            layer_head_size=widths,
            layer_intermediate_size=self.per_layer(sizes, "ffn"),
            layer_attention=[bool(n) for n in self.per_layer(sizes, "attention")],
            layer_mlp=[bool(n) for n in self.per_layer(sizes, "mlp")],
            **common,
        )

    def student_init_kwargs(self) -> dict:
        if type(self.model).__name__ == "BertModel":
            return {"add_pooling_layer": self.base.pooler is not None}
        return {}
