"""BERT-like text families: BERT, RoBERTa, XLM-RoBERTa, CamemBERT and ELECTRA, with their task heads.

Their encoder layers have the same module names (``encoder.layer.{i}.attention.self.query``, ...); the
families differ in the base model's name inside head models (``bert.``, ``roberta.``, ``electra.``), in
their heads' module names, and ELECTRA in its embeddings of their own width projected to the hidden
size. ``BertAdapter`` knows the layout; each other family is a subclass that only names its classes and heads.

Head modules around the hidden axis (``hidden``) come in three shapes, named per family:

- ``mlm_transform``: an MLM head's dense + LayerNorm, which write and read the hidden axis;
- ``squashing``: a head Linear of hidden width whose output goes through tanh / GELU (the pooler,
  RoBERTa's and ELECTRA's classification heads, ELECTRA's discriminator): it writes and reads the axis,
  and its pruned units are zeroed after it (``binary``), which the nonlinearity keeps at 0;
- ``readers``: Linears that read the axis (classifiers, QA, MLM decoders).
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor
from transformers import PretrainedConfig, PreTrainedModel

from compress.adapters.layers import EncoderAdapter, LayerModules, add_layer_to_hidden, encoder_layer_axes, linear_dims
from compress.errors import UnsupportedModelError
from compress.students import modeling_compressed_bert as students
from reparam import Axis, GateSite, TensorDim, layer_axis_name

_HEADS = ("Model", "ForMaskedLM", "ForSequenceClassification", "ForTokenClassification", "ForQuestionAnswering")


def head_classes(teacher: str, student: str, heads: tuple[str, ...] = _HEADS) -> dict[str, str]:
    """``{teacher class: student class}`` for each head, e.g. ``RobertaForMaskedLM -> CompressedRobertaForMaskedLM``."""
    return {f"{teacher}{head}": f"{student}{head}" for head in heads}


class BertAdapter(EncoderAdapter):
    family = "bert"
    students = students
    student_classes = head_classes("Bert", "CompressedBert")
    #: the heterogeneous config class of the family
    compressed_config: type[PretrainedConfig] = students.CompressedBertConfig
    mlm_transform: tuple[str, str] | None = ("cls.predictions.transform.dense", "cls.predictions.transform.LayerNorm")
    squashing: tuple[str, ...] = ()
    readers: tuple[str, ...] = ("cls.predictions.decoder", "classifier", "qa_outputs")

    def __init__(self, model: PreTrainedModel) -> None:
        super().__init__(model)
        if getattr(self.config, "is_decoder", False) or getattr(self.config, "add_cross_attention", False):
            raise UnsupportedModelError(
                f"{type(model).__name__} is configured as a decoder (is_decoder / add_cross_attention); "
                "only bidirectional encoders are supported: load it with is_decoder=False"
            )
        self.prefix = "" if model.base_model is model else f"{model.base_model_prefix}."

    @property
    def layout(self) -> dict[str, str]:
        """Where each part of a layer sits, shared with the family's students (``LAYER_LAYOUTS``)."""
        return students.LAYER_LAYOUTS[self.compressed_config.layer_layout]

    def _layer(self, i: int) -> str:
        return f"{self.prefix}{self.compressed_config.encoder_name}.layer.{i}"

    def layer_prefix(self, i: int) -> str:
        return f"{self._layer(i)}."

    @property
    def ffn_width(self) -> int:
        return self.config.intermediate_size

    def layer_modules(self, i: int) -> LayerModules:
        part = {name: f"{self._layer(i)}.{path}" for name, path in self.layout.items()}
        return LayerModules(
            part["query"], part["key"], part["value"],
            attention_out=part["attention_out"], ffn_in=part["ffn_in"], ffn_out=part["ffn_out"],
        )

    def layer_norms(self, i: int) -> tuple[str, str]:
        """The LayerNorms after layer ``i``'s attention and FFN sublayers (post-LN)."""
        return f"{self._layer(i)}.{self.layout['attention_norm']}", f"{self._layer(i)}.{self.layout['ffn_norm']}"

    def post_norms(self, i: int) -> tuple[str, str] | None:
        return self.layer_norms(i)

    @property
    def _projection(self) -> str | None:
        """ELECTRA's ``embeddings_project`` (embeddings narrower than the hidden size), when the model has one."""
        name = f"{self.prefix}embeddings_project"
        return name if f"{name}.weight" in self.params else None

    def axes(self, head_width: bool = False) -> list[Axis]:
        cfg = self.config
        hidden = Axis("hidden", "hidden", cfg.hidden_size)
        if self._projection:
            hidden.writers += linear_dims(self._projection, 0)
            hidden.sites.append(GateSite(self._projection))
        else:
            emb = f"{self.prefix}embeddings"
            hidden.writers += [TensorDim(f"{emb}.{t}_embeddings.weight", 1) for t in ("word", "position", "token_type")]
            hidden.normalisers.append(f"{emb}.LayerNorm")
            hidden.sites.append(GateSite(f"{emb}.LayerNorm"))
        axes = [hidden]
        for i in range(cfg.num_hidden_layers):
            modules = self.layer_modules(i)
            norm1, norm2 = self.layer_norms(i)
            axes += encoder_layer_axes(
                i, modules, cfg.num_attention_heads, self.head_dim, self.ffn_width, head_width=head_width
            )
            add_layer_to_hidden(hidden, modules)
            hidden.normalisers += [norm1, norm2]
            hidden.sites += [GateSite(modules.attention_out), GateSite(norm1), GateSite(modules.ffn_out), GateSite(norm2)]
        self._head_dims(hidden)
        hidden.writers, hidden.readers = self.existing(hidden.writers), self.existing(hidden.readers)
        return axes

    def _head_dims(self, hidden: Axis) -> None:
        """Pooler and task heads: what reads and writes the hidden axis outside the encoder (module docstring)."""
        for name in (f"{self.prefix}pooler.dense", *self.squashing):
            if f"{name}.weight" in self.params:
                hidden.writers += linear_dims(name, 0)
                hidden.readers += linear_dims(name, 1)
                # A nonlinearity follows, so the gate cannot fold into weights: pruned units just vanish.
                hidden.sites.append(GateSite(name, binary=True))
        if self.mlm_transform and f"{self.mlm_transform[0]}.weight" in self.params:
            dense, norm = self.mlm_transform
            hidden.writers += linear_dims(dense, 0)
            hidden.readers += linear_dims(dense, 1)
            hidden.normalisers.append(norm)
            hidden.sites.append(GateSite(norm))
        for name in self.readers:
            hidden.readers += linear_dims(name, 1)

    def is_encoder(self, name: str) -> bool:
        return name.startswith(f"{self.prefix}{self.compressed_config.encoder_name}.")

    def is_backbone(self, name: str) -> bool:
        return name.startswith((f"{self.prefix}embeddings", f"{self.prefix}{self.compressed_config.encoder_name}."))

    def kind_limits(self) -> dict[str, int]:
        cfg = self.config
        return {
            "hidden": cfg.hidden_size,
            "heads": cfg.num_attention_heads,
            "head_width": self.head_dim,
            "ffn": self.ffn_width,
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
        # Stock configs derive the head width from hidden / heads.
        return all(sublayers) and uniform and heads[0] * widths[0] == sizes["hidden"]

    def _teacher_entries(self) -> dict:
        """The teacher's config entries that describe the architecture (not the saved object)."""
        entries = self.config.to_dict()
        for key in ("architectures", "auto_map", "transformers_version", "model_type", "_name_or_path"):
            entries.pop(key, None)
        return entries

    def _common_config(self, sizes: Mapping[str, int]) -> dict:
        """The teacher's config entries with the kept hidden size, under BERT's key names."""
        return {**self._teacher_entries(), "hidden_size": sizes["hidden"]}

    def student_config(self, sizes: Mapping[str, int], stock: bool, kept: Mapping[str, Tensor]) -> PretrainedConfig:
        common = self._common_config(sizes)
        heads, widths = self._attention_shape(sizes)
        if stock:
            common["num_attention_heads"] = heads[0]
            common["intermediate_size"] = sizes["layers.0.ffn"]
            return type(self.config)(**common)
        for key in ("num_attention_heads", "intermediate_size"):
            common.pop(key, None)
        return self.compressed_config(
            layer_heads=heads,
            layer_head_size=widths,
            layer_intermediate_size=self.per_layer(sizes, "ffn"),
            layer_attention=[bool(n) for n in self.per_layer(sizes, "attention")],
            layer_mlp=[bool(n) for n in self.per_layer(sizes, "mlp")],
            **self.family_fields(kept),
            **common,
        )

    def family_fields(self, kept: Mapping[str, Tensor]) -> dict:
        """Entries of the family's heterogeneous config beyond the per-layer sizes (``kept``: indices per axis)."""
        return {}

    def student_init_kwargs(self) -> dict:
        if self.model.base_model is self.model and hasattr(self.model, "pooler"):
            return {"add_pooling_layer": self.model.pooler is not None}
        return {}


#: RoBERTa's head modules (``lm_head``, two-layer classifier) as (mlm_transform, squashing, readers)
ROBERTA_HEADS = (
    ("lm_head.dense", "lm_head.layer_norm"),
    ("classifier.dense",),
    ("lm_head.decoder", "classifier", "classifier.out_proj", "qa_outputs"),
)


class RobertaAdapter(BertAdapter):
    """RoBERTa: BERT's modules; positions count after the padding index; ``lm_head`` and a two-layer classifier."""

    family = "roberta"
    student_classes = head_classes("Roberta", "CompressedRoberta")
    compressed_config = students.CompressedRobertaConfig
    mlm_transform, squashing, readers = ROBERTA_HEADS


class XLMRobertaAdapter(RobertaAdapter):
    family = "xlm-roberta"
    student_classes = head_classes("XLMRoberta", "CompressedRoberta")


class CamembertAdapter(RobertaAdapter):
    family = "camembert"
    student_classes = head_classes("Camembert", "CompressedRoberta")


class ElectraAdapter(BertAdapter):
    """ELECTRA's discriminator (and generator MLM): BERT's layers, embeddings projected when narrower than hidden."""

    family = "electra"
    student_classes = head_classes("Electra", "CompressedElectra", (*_HEADS, "ForPreTraining"))
    compressed_config = students.CompressedElectraConfig
    mlm_transform = None
    squashing = ("classifier.dense", "discriminator_predictions.dense")
    readers = ("classifier", "classifier.out_proj", "discriminator_predictions.dense_prediction",
               "generator_predictions.dense", "qa_outputs")

    def is_stock_shape(self, sizes: Mapping[str, int]) -> bool:
        # Stock ELECTRA projects exactly when embedding_size != hidden_size.
        embedding_size = self.config.embedding_size if self._projection else sizes["hidden"]
        return super().is_stock_shape(sizes) and (embedding_size != sizes["hidden"]) == bool(self._projection)

    def _common_config(self, sizes: Mapping[str, int]) -> dict:
        common = super()._common_config(sizes)
        if not self._projection:  # the embeddings are the hidden axis's first writer: they shrink with it
            common["embedding_size"] = sizes["hidden"]
        return common

    def family_fields(self, kept: Mapping[str, Tensor]) -> dict:
        return {"project_embeddings": bool(self._projection)}


class DistilBertAdapter(BertAdapter):
    """DistilBERT: BERT's layer structure under its own names, no token types, its own config keys and heads."""

    family = "distilbert"
    student_classes = head_classes("DistilBert", "CompressedDistilBert")
    compressed_config = students.CompressedDistilBertConfig
    mlm_transform = ("vocab_transform", "vocab_layer_norm")
    squashing = ("pre_classifier",)  # ReLU follows it
    readers = ("vocab_projector", "classifier", "qa_outputs")
    #: DistilBERT's config keys for BERT's names (its attribute_map covers reading them, not writing a config)
    CONFIG_KEYS = {"hidden_size": "dim", "num_attention_heads": "n_heads", "num_hidden_layers": "n_layers",
                   "intermediate_size": "hidden_dim", "hidden_act": "activation", "hidden_dropout_prob": "dropout",
                   "attention_probs_dropout_prob": "attention_dropout"}

    @property
    def ffn_width(self) -> int:
        return self.config.hidden_dim

    def _common_config(self, sizes: Mapping[str, int]) -> dict:
        common = super()._common_config(sizes)
        for bert_key, own_key in self.CONFIG_KEYS.items():
            if own_key in common:
                common[bert_key] = common.pop(own_key)
        common.update(hidden_size=sizes["hidden"], layer_norm_eps=1e-12, type_vocab_size=0)
        return common

    def student_config(self, sizes: Mapping[str, int], stock: bool, kept: Mapping[str, Tensor]) -> PretrainedConfig:
        if not stock:
            return super().student_config(sizes, False, kept)
        heads, _ = self._attention_shape(sizes)
        own = {**self._teacher_entries(), "dim": sizes["hidden"], "n_heads": heads[0], "hidden_dim": sizes["layers.0.ffn"]}
        return type(self.config)(**own)


class MPNetAdapter(BertAdapter):
    """MPNet: BERT's layer structure under its own names, RoBERTa's positions and heads, a shared relative position bias.

    The bias table (buckets x heads) is shared by all layers, so it is not sliced: the heterogeneous
    student keeps it whole and each layer reads its kept heads' columns (``layer_head_index``). A stock
    MPNet can only express that when every layer keeps every head.
    """

    family = "mpnet"
    student_classes = head_classes("MPNet", "CompressedMPNet")
    compressed_config = students.CompressedMPNetConfig
    mlm_transform, squashing, readers = ROBERTA_HEADS  # MPNet's heads are RoBERTa's

    def is_stock_shape(self, sizes: Mapping[str, int]) -> bool:
        heads, _ = self._attention_shape(sizes)
        return super().is_stock_shape(sizes) and set(heads) == {self.config.num_attention_heads}

    def family_fields(self, kept: Mapping[str, Tensor]) -> dict:
        heads = self.config.num_attention_heads
        names = [layer_axis_name(i, "heads") for i in range(self.config.num_hidden_layers)]
        # With head_width axes every head stays: the layers read every column.
        index = [kept[name].tolist() if name in kept else list(range(heads)) for name in names]
        return {"relative_attention_heads": heads, "layer_head_index": index, "type_vocab_size": 0}  # no token types
