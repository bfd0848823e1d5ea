"""A BERT encoder whose layers may each have a different size.

Structured pruning leaves every layer with its own number of attention heads, head width and feed-forward
width, and may remove a whole attention or feed-forward sublayer. Stock ``BertModel`` cannot express that, so
this module defines a BERT twin whose submodule names match ``transformers``' BERT exactly: a BERT state dict
loads into the uniform configuration with ``strict=True``, and a pruned state dict loads into the matching
heterogeneous configuration.

The file is self-contained on purpose. It imports only ``torch``, the standard library and ``transformers``
so it can be copied alone next to a checkpoint and loaded with
``AutoModel.from_pretrained(folder, trust_remote_code=True)`` where this library is not installed.
"""

import math
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss
from transformers import PretrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutputWithPoolingAndCrossAttentions,
    MaskedLMOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from transformers.models.electra.modeling_electra import (
    ElectraClassificationHead,
    ElectraDiscriminatorPredictions,
    ElectraForPreTrainingOutput,
    ElectraGeneratorPredictions,
)
from transformers.models.mpnet.modeling_mpnet import MPNetClassificationHead, MPNetLMHead
from transformers.models.roberta.modeling_roberta import RobertaClassificationHead, RobertaLMHead
from transformers.utils import ModelOutput


class CompressedBertConfig(PretrainedConfig):
    """Configuration of a BERT encoder with per-layer sizes.

    The ``layer_*`` lists hold one entry per layer. Sizes of a removed sublayer (``layer_attention[i]`` or
    ``layer_mlp[i]`` False) are ignored. There are deliberately no ``num_attention_heads`` or
    ``intermediate_size`` attributes: generic ``transformers`` code assumes those are single ints.
    """

    model_type = "compressed_bert"
    #: BERT numbers positions 0, 1, ...; the RoBERTa family and MPNet count them after the padding index
    positions_from_padding = False
    #: that padding index, when it is not ``pad_token_id`` (MPNet's embeddings fix it at 1)
    position_padding_idx: int | None = None
    #: where each encoder layer's parts sit (``LAYER_LAYOUTS``) and the layer stack's name; DistilBERT has its own
    layer_layout = "bert"
    encoder_name = "encoder"

    def __init__(
        self,
        vocab_size: int = 30522,
        hidden_size: int = 768,
        num_hidden_layers: int = 12,
        layer_heads: list[int] | None = None,
        layer_head_size: list[int] | None = None,
        layer_intermediate_size: list[int] | None = None,
        layer_attention: list[bool] | None = None,
        layer_mlp: list[bool] | None = None,
        hidden_act: str = "gelu",
        hidden_dropout_prob: float = 0.1,
        attention_probs_dropout_prob: float = 0.1,
        max_position_embeddings: int = 512,
        type_vocab_size: int = 2,
        initializer_range: float = 0.02,
        layer_norm_eps: float = 1e-12,
        pad_token_id: int | None = 0,
        classifier_dropout: float | None = None,
        tie_word_embeddings: bool = True,
        **kwargs: Any,
    ) -> None:
        n = num_hidden_layers
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.layer_heads = _size_list("layer_heads", layer_heads, [12] * n, n)
        self.layer_head_size = _size_list("layer_head_size", layer_head_size, [hidden_size // 12] * n, n)
        self.layer_intermediate_size = _size_list(
            "layer_intermediate_size", layer_intermediate_size, [4 * hidden_size] * n, n
        )
        self.layer_attention = _flag_list("layer_attention", layer_attention, n)
        self.layer_mlp = _flag_list("layer_mlp", layer_mlp, n)
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.max_position_embeddings = max_position_embeddings
        self.type_vocab_size = type_vocab_size
        self.initializer_range = initializer_range
        self.layer_norm_eps = layer_norm_eps
        self.classifier_dropout = classifier_dropout
        # transformers 5 configs have no `tie_word_embeddings` by default, and without it the MLM decoder is not
        # tied to the word embeddings; BERT ties them, so it is an explicit field here.
        super().__init__(pad_token_id=pad_token_id, tie_word_embeddings=tie_word_embeddings, **kwargs)


def _size_list(name: str, values: Sequence[int] | None, default: list[int], num_layers: int) -> list[int]:
    """Validate a per-layer list of sizes (``default`` when None); raise ValueError naming the field."""
    if values is None:
        return default
    if (
        not isinstance(values, (list, tuple))
        or len(values) != num_layers
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values)
    ):
        raise ValueError(f"{name} must be a list of {num_layers} non-negative ints (one per layer), got {values!r}")
    return list(values)


def _flag_list(name: str, values: Sequence[bool] | None, num_layers: int) -> list[bool]:
    """Validate a per-layer list of booleans (all True when None); raise ValueError naming the field."""
    if values is None:
        return [True] * num_layers
    if (
        not isinstance(values, (list, tuple))
        or len(values) != num_layers
        or not all(isinstance(v, bool) for v in values)
    ):
        raise ValueError(f"{name} must be a list of {num_layers} bools (one per layer), got {values!r}")
    return list(values)


class CompressedRobertaConfig(CompressedBertConfig):
    """Per-layer sizes for the RoBERTa family (RoBERTa, XLM-RoBERTa, CamemBERT): BERT's modules, positions after padding."""

    model_type = "compressed_roberta"
    #: position ids count from ``pad_token_id + 1`` over non-padding tokens, as RoBERTa's embeddings do
    positions_from_padding = True

    # transformers 5 turns a config subclass without its own __init__ into a dataclass that skips ours.
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)


