"""HuBERT and wav2vec2: exact fold, export that loads without this library, and DPHuBERT's size accounting."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

import compress
from conftest import load_elsewhere
from speech_helpers import (  # noqa: F401 (one_thread is a fixture)
    FAMILY_CLASSES,
    one_thread,
    randomise_speech_gates,
    speech_recipe,
    tiny_speech_config,
)

pytestmark = pytest.mark.usefixtures("one_thread")

TOL = 1e-4
VARIANTS = [(norm, stable) for norm in ("group", "layer") for stable in (False, True)]


def _audio(seed: int = 0) -> torch.Tensor:
    return torch.randn(3, 1800, generator=torch.Generator().manual_seed(seed))


def _teacher(cls_name: str, family: str, norm: str = "group", stable: bool = False, **overrides):
    torch.manual_seed(0)
    config = tiny_speech_config(family, norm, stable, **overrides)
    return getattr(transformers, cls_name)(config).eval()


def _gated_and_folded(teacher, family: str, seed: int):
    job = compress.attach(teacher, speech_recipe(family))
    randomise_speech_gates(job, seed)
    with torch.no_grad():
        gated = job.model.eval()(_audio(seed), output_hidden_states=True)
        student = job.fold()
        folded = student(_audio(seed), output_hidden_states=True)
    return job, student, gated, folded


def _check_counts(job: compress.CompressionJob, student: torch.nn.Module) -> None:
    structure = job.structure()
    assert sum(p.numel() for p in student.parameters()) == structure.parameters
    assert sum(p.numel() for p in student.base_model.parameters()) == structure.encoder_parameters


@pytest.mark.parametrize("family", ["hubert", "wav2vec2"])
@pytest.mark.parametrize("norm, stable", VARIANTS)
def test_random_gates_fold_exactly(family, norm, stable):
    cls = f"{FAMILY_CLASSES[family]}Model"
    job, student, gated, folded = _gated_and_folded(_teacher(cls, family, norm, stable), family, seed=1)
    structure = job.structure()
    # Every kind really lost units: conv channels, heads, a whole attention and a whole FFN sublayer.
    assert [structure.sizes[f"conv.{j}"] for j in range(3)] <= [12, 9, 6]
    assert structure.per_layer("heads")[0] == 2 and structure.per_layer("attention")[1] == 0
    assert structure.per_layer("mlp")[1] == 0
    assert type(student).__name__ == f"Compressed{cls}"
    assert student.config.conv_dim == [structure.sizes[f"conv.{j}"] for j in range(3)]
    assert folded.last_hidden_state.shape == gated.last_hidden_state.shape
    assert len(folded.hidden_states) == len(gated.hidden_states) == 3
    for mine, theirs in zip(folded.hidden_states, gated.hidden_states):
        assert (mine - theirs).abs().max().item() <= TOL
    assert (folded.last_hidden_state - gated.last_hidden_state).abs().max().item() <= TOL
    if family == "wav2vec2":
        # The projection LayerNorm's output over the kept channels of the last conv.
        kept = job.kept()["conv.2"]
        assert (folded.extract_features - gated.extract_features[..., kept]).abs().max().item() <= TOL
    _check_counts(job, student)


@pytest.mark.parametrize("cls_name", ["HubertForCTC", "Wav2Vec2ForSequenceClassification", "HubertForSequenceClassification"])
def test_heads_fold_exactly(cls_name):
    family = "hubert" if cls_name.startswith("Hubert") else "wav2vec2"
    job, student, gated, folded = _gated_and_folded(_teacher(cls_name, family), family, seed=2)
    assert type(student).__name__ == f"Compressed{cls_name}"
    assert (folded.logits - gated.logits).abs().max().item() <= TOL
    _check_counts(job, student)


def test_last_conv_without_projection_norm_folds_into_the_projection():
    teacher = _teacher("HubertModel", "hubert", feat_proj_layer_norm=False)
    _, _, gated, folded = _gated_and_folded(teacher, "hubert", seed=3)
    assert (folded.last_hidden_state - gated.last_hidden_state).abs().max().item() <= TOL


def test_last_conv_gate_is_soft_in_training_and_a_mask_in_eval():
    """The last conv of a group extractor is read by a LayerNorm: soft gate while training, 0/1 in eval."""
    job = compress.attach(_teacher("HubertModel", "hubert"), speech_recipe("hubert"))
    randomise_speech_gates(job, 0)
    raw, gated = [], []
    extractor = job.model.feature_extractor
    extractor.conv_layers[2].activation.register_forward_hook(lambda module, args, out: raw.append(out.detach()))
    job.model.feature_projection.register_forward_pre_hook(lambda module, args: gated.append(args[0].detach()))
    for mode in ("eval", "train"):
        with torch.no_grad():
            getattr(job.model, mode)()(_audio())
    # Per-channel factor between the GELU output (batch, channels, time) and what the projection reads.
    factors = [(g.transpose(1, 2) / r).nan_to_num(0.0).amax(dim=(0, 2)) for r, g in zip(raw, gated)]
    mask = (job.gates.deterministic()["conv.2"] != 0).float()
    assert torch.allclose(factors[0], mask)
    sampled = job.gates.values["conv.2"]
    assert ((sampled > 0) & (sampled < 1)).any(), "some sampled gate values are strictly between 0 and 1"
    assert torch.allclose(factors[1], sampled, atol=1e-6)


@pytest.mark.parametrize("family", ["hubert", "wav2vec2"])
def test_uniform_structure_folds_to_the_stock_class(family):
    cls = f"{FAMILY_CLASSES[family]}Model"
    teacher = _teacher(cls, family)
    job = compress.attach(teacher, speech_recipe(family, **{"prune.axes": ["conv", "ffn"]}))
    job.prune_to({"conv": 6, "ffn": 20})
    student = job.fold()
    assert type(student) is type(teacher)
    assert student.config.conv_dim == [6, 6, 6] and student.config.intermediate_size == 20
    with torch.no_grad():
        expected = job.model.eval()(_audio()).last_hidden_state
        assert (student(_audio()).last_hidden_state - expected).abs().max().item() <= TOL


@pytest.mark.parametrize("family, norm, stable", [("hubert", "group", False), ("wav2vec2", "layer", True)])
def test_heterogeneous_student_loads_without_compress(family, norm, stable, tmp_path):
    cls = f"{FAMILY_CLASSES[family]}Model"
    job, student, _, _ = _gated_and_folded(_teacher(cls, family, norm, stable), family, seed=4)
    extractor = transformers.Wav2Vec2FeatureExtractor(do_normalize=norm == "layer")
    out = compress.save_student(student, tmp_path / "student", processor=extractor)
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == f"compressed_{family}"
    assert config["auto_map"]["AutoModel"] == f"modeling_compressed_hubert.Compressed{cls}"
    assert (out / "modeling_compressed_hubert.py").is_file() and not list(out.glob("*.bin"))
    assert config["layer_attention"] == [True, False] and config["layer_mlp"] == [True, False]
    assert transformers.AutoFeatureExtractor.from_pretrained(out).do_normalize == (norm == "layer")
    batch = {"input_values": _audio(5)}
    with torch.no_grad():
        expected = student(**batch).last_hidden_state
    name, got = load_elsewhere(out, "AutoModel", True, batch, tmp_path)
    assert name == f"Compressed{cls}"
    assert (got - expected).abs().max().item() <= 1e-5
    assert type(compress.load_student(out)) is type(student)
    record = json.loads((out / "compression.json").read_text())
    assert record["student_parameters"] == job.structure().parameters


def test_ctc_student_loads_with_auto_ctc_class(tmp_path):
    _, student, _, _ = _gated_and_folded(_teacher("Wav2Vec2ForCTC", "wav2vec2"), "wav2vec2", seed=6)
    out = compress.save_student(student, tmp_path / "student")
    batch = {"input_values": _audio(7)}
    with torch.no_grad():
        expected = student(**batch).logits
    name, got = load_elsewhere(out, "AutoModelForCTC", True, batch, tmp_path)
    assert name == "CompressedWav2Vec2ForCTC"
    assert (got - expected).abs().max().item() <= 1e-5


def test_hubert_base_size_accounting_matches_dphubert():
    """HuBERT Base counts 94,371,712 parameters; DPHuBERT's 0.75-sparsity student has 23,585,946."""
    torch.manual_seed(0)
    teacher = transformers.HubertModel(transformers.HubertConfig())
    job = compress.attach(teacher, "hubert-dphubert")
    structure = job.structure()
    assert structure.teacher_parameters == structure.teacher_encoder_parameters == 94_371_712
    assert job.target_sparsity() == 0.75
    # The learned (L0) path: the gates' kept counts snapped to the target.
    job.method.snap_to(0.75)
    snapped = job.structure().parameters
    assert abs(snapped - 23_585_946) / 23_585_946 <= 0.01
    # The one-shot path: uniform sizes by weight magnitude.
    one_shot = job.prune_to(0.75)
    assert abs(one_shot.parameters - 23_585_946) / 23_585_946 <= 0.01
    # Conv channels shrink with the heads (3 of 12 kept: a quarter of 512 channels).
    assert {one_shot.sizes[f"conv.{j}"] for j in range(7)} == {128}
    # Counting from shapes equals a real model of that shape (conv widths per layer are stock).
    sizes = {f"conv.{j}": 256 + 32 * j for j in range(7)} | {f"layers.{i}.ffn": 1024 for i in range(12)}
    student = transformers.HubertModel(
        transformers.HubertConfig(conv_dim=[256 + 32 * j for j in range(7)], intermediate_size=1024)
    )
    assert job.count(sizes) == sum(p.numel() for p in student.parameters())


