"""The invariant: in eval mode, fold(model)(x) equals model(x) on the kept hidden units (<= 1e-4 fp32)."""

from __future__ import annotations

import pytest
import torch
import transformers
from torch import nn

import compress
from conftest import randomise_gates, tiny_bert_config, token_batch

TOL = 1e-4


def _encoder_params(model: nn.Module) -> int:
    return sum(p.numel() for name, p in model.named_parameters() if ".encoder." in f".{name}")


def _check_counts(job: compress.CompressionJob, student: nn.Module) -> None:
    structure = job.structure()
    assert sum(p.numel() for p in student.parameters()) == structure.parameters
    assert _encoder_params(student) == structure.encoder_parameters


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_minilm_random_gates_fold_exactly(minilm, sentences, seed):
    teacher, tokenizer = minilm
    job = compress.attach(teacher, "bert-l0")
    randomise_gates(job, seed)
    model = job.model.eval()
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        gated = model(**batch).last_hidden_state
        student = job.fold()
        folded = student(**batch).last_hidden_state
    kept = job.kept()
    structure = job.structure()
    # The random state really removed things of every kind.
    assert structure.per_layer("attention")[1] == 0 and structure.per_layer("mlp")[-1] == 0
    assert structure.per_layer("heads")[0] <= 10 and 0 < structure.sizes["hidden"] <= 288
    assert type(student).__name__ == "CompressedBertModel"
    assert folded.shape == (*gated.shape[:-1], kept["hidden"].numel())
    assert (folded - gated[..., kept["hidden"]]).abs().max().item() <= TOL
    # Dropped hidden units are exactly zero in the gated model: nothing leaks from pruned units.
    dropped = torch.ones(gated.shape[-1], dtype=torch.bool)
    dropped[kept["hidden"]] = False
    assert gated[..., dropped].abs().max().item() == 0.0
    _check_counts(job, student)


@pytest.mark.parametrize(
    "cls, output",
    [
        (transformers.BertForMaskedLM, "logits"),
        (transformers.BertForSequenceClassification, "logits"),
        (transformers.BertForTokenClassification, "logits"),
        (transformers.BertModel, "pooler_output"),
    ],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_random_bert_heads_fold_exactly(cls, output, seed):
    torch.manual_seed(seed)
    teacher = cls(tiny_bert_config()).eval()
    job = compress.attach(teacher, "bert-l0")
    randomise_gates(job, seed)
    batch = token_batch(teacher.config.vocab_size, seed)
    with torch.no_grad():
        gated = job.model.eval()(**batch)
        student = job.fold()
        folded = student(**batch)
    kept = job.kept()["hidden"]
    expected = getattr(gated, output)
    if output == "pooler_output":
        expected = expected[..., kept]
        assert (folded.last_hidden_state - gated.last_hidden_state[..., kept]).abs().max().item() <= TOL
    assert (getattr(folded, output) - expected).abs().max().item() <= TOL
    _check_counts(job, student)


def test_uniform_structure_folds_to_stock_bert(minilm, sentences):
    teacher, tokenizer = minilm
    job = compress.attach(teacher, "bert-l0")
    structure = job.prune_to({"hidden": 256, "heads": 8, "ffn": 1024})
    student = job.fold()
    assert type(student) is transformers.BertModel
    cfg = student.config
    assert (cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size) == (256, 8, 1024)
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        gated = job.model.eval()(**batch).last_hidden_state[..., job.kept()["hidden"]]
        assert (student(**batch).last_hidden_state - gated).abs().max().item() <= TOL
    assert structure.sizes["hidden"] == 256 and structure.per_layer("heads") == [8] * 6
    _check_counts(job, student)


def test_teacher_is_never_modified(minilm, sentences):
    teacher, tokenizer = minilm
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    norms = {n: type(m) for n, m in teacher.named_modules()}
    job = compress.attach(teacher, "bert-l0")
    randomise_gates(job, 0)
    job.fold()
    job.prune_to(0.5)
    job.fold()
    after = teacher.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert {n: type(m) for n, m in teacher.named_modules()} == norms
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in teacher.modules())


def test_attach_keeps_forward_signature_and_gate_names(minilm, sentences):
    teacher, tokenizer = minilm
    job = compress.attach(teacher, "bert-l0")
    assert type(job.model) is type(teacher)
    gate_params = [n for n, p in job.model.named_parameters() if "compress_gates" in n]
    assert gate_params and all(n.endswith("log_alpha") for n in gate_params)
    # 1 hidden gate + 4 per layer (heads, ffn, attention, mlp).
    assert len(gate_params) == 1 + 4 * teacher.config.num_hidden_layers
    batch = tokenizer(sentences[:2], padding=True, return_tensors="pt")
    out = job.model.train()(**batch, output_hidden_states=True)
    assert len(out.hidden_states) == 7
    out.last_hidden_state.pow(2).mean().backward()
    # Every gate is in the graph (clipped samples may have zero gradient, so check the total).
    grads = [p.grad for n, p in job.model.named_parameters() if n.endswith("log_alpha")]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0