class CompressedElectraConfig(CompressedBertConfig):
    """Per-layer sizes for ELECTRA: BERT's layers, embeddings of their own width projected to the hidden size."""

    model_type = "compressed_electra"

    def __init__(self, embedding_size: int = 128, project_embeddings: bool = True, **kwargs: Any) -> None:
        # Stock ELECTRA infers the projection from ``embedding_size != hidden_size``; pruning the hidden size can
        # make the two equal while the teacher's projection stays, so the student says so explicitly.
        self.embedding_size = embedding_size
        self.project_embeddings = project_embeddings
        super().__init__(**kwargs)


class CompressedDistilBertConfig(CompressedBertConfig):
    """Per-layer sizes for DistilBERT: its own module names (``transformer.layer.{i}.attention.q_lin``, ...), no token types.

    Sizes use BERT's names (``hidden_size``, ``hidden_act``, ...); DistilBERT's head settings
    (``seq_classif_dropout``, ``qa_dropout``) ride along as extra attributes.
    """

    model_type = "compressed_distilbert"
    layer_layout = "distilbert"
    encoder_name = "transformer"

    # transformers 5 turns a config subclass without its own __init__ into a dataclass that skips ours.
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)


class CompressedMPNetConfig(CompressedBertConfig):
    """Per-layer sizes for MPNet: its module names, RoBERTa's positions, and a relative position bias per head.

    MPNet's encoder holds one bias table (``relative_attention_num_buckets`` x the teacher's heads) that
    every layer adds to its attention scores. The student keeps the table whole, and ``layer_head_index``
    lists, per layer, the teacher heads the layer kept, whose columns it reads.
    """

    model_type = "compressed_mpnet"
    layer_layout = "mpnet"
    positions_from_padding = True
    position_padding_idx = 1

    def __init__(
        self,
        relative_attention_num_buckets: int = 32,
        relative_attention_heads: int = 12,
        layer_head_index: list[list[int]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.relative_attention_num_buckets = relative_attention_num_buckets
        self.relative_attention_heads = relative_attention_heads
        if layer_head_index is None:
            layer_head_index = [list(range(n)) for n in self.layer_heads]
        valid = (
            isinstance(layer_head_index, list)
            and len(layer_head_index) == self.num_hidden_layers
            and all(
                isinstance(heads, list) and len(heads) == n and all(0 <= h < relative_attention_heads for h in heads)
                for heads, n in zip(layer_head_index, self.layer_heads)
            )
        )
        if not valid:
            raise ValueError(
                f"layer_head_index must list, for each of the {self.num_hidden_layers} layers, layer_heads[i] head "
                f"indices below relative_attention_heads={relative_attention_heads}; got {layer_head_index!r}"
            )
        self.layer_head_index = layer_head_index


def _linear(in_features: int, out_features: int) -> nn.Linear:
    """``nn.Linear`` that accepts a zero-sized side (a fully pruned layer) without torch's zero-element warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors is a no-op")
        return nn.Linear(in_features, out_features)


class CompressedBertEmbeddings(nn.Module):
    """Word + position + token-type embeddings, then LayerNorm and dropout, as in BERT.

    The width is ``embedding_size`` where the config has one (ELECTRA), else the hidden size. With
    ``positions_from_padding`` (RoBERTa) the positions of real tokens count from ``pad_token_id + 1`` and
    padding tokens take position ``pad_token_id``.
    """

    def __init__(self, config: CompressedBertConfig) -> None:
        super().__init__()
        width = getattr(config, "embedding_size", config.hidden_size)
        padding = config.pad_token_id if config.position_padding_idx is None else config.position_padding_idx
        self.padding_idx = padding if config.positions_from_padding else None
        self.word_embeddings = nn.Embedding(config.vocab_size, width, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, width, padding_idx=self.padding_idx)
        # DistilBERT has no token types (type_vocab_size 0): token_type_ids are then ignored.
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, width) if config.type_vocab_size else None
        self.LayerNorm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.register_buffer(
            "position_ids", torch.arange(config.max_position_embeddings).expand((1, -1)), persistent=False
        )

    def _positions(self, input_ids: torch.Tensor | None, length: int) -> torch.Tensor:
        if self.padding_idx is None:
            return self.position_ids[:, :length]
        if input_ids is None:  # embeddings given: no padding to see, so consecutive positions after it
            return self.position_ids[:, self.padding_idx + 1 : self.padding_idx + 1 + length]
        real = input_ids.ne(self.padding_idx).long()
        return torch.cumsum(real, dim=1) * real + self.padding_idx

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        input_shape = inputs_embeds.shape[:-1]
        if position_ids is None:
            position_ids = self._positions(input_ids, input_shape[1])
        embeddings = inputs_embeds + self.position_embeddings(position_ids)
        if self.token_type_embeddings is not None:
            if token_type_ids is None:
                token_type_ids = torch.zeros(input_shape, dtype=torch.long, device=inputs_embeds.device)
            embeddings = embeddings + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(embeddings))


#: Where each part of an encoder layer sits, per family: the students keep their teachers' module names,
#: so a teacher's state dict loads into the uniform configuration unchanged.
LAYER_LAYOUTS: dict[str, dict[str, str]] = {
    "bert": {
        "query": "attention.self.query",
        "key": "attention.self.key",
        "value": "attention.self.value",
        "attention_out": "attention.output.dense",
        "attention_norm": "attention.output.LayerNorm",
        "ffn_in": "intermediate.dense",
        "ffn_out": "output.dense",
        "ffn_norm": "output.LayerNorm",
    },
    "distilbert": {
        "query": "attention.q_lin",
        "key": "attention.k_lin",
        "value": "attention.v_lin",
        "attention_out": "attention.out_lin",
        "attention_norm": "sa_layer_norm",
        "ffn_in": "ffn.lin1",
        "ffn_out": "ffn.lin2",
        "ffn_norm": "output_layer_norm",
    },
    "mpnet": {
        "query": "attention.attn.q",
        "key": "attention.attn.k",
        "value": "attention.attn.v",
        "attention_out": "attention.attn.o",
        "attention_norm": "attention.LayerNorm",
        "ffn_in": "intermediate.dense",
        "ffn_out": "output.dense",
        "ffn_norm": "output.LayerNorm",
    },
}


def _place(root: nn.Module, path: str, module: nn.Module) -> None:
    """Register ``module`` at the dotted ``path`` under ``root``, creating empty containers on the way."""
    *parents, name = path.split(".")
    for part in parents:
        if not hasattr(root, part):
            root.add_module(part, nn.Module())
        root = getattr(root, part)
    root.add_module(name, module)


def _attend(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float,
    eager: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scaled dot-product attention over ``(batch, heads, seq, width)``; the probabilities too when ``eager``.

    ``attention_mask`` is additive (``(batch, 1, 1, seq)``); SDPA cannot return probabilities, so the eager
    path is used when they are requested.
    """
    scale = query.shape[-1] ** -0.5
    if not eager:
        context = nn.functional.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scale
        )
        return context, None
    scores = torch.matmul(query, key.transpose(-1, -2)) * scale
    if attention_mask is not None:
        scores = scores + attention_mask
    probs = nn.functional.dropout(scores.softmax(dim=-1), p=dropout)
    return torch.matmul(probs, value), probs


class CompressedBertLayer(GradientCheckpointingLayer):
    """One post-LN encoder layer with its own head count, head width and FFN width; either sublayer may be removed.

    Its parts sit where ``LAYER_LAYOUTS[config.layer_layout]`` says. A removed sublayer has no projections,
    only its LayerNorm, which still shapes the residual stream later layers were trained on: its output is
    ``LayerNorm(residual)``. A sublayer with zero heads or units keeps its output projection, whose bias is
    exactly what the fully pruned sublayer adds.

    Under activation checkpointing (``model.gradient_checkpointing_enable()``, or the Trainer's
    ``gradient_checkpointing``) the layer keeps only its input and runs its forward again in the backward
    pass; the encoder passes the hidden states positionally, as the reentrant checkpoint needs.
    """

    def __init__(self, config: CompressedBertConfig, layer_idx: int) -> None:
        super().__init__()
        self.layout = LAYER_LAYOUTS[config.layer_layout]
        self.has_attention, self.has_mlp = config.layer_attention[layer_idx], config.layer_mlp[layer_idx]
        self.num_heads, self.head_size = config.layer_heads[layer_idx], config.layer_head_size[layer_idx]
        width, ffn, hidden = self.num_heads * self.head_size, config.layer_intermediate_size[layer_idx], config.hidden_size
        if self.has_attention:
            for part in ("query", "key", "value"):
                _place(self, self.layout[part], _linear(hidden, width))
            _place(self, self.layout["attention_out"], _linear(width, hidden))
        if self.has_mlp:
            _place(self, self.layout["ffn_in"], _linear(hidden, ffn))
            _place(self, self.layout["ffn_out"], _linear(ffn, hidden))
        for part in ("attention_norm", "ffn_norm"):
            _place(self, self.layout[part], nn.LayerNorm(hidden, eps=config.layer_norm_eps))
        self.activation = ACT2FN[config.hidden_act]
        self.hidden_dropout = nn.Dropout(config.hidden_dropout_prob)
        self.attention_dropout = config.attention_probs_dropout_prob
        # MPNet: the teacher heads this layer kept, whose columns of the shared position bias it adds.
        heads = getattr(config, "layer_head_index", None)
        self.head_index = heads[layer_idx] if heads is not None else None

    def part(self, name: str) -> nn.Module:
        return self.get_submodule(self.layout[name])

    def _attention(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        eager: bool,
        position_bias: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The attention sublayer's contribution to the residual stream, and the probabilities when ``eager``.

        ``position_bias`` (MPNet) is the encoder's ``(1, teacher heads, seq, seq)`` bias; this layer adds
        its own heads' columns to the scores.
        """
        batch, seq, _ = hidden_states.shape
        if position_bias is not None:
            bias = position_bias[:, self.head_index]
            attention_mask = bias if attention_mask is None else bias + attention_mask
        if self.num_heads * self.head_size == 0:
            # Every head was pruned: nothing to attend with, and SDPA must not be called with zero heads.
            context = hidden_states.new_zeros(batch, seq, 0)
            probs = hidden_states.new_zeros(batch, 0, seq, seq) if eager else None
        else:
            def split_heads(x: torch.Tensor) -> torch.Tensor:
                return x.view(batch, seq, self.num_heads, self.head_size).transpose(1, 2)

            query, key, value = (split_heads(self.part(p)(hidden_states)) for p in ("query", "key", "value"))
            dropout = self.attention_dropout if self.training else 0.0
            context, probs = _attend(query, key, value, attention_mask, dropout, eager)
            context = context.transpose(1, 2).reshape(batch, seq, self.num_heads * self.head_size)
        return self.hidden_dropout(self.part("attention_out")(context)), probs

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        eager: bool,
        position_bias: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        probs = None
        if self.has_attention:
            update, probs = self._attention(hidden_states, attention_mask, eager, position_bias)
            hidden_states = hidden_states + update
        elif eager:
            batch, seq, _ = hidden_states.shape
            probs = hidden_states.new_zeros(batch, 0, seq, seq)
        hidden_states = self.part("attention_norm")(hidden_states)
        if self.has_mlp:
            expanded = self.activation(self.part("ffn_in")(hidden_states))
            hidden_states = hidden_states + self.hidden_dropout(self.part("ffn_out")(expanded))
        return self.part("ffn_norm")(hidden_states), probs


class CompressedBertEncoder(nn.Module):
    """The stack of heterogeneous layers, collecting per-layer hidden states and attentions on request."""

    def __init__(self, config: CompressedBertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(CompressedBertLayer(config, i) for i in range(config.num_hidden_layers))
        buckets = getattr(config, "relative_attention_num_buckets", None)
        if buckets:  # MPNet: one relative position bias table for all layers
            self.relative_attention_bias = nn.Embedding(buckets, config.relative_attention_heads)

    def position_bias(self, seq: int, device: torch.device) -> torch.Tensor:
        """MPNet's relative position bias ``(1, teacher heads, seq, seq)``.

        Relative distances (key position - query position) fall into half the buckets per direction:
        small distances get a bucket each, larger ones share buckets spaced logarithmically up to 128.
        """
        positions = torch.arange(seq, dtype=torch.long, device=device)
        distance = positions[None, :] - positions[:, None]
        half = self.relative_attention_bias.num_embeddings // 2
        exact, farthest = half // 2, 128
        backwards = -distance  # MPNet counts from the key to the query
        bucket = (backwards < 0).long() * half
        size = backwards.abs()
        scaled = torch.log(size.float().clamp(min=1) / exact) / math.log(farthest / exact) * (half - exact)
        far = (exact + scaled.long()).clamp(max=half - 1)
        bucket = bucket + torch.where(size < exact, size, far)
        return self.relative_attention_bias(bucket).permute(2, 0, 1).unsqueeze(0)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        eager: bool,
        output_attentions: bool,
        output_hidden_states: bool,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None, tuple[torch.Tensor, ...] | None]:
        all_hidden = [hidden_states]
        all_attentions = []
        bias = None
        if hasattr(self, "relative_attention_bias"):
            bias = self.position_bias(hidden_states.shape[1], hidden_states.device).to(hidden_states.dtype)
        for layer in self.layer:
            hidden_states, probs = layer(hidden_states, attention_mask, eager, bias)
            all_hidden.append(hidden_states)
            all_attentions.append(probs)
        return (
            hidden_states,
            tuple(all_hidden) if output_hidden_states else None,
            tuple(all_attentions) if output_attentions else None,
        )


class CompressedBertPooler(nn.Module):
    """BERT pooler: ``tanh(dense(first token))``."""

    def __init__(self, config: CompressedBertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.Tanh()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(hidden_states[:, 0]))


class CompressedBertPredictionHeadTransform(nn.Module):
    """MLM head transform: dense, activation, LayerNorm."""

    def __init__(self, config: CompressedBertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.transform_act_fn = ACT2FN[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.transform_act_fn(self.dense(hidden_states)))


class CompressedBertLMPredictionHead(nn.Module):
    """MLM decoder. ``decoder.weight`` and ``decoder.bias`` are tied to the word embeddings and ``bias``."""

    def __init__(self, config: CompressedBertConfig) -> None:
        super().__init__()
        self.transform = CompressedBertPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=True)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(hidden_states))


class CompressedBertOnlyMLMHead(nn.Module):
    """Container giving the MLM head BERT's ``cls.predictions`` parameter names."""

    def __init__(self, config: CompressedBertConfig) -> None:
        super().__init__()
        self.predictions = CompressedBertLMPredictionHead(config)

    def forward(self, sequence_output: torch.Tensor) -> torch.Tensor:
        return self.predictions(sequence_output)


class CompressedBertPreTrainedModel(PreTrainedModel):
    """Weight initialisation and loading glue shared by all compressed BERT models."""

    config_class = CompressedBertConfig
    base_model_prefix = "bert"
    _no_split_modules = ["CompressedBertEmbeddings", "CompressedBertLayer"]
    # Attention runs through SDPA unless eager is chosen (attn_implementation="eager" or output_attentions=True).
    _supports_sdpa = True
    # Each CompressedBertLayer is a GradientCheckpointingLayer.
    supports_gradient_checkpointing = True
    # The losses are means, not sums over `num_items_in_batch`, so Trainer must scale them for gradient accumulation.
    accepts_loss_kwargs = False

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Initialise one module as BERT does.

        transformers 5 calls this per module, both after ``__init__`` and in ``from_pretrained`` for whatever the
        checkpoint did not provide. The ``transformers.initialization`` functions skip tensors already loaded
        (flagged ``_is_hf_initialized``). Non-persistent buffers are never in a checkpoint and come out of
        ``from_pretrained`` uninitialised, so ``position_ids`` must be rebuilt here.
        """
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
            # The slice below loses the "already loaded" flag, so check it on the whole weight.
            if module.padding_idx is not None and not getattr(module.weight, "_is_hf_initialized", False):
                init.zeros_(module.weight[module.padding_idx])
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, CompressedBertLMPredictionHead):
            init.zeros_(module.bias)
        elif isinstance(module, CompressedBertEmbeddings):
            init.copy_(module.position_ids, torch.arange(module.position_ids.shape[-1]).expand((1, -1)))

    def _finish(self, output: ModelOutput, return_dict: bool | None) -> ModelOutput | tuple[torch.Tensor, ...]:
        """Return ``output``, or its tuple form when ``return_dict`` (default: ``config.return_dict``) is False."""
        return output if (self.config.return_dict if return_dict is None else return_dict) else output.to_tuple()


class CompressedBertModel(CompressedBertPreTrainedModel):
    """The bare heterogeneous BERT encoder, with an optional pooler."""

    def __init__(self, config: CompressedBertConfig, add_pooling_layer: bool = True) -> None:
        super().__init__(config)
        self.embeddings = CompressedBertEmbeddings(config)
        if getattr(config, "project_embeddings", False):  # ELECTRA: embeddings narrower than the hidden size
            self.embeddings_project = nn.Linear(config.embedding_size, config.hidden_size)
        self.add_module(config.encoder_name, CompressedBertEncoder(config))
        self.pooler = CompressedBertPooler(config) if add_pooling_layer else None
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings.word_embeddings = value

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPoolingAndCrossAttentions | tuple[torch.Tensor, ...]:
        """Encode a batch. ``attention_mask`` is 2-D (1 = token, 0 = padding); extra ``kwargs`` are ignored.

        ``hidden_states`` holds the embedding output then every layer's output. ``attentions`` holds one
        ``(batch, heads_i, seq, seq)`` tensor per layer, with zero heads for a layer without attention.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Specify exactly one of input_ids or inputs_embeds")
        if attention_mask is not None and attention_mask.dim() != 2:
            raise ValueError(f"attention_mask must be 2-D (batch, seq), got shape {tuple(attention_mask.shape)}")
        config = self.config
        output_attentions = config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = config.output_hidden_states if output_hidden_states is None else output_hidden_states

        embedding_output = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds)
        if hasattr(self, "embeddings_project"):
            embedding_output = self.embeddings_project(embedding_output)
        additive_mask = None
        if attention_mask is not None:
            # (batch, 1, 1, seq): 0 where attended, the most negative float where padded.
            keep = attention_mask[:, None, None, :].to(embedding_output.dtype)
            additive_mask = (1.0 - keep) * torch.finfo(embedding_output.dtype).min
        eager = bool(output_attentions) or config._attn_implementation == "eager"
        sequence_output, hidden_states, attentions = getattr(self, config.encoder_name)(
            embedding_output, additive_mask, eager, bool(output_attentions), bool(output_hidden_states)
        )
        output = BaseModelOutputWithPoolingAndCrossAttentions(
            last_hidden_state=sequence_output,
            pooler_output=self.pooler(sequence_output) if self.pooler is not None else None,
            hidden_states=hidden_states,
            attentions=attentions,
        )
        return self._finish(output, return_dict)


class CompressedRobertaPreTrainedModel(CompressedBertPreTrainedModel):
    """The RoBERTa family's config class and base-model name (``roberta.`` in the head models' state dicts)."""

    config_class = CompressedRobertaConfig
    base_model_prefix = "roberta"


class CompressedElectraPreTrainedModel(CompressedBertPreTrainedModel):
    """ELECTRA's config class and base-model name (``electra.`` in the head models' state dicts)."""

    config_class = CompressedElectraConfig
    base_model_prefix = "electra"


class CompressedRobertaModel(CompressedRobertaPreTrainedModel, CompressedBertModel):
    """The bare heterogeneous RoBERTa / XLM-RoBERTa / CamemBERT encoder."""


class CompressedElectraModel(CompressedElectraPreTrainedModel, CompressedBertModel):
    """The bare heterogeneous ELECTRA encoder (no pooler, as in ELECTRA)."""

    def __init__(self, config: CompressedElectraConfig, add_pooling_layer: bool = False) -> None:
        super().__init__(config, add_pooling_layer=add_pooling_layer)


class _CompressedTaskModel(CompressedBertPreTrainedModel):
    """A family's encoder, under its ``base_model_prefix``, with a task head on top.

    Subclasses name the encoder class (``base_class``), whether it keeps its pooler, build the head and
    turn the encoder's output into the task's output; ``forward`` is shared.
    """

    base_class: type[CompressedBertModel]
    pooled = False

    def __init__(self, config: CompressedBertConfig) -> None:
        super().__init__(config)
        setattr(self, self.base_model_prefix, self.base_class(config, add_pooling_layer=self.pooled))
        self._build_head(config)
        self.post_init()

    def _build_head(self, config: CompressedBertConfig) -> None:
        raise NotImplementedError

    def _task_output(self, outputs: BaseModelOutputWithPoolingAndCrossAttentions, **targets: Any) -> ModelOutput:
        raise NotImplementedError

    def _dropout(self, config: CompressedBertConfig) -> nn.Dropout:
        return nn.Dropout(config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        start_positions: torch.Tensor | None = None,
        end_positions: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> ModelOutput | tuple[torch.Tensor, ...]:
        """Encode, then the task head; the task loss when its targets (``labels`` or QA positions) are given."""
        outputs = self.base_model(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            **kwargs,
        )
        targets = {"labels": labels, "start_positions": start_positions, "end_positions": end_positions}
        output = self._task_output(outputs, attention_mask=attention_mask, **targets)
        return self._finish(output, return_dict)


class _MaskedLM(_CompressedTaskModel):
    """Token logits over the vocabulary; cross-entropy over ``labels`` (-100 ignored). ``decoder``: the output embedding."""

    decoder: str

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def get_output_embeddings(self) -> nn.Linear:
        return self.get_submodule(self.decoder)

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        parent, _, name = self.decoder.rpartition(".")
        setattr(self.get_submodule(parent), name, new_embeddings)

    def _task_output(self, outputs: BaseModelOutputWithPoolingAndCrossAttentions, labels: torch.Tensor | None = None, **_: Any) -> ModelOutput:
        logits = self._logits(outputs.last_hidden_state)
        loss = None if labels is None else CrossEntropyLoss()(logits.view(-1, self.config.vocab_size), labels.view(-1))
        return MaskedLMOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions)


class _SequenceClassification(_CompressedTaskModel):
    """Sequence logits; the loss follows ``config.problem_type``, inferred from the labels as BERT does."""

    def _logits(self, outputs: BaseModelOutputWithPoolingAndCrossAttentions) -> torch.Tensor:
        raise NotImplementedError

    def _task_output(self, outputs: BaseModelOutputWithPoolingAndCrossAttentions, labels: torch.Tensor | None = None, **_: Any) -> ModelOutput:
        logits = self._logits(outputs)
        loss = None if labels is None else self._loss(logits, labels)
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        config, labels_n = self.config, self.config.num_labels
        if config.problem_type is None:
            if labels_n == 1:
                config.problem_type = "regression"
            elif labels.dtype in (torch.long, torch.int):
                config.problem_type = "single_label_classification"
            else:
                config.problem_type = "multi_label_classification"
        if config.problem_type == "regression":
            return MSELoss()(logits.squeeze(), labels.squeeze()) if labels_n == 1 else MSELoss()(logits, labels)
        if config.problem_type == "single_label_classification":
            return CrossEntropyLoss()(logits.view(-1, labels_n), labels.view(-1))
        return BCEWithLogitsLoss()(logits, labels)


class _TokenClassification(_CompressedTaskModel):
    """Per-token logits (dropout, then ``classifier``); cross-entropy over ``labels`` (-100 ignored)."""

    def _build_head(self, config: CompressedBertConfig) -> None:
        self.num_labels = config.num_labels
        self.dropout = self._dropout(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)

    def _task_output(self, outputs: BaseModelOutputWithPoolingAndCrossAttentions, labels: torch.Tensor | None = None, **_: Any) -> ModelOutput:
        logits = self.classifier(self.dropout(outputs.last_hidden_state))
        loss = None if labels is None else CrossEntropyLoss()(logits.view(-1, self.num_labels), labels.view(-1))
        return TokenClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions)


