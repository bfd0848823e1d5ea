"""The baselines through ``compress.run``: iterative magnitude pruning with distillation, and layer drop."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import transformers

import compress
from conftest import save_tiny_teacher, token_batch

SHORT = {
    "train.max_steps": 12,
    "train.batch_size": 4,
    "train.seq_len": 32,
    "train.logging_steps": 1,
    "train.save_steps": 50,
    "finetune.max_steps": 16,
    "distill.layers": [[0, 0], [2, 2], [4, 4]],
}


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, minilm) -> Path:
    """A 4-layer random BERT with the real MiniLM tokenizer, saved like a user's model folder."""
    return save_tiny_teacher(tmp_path_factory.mktemp("teacher"), minilm[1], layers=4)


def _falls(losses: list[float]) -> bool:
    return sum(losses[-3:]) < sum(losses[:3])


@pytest.mark.slow  # minutes-long on 2 cores; CI runs it in its -m slow pass
def test_iterative_magnitude_run_prunes_between_distillation_steps(teacher_dir, tmp_path):
    schedule = {"kind": "step", "n_steps": 3, "start_step": 0, "end_step": 9}
    out = compress.run("bert-magnitude", teacher=teacher_dir, out=tmp_path / "run",
                       overrides={**SHORT, "prune.schedule": schedule}, progress=False)
    record = json.loads((out / "compression.json").read_text())
    assert abs(record["structure"]["encoder_sparsity"] - 0.5) <= 0.01
    logs = json.loads((out / "training_log.json").read_text())
    sparsity = [e["sparsity"] for e in logs["prune"] if "sparsity" in e]
    # Logged at each step before that step's pruning: three equal removals at steps 3, 6 and 9.
    assert len(set(sparsity)) == 4 and sparsity == sorted(sparsity) and sparsity[0] == 0.0
    assert abs(sparsity[-1] - record["structure"]["encoder_sparsity"]) < 1e-6
    assert _falls([e["loss"] for e in logs["finetune"] if "loss" in e])
    student = transformers.AutoModel.from_pretrained(out)
    assert student.config.model_type == "bert" and student.config.hidden_size == record["structure"]["sizes"]["hidden"]


def test_layer_drop_fold_is_the_truncated_teacher(teacher_dir):
    teacher = transformers.AutoModel.from_pretrained(teacher_dir).eval()
    recipe = compress.load_recipe("bert-layer-drop").override({"prune.target": {"attention": 2, "mlp": 2}})
    job = compress.attach(teacher, recipe)
    job.method.one_shot()
    student, record = compress.fold(job)
    assert job.method.kept_layers == [0, 2] and record.kept_layers == [0, 2]
    assert type(student) is transformers.BertModel and student.config.num_hidden_layers == 2
    truncated = copy.deepcopy(teacher)
    truncated.encoder.layer = torch.nn.ModuleList([teacher.encoder.layer[i] for i in (0, 2)])
    batch = token_batch(teacher.config.vocab_size)
    with torch.no_grad():
        assert torch.equal(student(**batch).last_hidden_state, truncated(**batch).last_hidden_state)
    per_layer = sum(p.numel() for p in teacher.encoder.layer[0].parameters())
    assert record.structure.encoder_parameters == 2 * per_layer
    assert job.method.student_layer_for() == {0: 0, 1: 1, 2: 1, 3: 2, 4: 2}


def test_layer_drop_run_exports_a_shallower_stock_bert(teacher_dir, tmp_path):
    overrides = {**SHORT, "train.max_steps": 0, "prune.target": {"attention": 2, "mlp": 2}}
    out = compress.run("bert-layer-drop", teacher=teacher_dir, out=tmp_path / "run", overrides=overrides, progress=False)
    record = json.loads((out / "compression.json").read_text())
    assert record["format"] == "stock" and record["kept_layers"] == [0, 2]
    assert record["metrics"]["encoder_sparsity"] == 0.5
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "bert" and config["num_hidden_layers"] == 2
    assert transformers.AutoModel.from_pretrained(out).config.num_hidden_layers == 2
    logs = json.loads((out / "training_log.json").read_text())
    assert "prune" not in logs and _falls([e["loss"] for e in logs["finetune"] if "loss" in e])


def test_layer_drop_refuses_training_and_bad_targets(teacher_dir):
    teacher = transformers.AutoModel.from_pretrained(teacher_dir)
    with pytest.raises(compress.RecipeError, match="set train.max_steps=0 and distil the truncated student"):
        compress.attach(teacher, compress.load_recipe("bert-layer-drop").override({"train.max_steps": 5}))
    with pytest.raises(compress.RecipeError, match=r"prune.target=\{attention: N, mlp: N\}"):
        compress.attach(teacher, compress.load_recipe("bert-layer-drop").override({"prune.target": {"attention": 2, "mlp": 3}}))
