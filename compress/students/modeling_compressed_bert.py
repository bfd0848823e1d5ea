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

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss
from transformers import PretrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_outputs import (
    BaseModelOutputWithPoolingAndCrossAttentions,
    MaskedLMOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from transformers.utils import ModelOutput


class CompressedBertConfig(PretrainedConfig):
    """Configuration of a BERT encoder with per-layer sizes.

    The ``layer_*`` lists hold one entry per layer. Sizes of a removed sublayer (``layer_attention[i]`` or
    ``layer_mlp[i]`` False) are ignored. There are deliberately no ``num_attention_heads`` or
    ``intermediate_size`` attributes: generic ``transformers`` code assumes those are single ints.
    """

    model_type = "compressed_bert"

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


def _linear(in_features: int, out_features: int) -> nn.Linear:
    """``nn.Linear`` that accepts a zero-sized side (a fully pruned layer) without torch's zero-element warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors is a no-op")
        return nn.Linear(in_features, out_features)


class CompressedBertEmbeddings(nn.Module):
    """Word + position + token-type embeddings, then LayerNorm and dropout, as in BERT."""

    def __init__(self, config: CompressedBertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.register_buffer(
            "position_ids", torch.arange(config.max_position_embeddings).expand((1, -1)), persistent=False
        )

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
            position_ids = self.position_ids[:, : input_shape[1]]
        if token_type_ids is None:
            token_type_ids = torch.zeros(input_shape, dtype=torch.long, device=inputs_embeds.device)
        embeddings = inputs_embeds + self.token_type_embeddings(token_type_ids)
        embeddings = embeddings + self.position_embeddings(position_ids)
        return self.dropout(self.LayerNorm(embeddings))


class CompressedBertSelfAttention(nn.Module):
    """Multi-head self-attention with this layer's own head count and head width."""

    def __init__(self, config: CompressedBertConfig, num_heads: int, head_size: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_size = head_size
        width = num_heads * head_size
        self.query = _linear(config.hidden_size, width)
        self.key = _linear(config.hidden_size, width)
        self.value = _linear(config.hidden_size, width)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None, eager: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return the context ``(batch, seq, heads * head_size)`` and, when ``eager``, the attention probabilities.

        ``attention_mask`` is additive, shaped ``(batch, 1, 1, seq)``. SDPA cannot return probabilities, so the
        eager path is used when they are requested.
        """
        batch, seq, _ = hidden_states.shape
        if self.num_heads * self.head_size == 0:
            # Every head was pruned: nothing to attend with, and SDPA must not be called with zero heads.
            context = hidden_states.new_zeros(batch, seq, 0)
            return context, hidden_states.new_zeros(batch, 0, seq, seq) if eager else None

        def split_heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, seq, self.num_heads, self.head_size).transpose(1, 2)

        query = split_heads(self.query(hidden_states))
        key = split_heads(self.key(hidden_states))
        value = split_heads(self.value(hidden_states))
        scale = self.head_size**-0.5
        if eager:
            scores = torch.matmul(query, key.transpose(-1, -2)) * scale
            if attention_mask is not None:
                scores = scores + attention_mask
            probs = self.dropout(scores.softmax(dim=-1))
            context = torch.matmul(probs, value)
        else:
            probs = None
            context = nn.functional.scaled_dot_product_attention(
                query,
                key,
                value,
                attn_mask=attention_mask,
                dropout_p=self.dropout.p if self.training else 0.0,
                scale=scale,
            )
        return context.transpose(1, 2).reshape(batch, seq, self.num_heads * self.head_size), probs


class CompressedBertResidualOutput(nn.Module):
    """Post-LN residual block output: ``LayerNorm(residual + dropout(dense(x)))``.

    Used for both ``attention.output`` and the feed-forward ``output``. When the sublayer was removed there is
    no ``dense`` and the result is ``LayerNorm(residual)``: the LayerNorm is kept because it still shapes the
    residual stream that later layers were trained on.
    """

    def __init__(self, config: CompressedBertConfig, in_features: int, present: bool) -> None:
        super().__init__()
        self.dense = _linear(in_features, config.hidden_size) if present else None
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor | None, residual: torch.Tensor) -> torch.Tensor:
        if self.dense is None:
            return self.LayerNorm(residual)
        # A zero-width input gives dense(x) == dense.bias, which is exactly what a fully pruned sublayer adds.
        return self.LayerNorm(residual + self.dropout(self.dense(hidden_states)))


class CompressedBertAttention(nn.Module):
    """Self-attention sublayer; ``self`` is None when the layer's attention was removed."""

    def __init__(self, config: CompressedBertConfig, layer_idx: int) -> None:
        super().__init__()
        present = config.layer_attention[layer_idx]
        heads, head_size = config.layer_heads[layer_idx], config.layer_head_size[layer_idx]
        self.self = CompressedBertSelfAttention(config, heads, head_size) if present else None
        self.output = CompressedBertResidualOutput(config, heads * head_size, present)

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None, eager: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.self is None:
            batch, seq, _ = hidden_states.shape
            probs = hidden_states.new_zeros(batch, 0, seq, seq) if eager else None
            return self.output(None, hidden_states), probs
        context, probs = self.self(hidden_states, attention_mask, eager)
        return self.output(context, hidden_states), probs


class CompressedBertIntermediate(nn.Module):
    """Feed-forward expansion ``act(dense(x))`` with this layer's own width."""

    def __init__(self, config: CompressedBertConfig, intermediate_size: int) -> None:
        super().__init__()
        self.dense = _linear(config.hidden_size, intermediate_size)
        self.intermediate_act_fn = ACT2FN[config.hidden_act]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.intermediate_act_fn(self.dense(hidden_states))


class CompressedBertLayer(nn.Module):
    """One encoder layer: attention sublayer then feed-forward sublayer, either of which may be removed."""

    def __init__(self, config: CompressedBertConfig, layer_idx: int) -> None:
        super().__init__()
        present = config.layer_mlp[layer_idx]
        ffn = config.layer_intermediate_size[layer_idx]
        self.attention = CompressedBertAttention(config, layer_idx)
        self.intermediate = CompressedBertIntermediate(config, ffn) if present else None
        self.output = CompressedBertResidualOutput(config, ffn, present)

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None, eager: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attention_output, probs = self.attention(hidden_states, attention_mask, eager)
        expanded = self.intermediate(attention_output) if self.intermediate is not None else None
        return self.output(expanded, attention_output), probs


class CompressedBertEncoder(nn.Module):
    """The stack of heterogeneous layers, collecting per-layer hidden states and attentions on request."""

    def __init__(self, config: CompressedBertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(CompressedBertLayer(config, i) for i in range(config.num_hidden_layers))

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
        for layer in self.layer:
            hidden_states, probs = layer(hidden_states, attention_mask, eager)
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
        self.encoder = CompressedBertEncoder(config)
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
        additive_mask = None
        if attention_mask is not None:
            # (batch, 1, 1, seq): 0 where attended, the most negative float where padded.
            keep = attention_mask[:, None, None, :].to(embedding_output.dtype)
            additive_mask = (1.0 - keep) * torch.finfo(embedding_output.dtype).min
        eager = bool(output_attentions) or config._attn_implementation == "eager"
        sequence_output, hidden_states, attentions = self.encoder(
            embedding_output, additive_mask, eager, bool(output_attentions), bool(output_hidden_states)
        )
        output = BaseModelOutputWithPoolingAndCrossAttentions(
            last_hidden_state=sequence_output,
            pooler_output=self.pooler(sequence_output) if self.pooler is not None else None,
            hidden_states=hidden_states,
            attentions=attentions,
        )
        return self._finish(output, return_dict)


class CompressedBertForMaskedLM(CompressedBertPreTrainedModel):
    """Heterogeneous BERT with BERT's masked-language-modelling head (decoder tied to the word embeddings)."""

    # {target: source}, as transformers 5's BertForMaskedLM; applied only when config.tie_word_embeddings.
    _tied_weights_keys = {
        "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
        "cls.predictions.decoder.bias": "cls.predictions.bias",
    }

    def __init__(self, config: CompressedBertConfig) -> None:
        super().__init__(config)
        self.bert = CompressedBertModel(config, add_pooling_layer=False)
        self.cls = CompressedBertOnlyMLMHead(config)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.cls.predictions.decoder

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.cls.predictions.decoder = new_embeddings
        self.cls.predictions.bias = new_embeddings.bias

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> MaskedLMOutput | tuple[torch.Tensor, ...]:
        """Token logits over the vocabulary; cross-entropy loss over ``labels`` (-100 ignored) when given."""
        outputs = self.bert(
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
        logits = self.cls(outputs.last_hidden_state)
        loss = None
        if labels is not None:
            loss = CrossEntropyLoss()(logits.view(-1, self.config.vocab_size), labels.view(-1))
        output = MaskedLMOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )
        return self._finish(output, return_dict)


class CompressedBertForSequenceClassification(CompressedBertPreTrainedModel):
    """Heterogeneous BERT with a classification / regression head on the pooled first token."""

    def __init__(self, config: CompressedBertConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = CompressedBertModel(config)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> SequenceClassifierOutput | tuple[torch.Tensor, ...]:
        """Sequence logits; the loss follows ``config.problem_type``, inferred from the labels as BERT does."""
        outputs = self.bert(
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
        logits = self.classifier(self.dropout(outputs.pooler_output))
        loss = None
        if labels is not None:
            if self.config.problem_type is None:
                if self.num_labels == 1:
                    self.config.problem_type = "regression"
                elif labels.dtype in (torch.long, torch.int):
                    self.config.problem_type = "single_label_classification"
                else:
                    self.config.problem_type = "multi_label_classification"
            if self.config.problem_type == "regression":
                if self.num_labels == 1:
                    loss = MSELoss()(logits.squeeze(), labels.squeeze())
                else:
                    loss = MSELoss()(logits, labels)
            elif self.config.problem_type == "single_label_classification":
                loss = CrossEntropyLoss()(logits.view(-1, self.num_labels), labels.view(-1))
            elif self.config.problem_type == "multi_label_classification":
                loss = BCEWithLogitsLoss()(logits, labels)
        output = SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )
        return self._finish(output, return_dict)


class CompressedBertForTokenClassification(CompressedBertPreTrainedModel):
    """Heterogeneous BERT with a per-token classification head."""

    def __init__(self, config: CompressedBertConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = CompressedBertModel(config, add_pooling_layer=False)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> TokenClassifierOutput | tuple[torch.Tensor, ...]:
        """Per-token logits; cross-entropy loss over ``labels`` (-100 ignored) when given."""
        outputs = self.bert(
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
        logits = self.classifier(self.dropout(outputs.last_hidden_state))
        loss = None
        if labels is not None:
            loss = CrossEntropyLoss()(logits.view(-1, self.num_labels), labels.view(-1))
        output = TokenClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )
        return self._finish(output, return_dict)