class _QuestionAnswering(_CompressedTaskModel):
    """Span start and end logits (``qa_outputs``); the mean cross-entropy of both when positions are given."""

    def _build_head(self, config: CompressedBertConfig) -> None:
        self.qa_outputs = nn.Linear(config.hidden_size, config.num_labels)

    def _task_output(
        self,
        outputs: BaseModelOutputWithPoolingAndCrossAttentions,
        start_positions: torch.Tensor | None = None,
        end_positions: torch.Tensor | None = None,
        **_: Any,
    ) -> ModelOutput:
        start_logits, end_logits = self.qa_outputs(outputs.last_hidden_state).split(1, dim=-1)
        start_logits, end_logits = start_logits.squeeze(-1).contiguous(), end_logits.squeeze(-1).contiguous()
        loss = None
        if start_positions is not None and end_positions is not None:
            # Positions outside the sequence are ignored, as in transformers' QA heads.
            length = start_logits.size(1)
            ignored = CrossEntropyLoss(ignore_index=length)
            start = start_positions.view(-1).clamp(0, length)
            end = end_positions.view(-1).clamp(0, length)
            loss = (ignored(start_logits, start) + ignored(end_logits, end)) / 2
        return QuestionAnsweringModelOutput(
            loss=loss, start_logits=start_logits, end_logits=end_logits,
            hidden_states=outputs.hidden_states, attentions=outputs.attentions,
        )


