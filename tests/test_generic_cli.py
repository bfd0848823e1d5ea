"""``compress run`` on the generic path: ``--generic``, the automatic choice with its notice, and its refusals."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
import transformers

import compress
from compress.adapters import adapter_for
from compress.cli import main
from compress.generic import job_for
from compress.teachers import small_random_bert

NOTICE = "no family adapter fits"
#: tiny batches and a layer map for the 2-layer teachers below
TINY = {"train.batch_size": 4, "train.seq_len": 32, "distill.layers": [[0, 0], [1, 1], [2, 2]]}
ONE_SHOT = {**TINY, "train.max_steps": 0, "finetune.max_steps": 0}
#: three training steps of stage 1, the schedule done by step 2
SHORT = {**TINY, "train.max_steps": 3, "finetune.max_steps": 0, "train.save_steps": 100,
         "prune.schedule": {"kind": "linear", "start_step": 0, "end_step": 2, "interval": 1}}
#: per layer of the 2-layer teachers (hidden 48, FFN 96): attention 4 x (48 x 48 + 48), two LayerNorms, the FFN
ATTENTION, NORMS, FFN = 4 * (48 * 48 + 48), 2 * 2 * 48, 48 * 96 + 96 + 96 * 48 + 48
#: one FFN unit per layer: its row and bias in the first projection, its column of the second, that one's bias
ONE_UNIT = 48 + 1 + 48 + 48
LARGEST = 1 - (ATTENTION + NORMS + ONE_UNIT) / (ATTENTION + NORMS + FFN)  # 0.4860


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, sentences) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n\n".join(f"{sentences[i % 4]} Paragraph {i} says more." for i in range(40)))
    return path


def _save(model: transformers.PreTrainedModel, folder: Path, tokenizer) -> Path:
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory, minilm) -> Path:
    """A 2-layer random BertModel (a family adapter fits it) with the MiniLM tokenizer."""
    tokenizer = minilm[1]
    return _save(small_random_bert(tokenizer.vocab_size), tmp_path_factory.mktemp("bert"), tokenizer)


@pytest.fixture(scope="module")
def deberta_dir(tmp_path_factory, minilm) -> Path:
    """A 2-layer random DebertaV2Model, a family without an adapter, the same sizes as ``bert_dir``."""
    tokenizer = minilm[1]
    torch.manual_seed(0)
    config = transformers.DebertaV2Config(
        vocab_size=tokenizer.vocab_size, hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96
    )
    model = transformers.DebertaV2Model(config).eval()
    with pytest.raises(compress.UnsupportedModelError):  # if an adapter is added, pick a family that still has none
        adapter_for(model)
    return _save(model, tmp_path_factory.mktemp("deberta"), tokenizer)


def _run(teacher: Path, out: Path, corpus: Path, overrides: dict, *flags: str, recipe: str = "bert-magnitude") -> int:
    args = ["run", recipe, "--teacher", str(teacher), "--out", str(out), "--data", str(corpus), "--no-progress", *flags]
    return main([*args, *(f"{key}={json.dumps(value)}" for key, value in overrides.items())])


def _error(capsys: pytest.CaptureFixture) -> str:
    """The one error line the command printed (progress bars of loading aside)."""
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("compress: error: ")]
    assert len(errors) == 1, errors
    return errors[0]


def _notices(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and NOTICE in r.getMessage()]


def test_generic_flag_prunes_only_ffn_units_of_a_bert_and_saves_the_stock_config(bert_dir, corpus, tmp_path, caplog):
    out = tmp_path / "student"
    assert _run(bert_dir, out, corpus, {**SHORT, "prune.target_sparsity": 0.3}, "--generic") == 0
    assert _notices(caplog) == []
    record = json.loads((out / "compression.json").read_text())
    assert record["recipe"]["prune"]["axes"] == ["ffn"]  # the recipe's [hidden, heads, ffn], narrowed
    assert sorted(record["structure"]["sizes"]) == ["layers.0.ffn", "layers.1.ffn"]
    assert abs(record["structure"]["encoder_sparsity"] - 0.3) <= 0.01
    assert json.loads((out / "training_log.json").read_text())["prune"]  # it trained
    student = transformers.AutoModel.from_pretrained(out)
    kept = record["structure"]["sizes"]["layers.0.ffn"]
    assert type(student) is transformers.BertModel and student.config.intermediate_size == kept < 96
    assert (student.config.hidden_size, student.config.num_attention_heads) == (48, 4)


def test_a_teacher_without_adapter_takes_the_generic_path_with_one_notice(deberta_dir, corpus, tmp_path, caplog):
    out = tmp_path / "student"
    assert _run(deberta_dir, out, corpus, {**ONE_SHOT, "prune.target_sparsity": 0.3}) == 0
    assert _notices(caplog) == [
        "no family adapter fits DebertaV2Model (model_type 'deberta-v2'): compressing it on the generic path, which "
        "prunes FFN units only; prune.axes ['hidden', 'heads', 'ffn'] narrowed to [ffn]. Pass --generic "
        "(compress.run(..., generic=True)) to choose the generic path and silence this notice"
    ]
    record = json.loads((out / "compression.json").read_text())
    kept = record["kept_indices"]
    student = transformers.AutoModel.from_pretrained(out).eval()
    assert type(student) is transformers.DebertaV2Model and record["format"] == "stock"
    assert student.config.intermediate_size == len(kept["layers.0.ffn"]) == len(kept["layers.1.ffn"]) < 96
    # Exact: the student computes what the teacher computes with the other FFN units switched off.
    teacher = transformers.AutoModel.from_pretrained(deberta_dir).eval()
    with torch.no_grad():
        for i, layer in enumerate(teacher.encoder.layer):
            off = torch.ones(96, dtype=torch.bool)
            off[kept[f"layers.{i}.ffn"]] = False
            layer.output.dense.weight[:, off] = 0.0
        batch = {"input_ids": torch.randint(1, 1000, (2, 12), generator=torch.Generator().manual_seed(0))}
        assert (student(**batch).last_hidden_state - teacher(**batch).last_hidden_state).abs().max().item() <= 1e-5

    caplog.clear()  # asked for (--generic, generic=True), the generic path says nothing
    job = job_for(teacher, compress.load_recipe("bert-magnitude").override({"prune.target_sparsity": 0.3}), generic=True)
    assert job.adapter.family == "generic" and _notices(caplog) == []


def test_the_generic_student_is_finetuned(deberta_dir, corpus, tmp_path):
    out = tmp_path / "student"
    assert _run(deberta_dir, out, corpus, {**ONE_SHOT, "finetune.max_steps": 1, "prune.target_sparsity": 0.3}) == 0
    assert json.loads((out / "training_log.json").read_text())["finetune"]


FAMILY_AXES_FFN = (
    "prune.target_sparsity=0.9 cannot be reached by pruning only the axes ['ffn'] (prune.axes): at most 0.48 of "
    f"encoder parameters ({LARGEST:.2%}: even with one unit left on each gated axis, 19,490 of the 37,920 encoder "
    "parameters stay); lower the target or add hidden / heads / attention / mlp to prune.axes"
)


@pytest.mark.parametrize(
    ("teacher", "recipe", "flags", "overrides", "expected"),
    [
        ("deberta", "bert-magnitude", (), {}, "prune.target_sparsity=0.9 cannot be reached by pruning FFN units only: "
         f"at most 0.48 of encoder parameters ({LARGEST:.2%}: every layer keeps at least one FFN unit, and 19,490 of "
         "the 37,920 encoder parameters stay); lower the target or use a family adapter"),
        ("bert", "bert-magnitude", ("--generic",), {}, "prune.target_sparsity=0.9 cannot be reached by pruning FFN "
         "units only: at most 0.48 of encoder parameters"),
        # A family adapter with restricted axes: the scheduled method (at attach) and L0 (checked by the run).
        ("bert", "bert-magnitude", (), {"prune.axes": ["ffn"]}, FAMILY_AXES_FFN),
        ("bert", "bert-l0", (), {"prune.axes": ["ffn"]}, FAMILY_AXES_FFN),
    ],
)
def test_an_unreachable_target_is_refused_before_training(
    teacher, recipe, flags, overrides, expected, request, corpus, tmp_path, capsys
):
    folder = request.getfixturevalue(f"{teacher}_dir")
    out = tmp_path / "student"
    assert _run(folder, out, corpus, {**SHORT, "prune.target_sparsity": 0.9, **overrides}, *flags, recipe=recipe) == 2
    assert expected in _error(capsys)
    assert not out.exists() and not (tmp_path / "student.checkpoints").exists()
    # The largest reachable target named in the message is accepted, and met.
    accepted = compress.load_recipe(recipe).override({"prune.target_sparsity": 0.48, **overrides})
    job = job_for(transformers.AutoModel.from_pretrained(folder), accepted, generic="--generic" in flags)
    job.method.one_shot()
    assert abs(job.structure().encoder_sparsity - 0.48) <= 0.005


@pytest.mark.parametrize(
    ("flags", "overrides", "recipe", "expected"),
    [
        (("--generic",), {"prune.axes": ["hidden", "ffn"]}, "bert-magnitude",
         "prune.axes=['hidden', 'ffn'] was asked for, but the generic path prunes FFN units only: set prune.axes=[ffn]"),
        (("--generic",), {"distill.attention_relation": 1.0}, "bert-magnitude",
         "distill.attention_relation=1.0 needs the Q/K/V projections, which only a family adapter names"),
        ((), {}, "bert-l0",
         "no adapter for it. Supported families and classes: bert: BertModel"),
        ((), {}, "bert-l0",
         "The generic path (FFN units only) cannot take it either: method 'l0' needs a family adapter; the generic "
         "path runs the scheduled top-k methods magnitude, taylor, random"),
    ],
)
def test_what_the_generic_path_cannot_run_is_refused_in_one_line(
    flags, overrides, recipe, expected, deberta_dir, corpus, tmp_path, capsys
):
    out = tmp_path / "student"
    assert _run(deberta_dir, out, corpus, {**ONE_SHOT, **overrides}, *flags, recipe=recipe) == 2
    assert expected in _error(capsys)
    assert not out.exists()


def _conformer() -> transformers.Wav2Vec2ConformerModel:
    config = transformers.Wav2Vec2ConformerConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48, conv_dim=(16, 16),
        conv_stride=(5, 4), conv_kernel=(10, 4), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
        conv_depthwise_kernel_size=7,
    )
    return transformers.Wav2Vec2ConformerModel(config).eval()


def _modernbert() -> transformers.ModernBertModel:
    config = transformers.ModernBertConfig(
        vocab_size=120, hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2,
    )
    return transformers.ModernBertModel(config).eval()


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (_conformer, "each layer of Wav2Vec2ConformerModel holds 2 FFNs of width 48 (encoder.layers.0.ffn1, "
         "encoder.layers.0.ffn2) and a convolution module (encoder.layers.0.conv_module), as a Conformer layer does"),
        (_modernbert, "the FFN of ModernBertModel is a fused GLU: layers.1.mlp.Wi writes 128 outputs (2 x "
         "intermediate_size 64), split into the FFN input and its gate, which layers.1.mlp.Wo reads as 64"),
    ],
)
def test_conformer_and_modernbert_are_refused_naming_the_real_cause(build, expected, corpus, tmp_path, capsys):
    torch.manual_seed(0)
    model = build()
    # A method the generic path cannot run either: the model's own problem is named first.
    with pytest.raises(compress.UnsupportedModelError, match="needs a family adapter for its layers") as err:
        compress.attach_generic(model, "bert-l0")
    assert expected in str(err.value)
    model.save_pretrained(tmp_path / "teacher")
    out = tmp_path / "student"
    assert _run(tmp_path / "teacher", out, corpus, ONE_SHOT) == 2
    error = _error(capsys)
    assert "no adapter for it" in error and f"The generic path (FFN units only) cannot take it either: {expected}" in error
    assert not out.exists()
