"""Models without a family adapter: FFN pruning through torch-pruning's groups, exported with a stock config."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import transformers
from safetensors.torch import save_file

import compress

TOL = 1e-4


@pytest.fixture(scope="module")
def distilbert() -> transformers.DistilBertModel:
    torch.manual_seed(0)
    config = transformers.DistilBertConfig(vocab_size=120, dim=48, n_layers=3, n_heads=4, hidden_dim=96, max_position_embeddings=32)
    return transformers.DistilBertModel(config).eval()


def test_distilbert_ffn_pruning_folds_exactly_and_reloads_with_automodel(distilbert, tmp_path):
    """DistilBERT has an adapter now; the generic path (``--generic``) still takes it, FFN units only."""
    assert compress.attach(distilbert, "bert-magnitude").adapter.family == "distilbert"
    job = compress.attach_generic(distilbert, compress.load_recipe("bert-magnitude").override({"prune.target_sparsity": 0.25}))
    assert [a.name for a in job.axes] == ["layers.0.ffn", "layers.1.ffn", "layers.2.ffn"]
    job.method.one_shot()
    structure = job.structure()
    assert abs(structure.encoder_sparsity - 0.25) <= 0.01
    kept = structure.per_layer("ffn")
    assert len(set(kept)) == 1 and 0 < kept[0] < 96
    batch = {"input_ids": torch.randint(1, 120, (2, 9), generator=torch.Generator().manual_seed(0))}
    job.model.eval()
    student = job.fold()
    with torch.no_grad():
        gated = job.model(**batch).last_hidden_state
        folded = student(**batch).last_hidden_state
    assert (folded - gated).abs().max().item() <= TOL
    assert type(student) is transformers.DistilBertModel and student.config.hidden_dim == kept[0]
    assert sum(p.numel() for p in student.parameters()) == structure.parameters
    out = compress.save_student(student, tmp_path / "student")
    save_file({"input_ids": batch["input_ids"], "expected": folded.contiguous()}, tmp_path / "io.safetensors")
    script = (
        "import sys, torch, transformers; from safetensors.torch import load_file\n"
        f"io = load_file({str(tmp_path / 'io.safetensors')!r})\n"
        f"m = transformers.AutoModel.from_pretrained({str(out)!r}).eval()\n"
        "assert type(m).__name__ == 'DistilBertModel', type(m)\n"
        "with torch.no_grad(): got = m(input_ids=io['input_ids']).last_hidden_state\n"
        "print((got - io['expected']).abs().max().item())\n"
    )
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert float(loaded.stdout.strip().splitlines()[-1]) <= TOL


def test_vit_ffn_groups_are_found():
    config = transformers.ViTConfig(image_size=16, patch_size=8, hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    job = compress.attach_generic(transformers.ViTModel(config).eval(), compress.load_recipe("bert-magnitude").override(
        {"prune.target_sparsity": None, "prune.target": {"ffn": 40}}))
    job.method.one_shot()
    assert job.structure().per_layer("ffn") == [40, 40]
    assert job.fold().config.intermediate_size == 40


def test_generic_path_refuses_methods_and_axes_it_cannot_serve(distilbert):
    with pytest.raises(compress.RecipeError, match="method 'l0' needs a family adapter; .* magnitude, taylor, random"):
        compress.attach_generic(distilbert, "bert-l0")
    recipe = compress.load_recipe("bert-magnitude").override({"prune.target_sparsity": None, "prune.target": {"hidden": 32, "ffn": 40}})
    with pytest.raises(compress.RecipeError, match=r"prune.target gives sizes for \['hidden'\]: give only ffn"):
        compress.attach_generic(distilbert, recipe)
