"""data2vec-audio and WavLM: exact fold on every axis kind, per-head position bias, export loading without compress."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import transformers

import compress
from conftest import load_many_elsewhere
from speech_helpers import one_thread, randomise_speech_gates, tiny_speech_config  # noqa: F401 (a fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

TOL = 1e-4
PREFIX = {"wavlm": "WavLM", "data2vec-audio": "Data2VecAudio"}
#: small position tables: WavLM's 320 buckets and data2vec's 5 positional convs of width 19 are sized for real audio
TINY = {
    "wavlm": {"num_buckets": 16, "max_bucket_distance": 40},
    "data2vec-audio": {"num_conv_pos_embeddings": 2, "conv_pos_kernel_size": 5},
}
ALL_KINDS = ["conv", "heads", "ffn", "attention", "mlp"]


def _config(family: str, norm: str = "group", stable: bool = False, **overrides) -> transformers.PretrainedConfig:
    """The shapes of ``speech_helpers.tiny_speech_config`` in ``family``'s own config class."""
    cls = getattr(transformers, f"{PREFIX[family]}Config")
    shapes = tiny_speech_config("wav2vec2", norm, stable).to_dict()
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(**({k: v for k, v in shapes.items() if k in fields} | TINY[family] | overrides))


def _teacher(family: str, head: str = "Model", norm: str = "group", stable: bool = False) -> torch.nn.Module:
    torch.manual_seed(0)
    return getattr(transformers, f"{PREFIX[family]}{head}")(_config(family, norm, stable)).eval()


def _batch(seed: int = 0) -> dict[str, torch.Tensor]:
    """Three clips, two of them padded (the attention mask reaches WavLM's own attention)."""
    mask = torch.ones(3, 1800, dtype=torch.long)
    mask[1, 1300:] = 0
    mask[2, 900:] = 0
    return {"input_values": torch.randn(3, 1800, generator=torch.Generator().manual_seed(seed)), "attention_mask": mask}


def _attach(teacher: transformers.PreTrainedModel, **overrides) -> compress.CompressionJob:
    """The bundled DPHuBERT recipe as it is (family ``hubert``, the speech group), every kind gated."""
    recipe = compress.load_recipe("hubert-dphubert").override({"prune.axes": ALL_KINDS, **overrides})
    return compress.attach(teacher, recipe)


def _output(out) -> torch.Tensor:
    return out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state


def _fold(job: compress.CompressionJob, seed: int):
    """The student, its compression record and (gated, folded) outputs on a padded batch, with every hidden state."""
    batch = _batch(seed)
    with torch.no_grad():
        gated = job.model.eval()(**batch, output_hidden_states=True)
        student, record = compress.fold(job)
        folded = student(**batch, output_hidden_states=True)
    return student, record, gated, folded


def _assert_same(gated, folded) -> None:
    assert len(folded.hidden_states) == len(gated.hidden_states) == 3
    for mine, theirs in zip(folded.hidden_states, gated.hidden_states):
        assert (mine - theirs).abs().max().item() <= TOL
    assert (_output(folded) - _output(gated)).abs().max().item() <= TOL


def _check_counts(job: compress.CompressionJob, student: torch.nn.Module) -> None:
    structure = job.structure()
    assert sum(p.numel() for p in student.parameters()) == structure.parameters
    assert sum(p.numel() for p in student.base_model.parameters()) == structure.encoder_parameters


def _keep_heads(job: compress.CompressionJob, heads: list[list[int] | None]) -> None:
    """Layer ``i`` keeps exactly ``heads[i]`` (None: its attention sublayer goes); FFN sublayers stay."""
    for i, kept in enumerate(heads):
        job.gates[f"layers.{i}.attention"].log_alpha.data.fill_(-20.0 if kept is None else 20.0)
        job.gates[f"layers.{i}.mlp"].log_alpha.data.fill_(20.0)
        values = torch.full((4,), -20.0)
        values[kept or []] = 20.0
        job.gates[f"layers.{i}.heads"].log_alpha.data.copy_(values)


@pytest.mark.parametrize(
    "family, norm, stable", [("wavlm", "group", False), ("wavlm", "layer", True), ("data2vec-audio", "layer", False)]
)
def test_random_gates_on_every_kind_fold_exactly(family, norm, stable):
    job = _attach(_teacher(family, norm=norm, stable=stable))
    assert job.recipe.family == family and job.adapter.modality == "speech"
    randomise_speech_gates(job, seed=1)
    job.gates["layers.0.mlp"].log_alpha.data.fill_(20.0)  # layer 0's FFN loses units, layer 1's goes whole
    student, _, gated, folded = _fold(job, seed=1)
    structure = job.structure()
    # Every kind really lost units: conv channels, heads, a whole attention and a whole FFN sublayer.
    assert [structure.sizes[f"conv.{j}"] for j in range(3)] <= [12, 9, 6]
    assert structure.per_layer("heads")[0] == 2 and structure.per_layer("attention")[1] == 0
    assert structure.per_layer("mlp")[1] == 0 and 0 < structure.per_layer("ffn")[0] < 48
    assert type(student).__name__ == f"Compressed{PREFIX[family]}Model"
    _assert_same(gated, folded)
    _check_counts(job, student)


