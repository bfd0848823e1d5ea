"""Head-width pruning: every head of a layer keeps the same dimensions; the fold corrects the attention scale."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

import compress
import reparam.fold
from conftest import load_elsewhere, randomise_gates, switch_off_some, tiny_bert_config, token_batch
from pruners.gates import FixedGate
from pruners.importance import magnitude_importance
from pruners.size import count_parameters
from reparam import Axis, TensorDim
from reparam.fold import unit_rows
from test_fold_exact import _check_counts

TOL = 1e-4
WIDTH_AXES = ["hidden", "head_width", "ffn", "attention", "mlp"]


def _width_recipe() -> compress.Recipe:
    return compress.load_recipe("bert-l0").override({"prune.axes": WIDTH_AXES})


def _randomise_with_width(job: compress.CompressionJob, seed: int) -> None:
    """conftest's random gates, plus a different set of head dimensions switched off in every layer."""
    randomise_gates(job, seed)
    switch_off_some(job, "head_width", 1 / 3, seed + 100)


def _fold_error(job: compress.CompressionJob, batch: dict, output: str = "last_hidden_state") -> float:
    """Max abs difference between the gated model (on kept hidden units) and its fold, in eval mode."""
    with torch.no_grad():
        gated = getattr(job.model.eval()(**batch), output)
        folded = getattr(job.fold()(**batch), output)
    if output == "last_hidden_state":
        gated = gated[..., job.kept()["hidden"]]
    return (folded - gated).abs().max().item()


def test_head_width_axis_covers_the_same_dimension_of_every_head():
    teacher = transformers.BertModel(tiny_bert_config())
    job = compress.attach(teacher, _width_recipe())
    names = {a.name for a in job.axes}
    assert "layers.0.head_width" in names and not any(n.endswith(".heads") for n in names)
    axis = next(a for a in job.axes if a.name == "layers.2.head_width")
    assert (axis.size, axis.group, axis.copies, axis.stride) == (8, 1, 6, 8)
    # Unit 3 is row 3 of each of the 6 heads (head h starts at row 8 h).
    assert unit_rows(axis, torch.tensor([3])).tolist() == [3, 11, 19, 27, 35, 43]
    assert job.adapter.kind_limits()["head_width"] == 8


