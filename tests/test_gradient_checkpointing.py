"""Activation (gradient) checkpointing of the heterogeneous students, alone and through the pipeline.

Checkpointing must change nothing but memory: the loss and every gradient equal the plain run's
(dropout included: the recomputation replays the same random state), while each layer's inside runs
again in the backward pass (torch stops a recomputation once it has what the backward needs, so
not every module of a layer runs twice).
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import torch
import transformers
from torch import nn

from compress import pipeline
from compress.students import modeling_compressed_bert as bert
from compress.students import modeling_compressed_hubert as speech
from speech_helpers import tiny_speech_config

#: four layers, every special case once: full, odd head width + zero-width FFN, zero heads + no FFN, no attention
HETERO_BERT = dict(
    vocab_size=100,
    hidden_size=32,
    num_hidden_layers=4,
    layer_heads=[4, 1, 0, 2],
    layer_head_size=[8, 5, 8, 3],
    layer_intermediate_size=[48, 0, 7, 16],
    layer_attention=[True, True, True, False],
    layer_mlp=[True, True, False, True],
    max_position_embeddings=64,
)


class LayerCalls:
    """Counts per layer, in training mode, the forward calls of the modules inside each of ``layers``."""

    def __init__(self, layers: nn.ModuleList) -> None:
        self.counts = [0] * len(layers)
        self.handles = [
            module.register_forward_hook(self._hook(i))
            for i, layer in enumerate(layers)
            for module in layer.modules()
            if module is not layer
        ]

    def _hook(self, index: int) -> Callable:
        def hook(module: nn.Module, args: tuple, output: object) -> None:
            self.counts[index] += int(module.training)

        return hook

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _loss_and_grads(model: nn.Module, loss_of: Callable[[nn.Module], torch.Tensor]) -> tuple[torch.Tensor, dict, list[int]]:
    """One training forward and backward from a fixed random state: the loss, the gradients, and per layer
    how many of its modules ran during the backward pass."""
    model.train()
    model.zero_grad()
    layers = model.base_model.encoder.layer if hasattr(model.base_model.encoder, "layer") else model.base_model.encoder.layers
    calls = LayerCalls(layers)
    torch.manual_seed(1)
    loss = loss_of(model)
    forward = list(calls.counts)
    assert all(forward), "every layer ran in the forward"
    loss.backward()
    calls.remove()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads, [after - before for after, before in zip(calls.counts, forward)]


def _check_checkpointing(model: nn.Module, loss_of: Callable[[nn.Module], torch.Tensor], reentrant: bool) -> None:
    loss, grads, recomputed = _loss_and_grads(model, loss_of)
    assert not any(recomputed), "nothing runs in the backward without checkpointing"
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": reentrant})
    assert model.is_activation_checkpointing
    checkpointed_loss, checkpointed_grads, recomputed = _loss_and_grads(model, loss_of)
    assert all(recomputed), f"every layer ran again in the backward pass: {recomputed}"
    torch.testing.assert_close(checkpointed_loss, loss, rtol=0, atol=1e-6)
    assert checkpointed_grads.keys() == grads.keys() and len(grads) > 10
    for name, grad in grads.items():
        torch.testing.assert_close(checkpointed_grads[name], grad, rtol=1e-5, atol=1e-6, msg=name)
    model.activation_checkpointing_disable()
    assert not any(_loss_and_grads(model, loss_of)[2])


@pytest.mark.parametrize("reentrant", [False, True])
def test_heterogeneous_bert_student_trains_the_same_with_checkpointing(reentrant):
    torch.manual_seed(0)
    model = bert.CompressedBertForMaskedLM(bert.CompressedBertConfig(**HETERO_BERT))
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(1, 100, (3, 9), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 6:] = 0

    def loss_of(m: nn.Module) -> torch.Tensor:
        out = m(input_ids=input_ids, attention_mask=attention_mask, labels=input_ids, output_hidden_states=True)
        return out.loss + sum(h.square().mean() for h in out.hidden_states)

    _check_checkpointing(model, loss_of, reentrant)


@pytest.mark.parametrize("family, stable", [("hubert", False), ("wav2vec2", True)])
def test_heterogeneous_speech_student_trains_the_same_with_checkpointing(family, stable):
    config_cls = speech.CompressedHubertConfig if family == "hubert" else speech.CompressedWav2Vec2Config
    stock = tiny_speech_config(family, stable=stable, mask_time_prob=0.0, layerdrop=0.0, num_hidden_layers=3)
    config = config_cls(
        **{k: v for k, v in stock.to_dict().items() if k not in ("model_type", "transformers_version")},
        layer_heads=[2, 0, 3],
        layer_intermediate_size=[20, 7, 0],
        layer_attention=[True, True, False],
        layer_mlp=[True, False, True],
    )
    torch.manual_seed(0)
    model = (speech.CompressedHubertModel if family == "hubert" else speech.CompressedWav2Vec2Model)(config)
    waves = torch.randn(2, 4000, generator=torch.Generator().manual_seed(0))

    def loss_of(m: nn.Module) -> torch.Tensor:
        out = m(waves, output_hidden_states=True)
        return sum(h.square().mean() for h in out.hidden_states)

    _check_checkpointing(model, loss_of, reentrant=False)


def _plain_calls(model: nn.Module, layers: nn.ModuleList) -> list[int]:
    """Per layer, its modules' calls in one training-mode forward without a backward (nothing to recompute for)."""
    calls = LayerCalls(layers)
    model.train()
    with torch.no_grad():
        model(input_ids=torch.ones(1, 8, dtype=torch.long))
    model.eval()
    calls.remove()
    return calls.counts