@pytest.mark.parametrize("family", ["hubert", "wav2vec2"])
@pytest.mark.parametrize("method", ["magnitude", "random"])
def test_torch_pruning_one_shot_prunes_speech_to_the_target_and_folds_exactly(family, method):
    """torch-pruning's groups cover the conv channels too; the residual stream, never gated here, is skipped."""
    teacher = _teacher(f"{FAMILY_CLASSES[family]}Model", family, "layer", True)
    recipe = speech_recipe(family, **{"prune.method": method, "prune.target_sparsity": 0.5})
    job = compress.attach(teacher, recipe)
    job.method.one_shot()
    structure = job.structure()
    assert abs(structure.encoder_parameters / structure.teacher_encoder_parameters - 0.5) <= 0.01
    assert all(0 < structure.sizes[f"conv.{j}"] < width for j, width in enumerate(teacher.config.conv_dim))
    student = job.fold()
    with torch.no_grad():
        expected = job.model.eval()(_audio()).last_hidden_state
        assert (student(_audio()).last_hidden_state - expected).abs().max().item() <= TOL


@pytest.mark.parametrize("family", ["hubert", "wav2vec2"])
@pytest.mark.parametrize("norm, stable", [("group", False), ("layer", True)])
def test_wid_compactors_on_conv_heads_and_ffn_fold_exactly(family, norm, stable):
    """WID on speech: the identity at attach; perturbed compactors and a one-shot target fold exactly."""
    teacher = _teacher(f"{FAMILY_CLASSES[family]}Model", family, norm, stable)
    recipe = speech_recipe(family, **{"prune.method": "wid", "prune.target_sparsity": 0.5, "prune.axes": ["conv", "heads", "ffn"]})
    job = compress.attach(teacher, recipe)
    with torch.no_grad():
        assert (job.model.eval()(_audio()).last_hidden_state - teacher(_audio()).last_hidden_state).abs().max().item() <= 1e-5
        torch.manual_seed(2)
        compactors = [p for name, p in job.model.named_parameters() if "compactor" in name]
        assert compactors
        for param in compactors:
            param.add_(0.05 * torch.randn_like(param))
    job.method.one_shot()
    sizes = job.structure().sizes
    assert all(0 < sizes[f"conv.{j}"] < width for j, width in enumerate(teacher.config.conv_dim)), "conv channels were removed"
    student = job.fold()
    with torch.no_grad():
        expected = job.model.eval()(_audio()).last_hidden_state
        assert (student(_audio()).last_hidden_state - expected).abs().max().item() <= TOL


def test_speech_recipes_refuse_hidden_and_text_recipes_refuse_conv():
    with pytest.raises(compress.RecipeError, match="family 'hubert' cannot prune.*conv, heads"):
        compress.load_recipe("hubert-dphubert").override({"prune.axes": ["hidden", "heads"]})
    with pytest.raises(compress.RecipeError, match="family 'bert' cannot prune"):
        compress.load_recipe("bert-l0").override({"prune.axes": ["conv", "heads"]})
    # hubert is the speech group: its recipe applies to wav2vec2, a text recipe does not.
    assert compress.attach(_teacher("Wav2Vec2Model", "wav2vec2"), "hubert-dphubert").recipe.family == "wav2vec2"
    with pytest.raises(compress.RecipeError, match="is for family 'bert' but the teacher is 'wav2vec2'"):
        compress.attach(_teacher("Wav2Vec2Model", "wav2vec2"), "bert-l0")