# -- BERT -------------------------------------------------------------------------------------
class CompressedBertForMaskedLM(_MaskedLM):
    """Heterogeneous BERT with BERT's masked-language-modelling head (decoder tied to the word embeddings)."""

    base_class = CompressedBertModel
    decoder = "cls.predictions.decoder"
    # {target: source}, as transformers 5's BertForMaskedLM; applied only when config.tie_word_embeddings.
    _tied_weights_keys = {
        "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
        "cls.predictions.decoder.bias": "cls.predictions.bias",
    }

    def _build_head(self, config: CompressedBertConfig) -> None:
        self.cls = CompressedBertOnlyMLMHead(config)

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.cls(hidden)

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        super().set_output_embeddings(new_embeddings)
        self.cls.predictions.bias = new_embeddings.bias


class CompressedBertForSequenceClassification(_SequenceClassification):
    """Heterogeneous BERT with a classification / regression head on the pooled first token."""

    base_class = CompressedBertModel
    pooled = True

    def _build_head(self, config: CompressedBertConfig) -> None:
        self.num_labels = config.num_labels
        self.dropout = self._dropout(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)

    def _logits(self, outputs: BaseModelOutputWithPoolingAndCrossAttentions) -> torch.Tensor:
        return self.classifier(self.dropout(outputs.pooler_output))