@pytest.mark.parametrize(
    "heads, stable", [([[1, 2], [0, 3]], False), ([None, [1, 3]], True), ([[3], [0, 1, 2, 3]], False)]
)
def test_each_wavlm_layer_reads_the_position_bias_of_its_own_heads(heads, stable):
    """Layer 0 computes the bias of every teacher head; each layer gates and uses its kept heads' columns."""
    job = _attach(_teacher("wavlm", norm="layer", stable=stable))
    randomise_speech_gates(job, seed=2)
    _keep_heads(job, heads)
    student, _, gated, folded = _fold(job, seed=2)
    assert student.config.layer_head_index == [kept or [] for kept in heads]
    assert student.config.layer_attention == [kept is not None for kept in heads]
    table = student.encoder.layers[0].attention
    assert type(table).__name__ == ("CompressedWavLMPositionTable" if heads[0] is None else "CompressedWavLMAttention")
    assert table.rel_attn_embed.weight.shape == (16, 4)
    _assert_same(gated, folded)
    _check_counts(job, student)
    # The same weights reading the first heads' slices and columns instead compute something else.
    config = student.config.to_dict() | {"layer_head_index": [list(range(len(k or []))) for k in heads]}
    misread = type(student)(type(student.config)(**config)).eval()
    misread.load_state_dict(student.state_dict())
    with torch.no_grad():
        assert (misread(**_batch(2)).last_hidden_state - folded.last_hidden_state).abs().max().item() > 1e-3


#: (head class suffix, the Auto class that loads it)
HEADS = [
    ("Model", "AutoModel"),
    ("ForCTC", "AutoModelForCTC"),
    ("ForSequenceClassification", "AutoModelForAudioClassification"),
]
FAMILY_HEADS = [(family, head, auto) for family in PREFIX for head, auto in HEADS]


def _random_student(family: str, head: str, seed: int):
    """A ``layer``-norm teacher of ``family`` with ``head``, random gates on every kind, folded."""
    job = _attach(_teacher(family, head, norm="layer"))
    randomise_speech_gates(job, seed=seed)
    return job, *_fold(job, seed=seed)


@pytest.mark.parametrize("family, head, auto_name", FAMILY_HEADS)
def test_every_head_class_folds_exactly(family, head, auto_name):
    job, student, _, gated, folded = _random_student(family, head, seed=10)
    assert type(student).__name__ == f"Compressed{PREFIX[family]}{head}"
    assert (_output(folded) - _output(gated)).abs().max().item() <= TOL
    _check_counts(job, student)


def test_every_family_and_head_class_loads_without_compress(tmp_path):
    """Each exported student loads with its Auto class and nothing but transformers (one process for all six)."""
    cases, expected = [], []
    for seed, (family, head, auto_name) in enumerate(FAMILY_HEADS):
        _, student, record, _, _ = _random_student(family, head, seed=20 + seed)
        out = compress.save_student(student, tmp_path / f"{family}-{head}", record=record)
        config = json.loads((out / "config.json").read_text())
        module = f"modeling_compressed_{family.replace('-', '_')}"
        assert config["model_type"] == f"compressed_{family.replace('-', '_')}"
        assert config["auto_map"][auto_name] == f"{module}.Compressed{PREFIX[family]}{head}"
        # The family's file imports the shared per-layer encoder: both travel with the weights.
        assert sorted(p.name for p in out.glob("*.py")) == sorted([f"{module}.py", "modeling_compressed_hubert.py"])
        assert type(compress.load_student(out)) is type(student)
        with torch.no_grad():
            expected.append(_output(student(**_batch(30))))
        cases.append((out, auto_name, True))
    loaded = load_many_elsewhere(cases, _batch(30), tmp_path)
    for (name, got), want, (family, head, _) in zip(loaded, expected, FAMILY_HEADS):
        assert name == f"Compressed{PREFIX[family]}{head}"
        assert (got - want).abs().max().item() <= 1e-5


@pytest.mark.parametrize("family", ["wavlm", "data2vec-audio"])
def test_uniform_structure_folds_to_the_stock_class(family):
    teacher = _teacher(family)
    job = _attach(teacher, **{"prune.axes": ["conv", "ffn"], "prune.target_sparsity": 0.3})
    job.prune_to({"conv": 6, "ffn": 20})
    student = job.fold()
    assert type(student) is type(teacher) and type(student.config) is type(teacher.config)
    assert student.config.conv_dim == [6, 6, 6] and student.config.intermediate_size == 20
    with torch.no_grad():
        expected = job.model.eval()(**_batch()).last_hidden_state
        assert (student(**_batch()).last_hidden_state - expected).abs().max().item() <= TOL


def test_compressed_wavlm_config_names_a_bad_head_index():
    config_cls = compress.students.wavlm.CompressedWavLMConfig
    shapes = _config("wavlm").to_dict()
    for key in ("model_type", "transformers_version", "num_feat_extract_layers"):
        shapes.pop(key, None)
    assert config_cls(**shapes, layer_head_index=[[2], [0, 3]]).layer_heads == [1, 2]
    assert config_cls(**shapes).layer_head_index == [[0, 1, 2, 3]] * 2
    with pytest.raises(ValueError, match="layer_head_index must be a list of 2 lists"):
        config_cls(**shapes, layer_head_index=[[4], [0]])
    with pytest.raises(ValueError, match="disagrees with layer_head_index"):
        config_cls(**shapes, layer_heads=[2, 2], layer_head_index=[[2], [0, 3]])