def test_pipeline_trains_both_stages_with_gradient_checkpointing(tiny_teacher_dir, tmp_path):
    """``trainer: {gradient_checkpointing: true}``: the gated model and the folded heterogeneous student checkpoint."""
    steps = 3
    overrides = {
        "train.max_steps": steps,
        "finetune.max_steps": steps,
        "train.batch_size": 4,
        "train.seq_len": 32,
        "train.logging_steps": 1,
        "distill.layers": [[0, 0], [1, 1], [2, 2]],
        "export.format": "heterogeneous",
        "trainer.gradient_checkpointing": True,
    }
    run = pipeline.setup("bert-l0", teacher=tiny_teacher_dir, out=tmp_path / "run", overrides=overrides, progress=False,
                         training_args={"save_total_limit": 1, "weight_decay": 0.01})
    gated_layers = run.job.model.encoder.layer
    gated_calls = LayerCalls(gated_layers)
    pipeline.prune_stage(run)
    gated_calls.remove()
    pipeline.fold_stage(run)
    assert isinstance(run.student, bert.CompressedBertModel)
    student_calls = LayerCalls(run.student.encoder.layer)
    pipeline.finetune_stage(run)
    student_calls.remove()
    assert run.job.model.is_activation_checkpointing and run.student.is_activation_checkpointing
    for model, layers, calls in ((run.job.model, gated_layers, gated_calls), (run.student, run.student.encoder.layer, student_calls)):
        plain = _plain_calls(model, layers)
        # each step: one plain forward per layer, then at least one module of every layer again in the backward
        assert all(count >= steps * (once + 1) for count, once in zip(calls.counts, plain)), (calls.counts, plain)
    out = pipeline.export_stage(run)
    record = json.loads((out / "compression.json").read_text())
    # training_args merge over the recipe's trainer section, and the record keeps both
    assert record["recipe"]["trainer"] == {"gradient_checkpointing": True, "save_total_limit": 1, "weight_decay": 0.01}
    logs = json.loads((out / "training_log.json").read_text())
    assert [e["step"] for e in logs["finetune"] if "loss" in e] == list(range(1, steps + 1))
    assert all(torch.isfinite(torch.tensor(e["loss"])) for e in logs["finetune"] if "loss" in e)
    assert transformers.AutoModel.from_pretrained(out, trust_remote_code=True) is not None