class CompressedBertForTokenClassification(_TokenClassification):
    """Heterogeneous BERT with a per-token classification head."""

    base_class = CompressedBertModel


class CompressedBertForQuestionAnswering(_QuestionAnswering):
    """Heterogeneous BERT with an extractive question-answering head."""

    base_class = CompressedBertModel


# -- RoBERTa, XLM-RoBERTa, CamemBERT ---------------------------------------------------------------
class CompressedRobertaForMaskedLM(CompressedRobertaPreTrainedModel, _MaskedLM):
    """Heterogeneous RoBERTa with RoBERTa's ``lm_head`` (decoder tied to the word embeddings)."""

    base_class = CompressedRobertaModel
    decoder = "lm_head.decoder"
    _tied_weights_keys = {
        "lm_head.decoder.weight": "roberta.embeddings.word_embeddings.weight",
        "lm_head.decoder.bias": "lm_head.bias",
    }

    def _build_head(self, config: CompressedRobertaConfig) -> None:
        self.lm_head = RobertaLMHead(config)

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden)


class CompressedRobertaForSequenceClassification(CompressedRobertaPreTrainedModel, _SequenceClassification):
    """Heterogeneous RoBERTa with RoBERTa's classification head on the first token (dense, tanh, out_proj)."""

    base_class = CompressedRobertaModel

    def _build_head(self, config: CompressedRobertaConfig) -> None:
        self.num_labels = config.num_labels
        self.classifier = RobertaClassificationHead(config)

    def _logits(self, outputs: BaseModelOutputWithPoolingAndCrossAttentions) -> torch.Tensor:
        return self.classifier(outputs.last_hidden_state)