@pytest.mark.parametrize(
    "cls, output",
    [(transformers.BertModel, "last_hidden_state"), (transformers.BertForMaskedLM, "logits")],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_random_bert_soft_width_gates_fold_exactly(cls, output, seed):
    torch.manual_seed(seed)
    teacher = cls(tiny_bert_config()).eval()
    job = compress.attach(teacher, _width_recipe())
    _randomise_with_width(job, seed)
    values = job.gates.deterministic()
    soft = torch.cat([values[f"layers.{i}.head_width"] for i in range(4)])
    # Soft values strictly between 0 and 1 on kept dimensions: the fold multiplies them into Q, K and V.
    assert ((soft > 0) & (soft < 1)).any()
    kept_widths = job.structure().per_layer("head_width")
    assert all(0 < w < 8 for i, w in enumerate(kept_widths) if i != 1)
    assert _fold_error(job, token_batch(teacher.config.vocab_size, seed), output) <= TOL
    student = job.fold()
    assert type(student).__name__ == f"Compressed{cls.__name__}"
    # Layer 1's attention was removed, which removes its width too.
    assert student.config.layer_attention[1] is False and kept_widths[1] == 0
    assert student.config.layer_head_size == kept_widths
    assert student.config.layer_heads == [6] * 4
    _check_counts(job, student)


@pytest.mark.parametrize("seed", [0, 1])
def test_minilm_soft_width_gates_fold_exactly(minilm, sentences, seed):
    teacher, tokenizer = minilm
    job = compress.attach(teacher, _width_recipe())
    _randomise_with_width(job, seed)
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    assert _fold_error(job, batch) <= TOL
    widths = job.structure().per_layer("head_width")
    # A third of every layer's dimensions forced off; layer 1 (and where its gate says so, another) lost its attention.
    assert widths[1] == 0 and max(widths) <= 22 and sum(w > 0 for w in widths) >= 4
    _check_counts(job, job.fold())


def test_fold_fails_without_the_attention_scale_correction(minilm, sentences, monkeypatch):
    teacher, tokenizer = minilm
    job = compress.attach(teacher, _width_recipe())
    job.prune_to({"head_width": 12})
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    assert _fold_error(job, batch) <= TOL
    # The correction lives in W_q and b_q: sqrt(12 / 32) times the gated (here 0/1) teacher rows.
    student = job.fold().state_dict()
    rows = unit_rows(next(a for a in job.axes if a.name == "layers.3.head_width"), job.kept()["layers.3.head_width"])
    for tensor in ("weight", "bias"):
        name = f"encoder.layer.3.attention.self.query.{tensor}"
        assert torch.allclose(student[name], teacher.state_dict()[name][rows] * (12 / 32) ** 0.5)
    monkeypatch.setattr(reparam.fold, "dot_scale_correction", lambda axis, kept: 1.0)
    assert _fold_error(job, batch) > 100 * TOL


def test_uniform_width_with_matching_hidden_folds_to_stock_bert(minilm, sentences):
    teacher, tokenizer = minilm
    job = compress.attach(teacher, _width_recipe())
    structure = job.prune_to({"hidden": 192, "head_width": 16, "ffn": 1024})
    assert structure.per_layer("head_width") == [16] * 6 and structure.per_layer("heads") == []
    assert "head width per layer: [16, 16, 16, 16, 16, 16]" in structure.summary()
    student = job.fold()
    # 12 heads x 16 == 192 == hidden: stock BERT derives exactly this head width from its config.
    assert type(student) is transformers.BertModel
    cfg = student.config
    assert (cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size) == (192, 12, 1024)
    assert _fold_error(job, tokenizer(sentences, padding=True, return_tensors="pt")) <= TOL
    _check_counts(job, student)


def test_per_layer_widths_export_and_reload_with_remote_code(minilm, sentences, tmp_path):
    teacher, tokenizer = minilm
    job = compress.attach(teacher, _width_recipe())
    job.prune_to({"hidden": 256, "ffn": 1024})
    widths = [32, 24, 20, 16, 12, 8]
    generator = torch.Generator().manual_seed(0)
    for i, width in enumerate(widths):
        # Scattered dimensions, so the kept rows of every head are not one contiguous block.
        keep = torch.randperm(32, generator=generator)[:width]
        job.gates[f"layers.{i}.head_width"] = FixedGate.keeping(32, keep)
    job.gates.refresh()
    assert job.structure().per_layer("head_width") == widths
    student = job.fold()
    batch = dict(tokenizer(sentences, padding=True, return_tensors="pt"))
    assert _fold_error(job, batch) <= TOL
    out = compress.save_student(student, tmp_path / "student", processor=tokenizer)
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "compressed_bert" and config["layer_head_size"] == widths
    assert config["layer_heads"] == [12] * 6 and config["hidden_size"] == 256
    with torch.no_grad():
        expected = student(**batch).last_hidden_state
    name, got = load_elsewhere(out, "AutoModel", True, batch, tmp_path)
    assert name == "CompressedBertModel"
    assert (got - expected).abs().max().item() <= 1e-5
    _check_counts(job, student)


def test_sparsity_target_with_head_width_ties_hidden_to_the_width(minilm):
    teacher, _ = minilm
    job = compress.attach(teacher, _width_recipe())
    structure = job.prune_to(0.5)
    width = structure.per_layer("head_width")
    assert len(set(width)) == 1 and 0 < width[0] < 32
    assert structure.sizes["hidden"] == 12 * width[0]
    assert abs(structure.encoder_sparsity - 0.5) < 0.01
    assert type(job.fold()) is transformers.BertModel


def test_size_accounting_and_magnitude_count_every_copy_of_a_unit():
    torch.manual_seed(0)
    # 3 copies of 4 units of 2 rows: 24 rows, written by w (rows) and read by v (columns).
    axis = Axis("a", "head_width", 4, group=2, copies=3, writers=[TensorDim("w", 0)], readers=[TensorDim("v", 1)])
    state = {"w": torch.randn(24, 5), "v": torch.randn(7, 24)}
    shapes = {k: tuple(t.shape) for k, t in state.items()}
    assert count_parameters(shapes, [axis], {"a": 1}) == 6 * 5 + 7 * 6
    score = magnitude_importance(state, axis)
    for unit in range(4):
        rows = unit_rows(axis, torch.tensor([unit]))
        assert torch.isclose(score[unit], state["w"][rows].pow(2).sum() + state["v"][:, rows].pow(2).sum())


def test_recipe_refuses_heads_and_head_width_together():
    with pytest.raises(compress.RecipeError, match="both heads and head_width.*keep one of them"):
        compress.load_recipe("bert-l0").override({"prune.axes": ["heads", "head_width"]})


def test_sizes_for_an_ungated_kind_are_refused():
    job = compress.attach(transformers.BertModel(tiny_bert_config()), _width_recipe())
    with pytest.raises(compress.TargetError, match=r"\['heads'\].*add them to prune.axes"):
        job.prune_to({"heads": 4})