class CompressedRobertaForTokenClassification(CompressedRobertaPreTrainedModel, _TokenClassification):
    """Heterogeneous RoBERTa with a per-token classification head."""

    base_class = CompressedRobertaModel


class CompressedRobertaForQuestionAnswering(CompressedRobertaPreTrainedModel, _QuestionAnswering):
    """Heterogeneous RoBERTa with an extractive question-answering head."""

    base_class = CompressedRobertaModel


# -- ELECTRA (discriminator) ------------------------------------------------------------------------
class CompressedElectraForPreTraining(CompressedElectraPreTrainedModel, _CompressedTaskModel):
    """Heterogeneous ELECTRA discriminator: a replaced-token logit per token; BCE over real tokens when labelled."""

    base_class = CompressedElectraModel

    def _build_head(self, config: CompressedElectraConfig) -> None:
        self.discriminator_predictions = ElectraDiscriminatorPredictions(config)

    def _task_output(
        self,
        outputs: BaseModelOutputWithPoolingAndCrossAttentions,
        labels: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        **_: Any,
    ) -> ModelOutput:
        logits = self.discriminator_predictions(outputs.last_hidden_state)
        loss = None
        if labels is not None:
            real = slice(None) if attention_mask is None else attention_mask.view(-1) == 1
            loss = BCEWithLogitsLoss()(logits.view(-1)[real], labels.view(-1)[real].float())
        return ElectraForPreTrainingOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class CompressedElectraForMaskedLM(CompressedElectraPreTrainedModel, _MaskedLM):
    """Heterogeneous ELECTRA generator head: hidden -> embedding width -> vocabulary (tied to the word embeddings)."""

    base_class = CompressedElectraModel
    decoder = "generator_lm_head"
    _tied_weights_keys = {"generator_lm_head.weight": "electra.embeddings.word_embeddings.weight"}

    def _build_head(self, config: CompressedElectraConfig) -> None:
        self.generator_predictions = ElectraGeneratorPredictions(config)
        self.generator_lm_head = nn.Linear(config.embedding_size, config.vocab_size)

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.generator_lm_head(self.generator_predictions(hidden))


class CompressedElectraForSequenceClassification(CompressedElectraPreTrainedModel, _SequenceClassification):
    """Heterogeneous ELECTRA with ELECTRA's classification head on the first token (dense, GELU, out_proj)."""

    base_class = CompressedElectraModel

    def _build_head(self, config: CompressedElectraConfig) -> None:
        self.num_labels = config.num_labels
        self.classifier = ElectraClassificationHead(config)

    def _logits(self, outputs: BaseModelOutputWithPoolingAndCrossAttentions) -> torch.Tensor:
        return self.classifier(outputs.last_hidden_state)


class CompressedElectraForTokenClassification(CompressedElectraPreTrainedModel, _TokenClassification):
    """Heterogeneous ELECTRA with a per-token classification head."""

    base_class = CompressedElectraModel


class CompressedElectraForQuestionAnswering(CompressedElectraPreTrainedModel, _QuestionAnswering):
    """Heterogeneous ELECTRA with an extractive question-answering head."""

    base_class = CompressedElectraModel


# -- DistilBERT -------------------------------------------------------------------------------------
class CompressedDistilBertPreTrainedModel(CompressedBertPreTrainedModel):
    """DistilBERT's config class and base-model name (``distilbert.`` in the head models' state dicts)."""

    config_class = CompressedDistilBertConfig
    base_model_prefix = "distilbert"


class CompressedDistilBertModel(CompressedDistilBertPreTrainedModel, CompressedBertModel):
    """The bare heterogeneous DistilBERT encoder (no pooler, as in DistilBERT)."""

    def __init__(self, config: CompressedDistilBertConfig, add_pooling_layer: bool = False) -> None:
        super().__init__(config, add_pooling_layer=add_pooling_layer)


class CompressedDistilBertForMaskedLM(CompressedDistilBertPreTrainedModel, _MaskedLM):
    """Heterogeneous DistilBERT with its MLM head (transform, activation, LayerNorm, projector tied to the embeddings)."""

    base_class = CompressedDistilBertModel
    decoder = "vocab_projector"
    _tied_weights_keys = {"vocab_projector.weight": "distilbert.embeddings.word_embeddings.weight"}

    def _build_head(self, config: CompressedDistilBertConfig) -> None:
        self.vocab_transform = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = ACT2FN[config.hidden_act]
        self.vocab_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.vocab_projector = nn.Linear(config.hidden_size, config.vocab_size)

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.vocab_projector(self.vocab_layer_norm(self.activation(self.vocab_transform(hidden))))


class CompressedDistilBertForSequenceClassification(CompressedDistilBertPreTrainedModel, _SequenceClassification):
    """Heterogeneous DistilBERT with its classifier on the first token (pre_classifier, ReLU, dropout, classifier)."""

    base_class = CompressedDistilBertModel

    def _build_head(self, config: CompressedDistilBertConfig) -> None:
        self.num_labels = config.num_labels
        self.pre_classifier = nn.Linear(config.hidden_size, config.hidden_size)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.dropout = nn.Dropout(getattr(config, "seq_classif_dropout", config.hidden_dropout_prob))

    def _logits(self, outputs: BaseModelOutputWithPoolingAndCrossAttentions) -> torch.Tensor:
        pooled = nn.functional.relu(self.pre_classifier(outputs.last_hidden_state[:, 0]))
        return self.classifier(self.dropout(pooled))


class CompressedDistilBertForTokenClassification(CompressedDistilBertPreTrainedModel, _TokenClassification):
    """Heterogeneous DistilBERT with a per-token classification head."""

    base_class = CompressedDistilBertModel


class CompressedDistilBertForQuestionAnswering(CompressedDistilBertPreTrainedModel, _QuestionAnswering):
    """Heterogeneous DistilBERT with an extractive question-answering head."""

    base_class = CompressedDistilBertModel


# -- MPNet ------------------------------------------------------------------------------------------
class CompressedMPNetPreTrainedModel(CompressedBertPreTrainedModel):
    """MPNet's config class and base-model name (``mpnet.`` in the head models' state dicts)."""

    config_class = CompressedMPNetConfig
    base_model_prefix = "mpnet"


class CompressedMPNetModel(CompressedMPNetPreTrainedModel, CompressedBertModel):
    """The bare heterogeneous MPNet encoder, with an optional pooler."""


class CompressedMPNetForMaskedLM(CompressedMPNetPreTrainedModel, _MaskedLM):
    """Heterogeneous MPNet with MPNet's ``lm_head`` (decoder tied to the word embeddings)."""

    base_class = CompressedMPNetModel
    decoder = "lm_head.decoder"
    _tied_weights_keys = {
        "lm_head.decoder.weight": "mpnet.embeddings.word_embeddings.weight",
        "lm_head.decoder.bias": "lm_head.bias",
    }

    def _build_head(self, config: CompressedMPNetConfig) -> None:
        self.lm_head = MPNetLMHead(config)

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden)


class CompressedMPNetForSequenceClassification(CompressedMPNetPreTrainedModel, _SequenceClassification):
    """Heterogeneous MPNet with MPNet's classification head on the first token (dense, tanh, out_proj)."""

    base_class = CompressedMPNetModel

    def _build_head(self, config: CompressedMPNetConfig) -> None:
        self.num_labels = config.num_labels
        self.classifier = MPNetClassificationHead(config)

    def _logits(self, outputs: BaseModelOutputWithPoolingAndCrossAttentions) -> torch.Tensor:
        return self.classifier(outputs.last_hidden_state)


class CompressedMPNetForTokenClassification(CompressedMPNetPreTrainedModel, _TokenClassification):
    """Heterogeneous MPNet with a per-token classification head."""

    base_class = CompressedMPNetModel


class CompressedMPNetForQuestionAnswering(CompressedMPNetPreTrainedModel, _QuestionAnswering):
    """Heterogeneous MPNet with an extractive question-answering head."""

    base_class = CompressedMPNetModel
