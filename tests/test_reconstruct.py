"""The reconstruct stage: output projections refitted by least squares to the teacher's residual stream."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from transformers import BertModel, HubertModel, Wav2Vec2FeatureExtractor

import compress
from compress.adapters import adapter_for
from compress.reconstruct import calibration_batches, plan, reconstruct
from compress.training_data import training_data
from conftest import ONE_SHOT, token_batch, tiny_bert_config
from speech_helpers import one_thread, speech_recipe, tiny_speech_config  # noqa: F401 (fixture)


#: texts to score fidelity on, none of them in the calibration batches
HELD_OUT = [
    "A river runs through the valley below the old stone bridge.",
    "The function returns a list of the keys in insertion order.",
    "She ordered coffee and a slice of lemon cake.",
    "Interest rates rose for the third time this year.",
    "Install the package with pip and import it in your script.",
    "The orchestra played until well after midnight.",
    "Photosynthesis turns light into chemical energy in plants.",
    "Our team lost the final match by a single goal.",
]


def _batches(vocab: int, count: int = 6) -> list[dict[str, torch.Tensor]]:
    return [token_batch(vocab, seed=seed) for seed in range(count)]


def _one_shot(teacher, recipe: str = "bert-l0", **overrides):
    """The teacher pruned one-shot by weight magnitude to 50% and folded: (student, record)."""
    job = compress.attach(teacher, compress.load_recipe(recipe).override(overrides))
    job.prune_to(0.5)
    return compress.fold(job)


def _sublayers(student, teacher, record):
    layers = record.kept_layers or list(range(student.config.num_hidden_layers))
    return plan(student, adapter_for(teacher)(teacher).residual_sums, layers)


def test_a_student_equal_to_the_teacher_is_left_as_it_is():
    torch.manual_seed(0)
    teacher = BertModel(tiny_bert_config()).eval()
    student = copy.deepcopy(teacher)
    sums = adapter_for(teacher)(teacher).residual_sums
    errors = reconstruct(student, teacher, plan(student, sums, range(4)), _batches(120), progress=False)
    assert len(errors) == 8
    assert max(after for _, after in errors) < 1e-8
    for (name, a), (_, b) in zip(teacher.state_dict().items(), student.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-5), name


def _docs(tokenizer, batch_size: int = 16):
    """The built-in python-docs corpus as a run splits it: (training data with its held-out fidelity)."""
    recipe = compress.load_recipe("bert-l0").override(
        {"data.text": "python-docs", "train.batch_size": batch_size, "data.examples": "paragraphs"}
    )
    return training_data(recipe, "text", tokenizer, None)


def test_refit_lowers_every_sublayer_error_and_raises_held_out_fidelity(minilm):
    teacher, tokenizer = minilm
    student, record = _one_shot(teacher, **{"prune.axes": ["heads", "ffn"]})
    data = _docs(tokenizer)
    before = data.fidelity(teacher, student)
    batches = calibration_batches(data.train, data.collator, 16, 8, seed=0)
    errors = reconstruct(student, teacher, _sublayers(student, teacher, record), batches, progress=False)
    assert len(errors) == 12  # MiniLM: 6 layers x (attention, FFN)
    assert all(after < before_ for before_, after in errors)
    after = data.fidelity(teacher, student)
    assert after > before + 0.05, (before, after)


def test_a_narrower_residual_stream_is_refitted_on_the_kept_units(minilm, sentences):
    teacher, tokenizer = minilm
    student, record = _one_shot(teacher)  # bert-l0's axes: the hidden units are pruned too
    hidden = torch.tensor(record.kept_indices["hidden"])
    assert student.config.hidden_size == len(hidden) < teacher.config.hidden_size
    batches = [tokenizer(sentences, padding=True, return_tensors="pt") for _ in range(2)]
    errors = reconstruct(student, teacher, _sublayers(student, teacher, record), batches, hidden, progress=False)
    assert all(after < before for before, after in errors)


def test_a_student_with_dropped_layers_is_matched_to_the_teacher_layers_it_kept():
    torch.manual_seed(0)
    teacher = BertModel(tiny_bert_config()).eval()
    job = compress.attach(teacher, compress.load_recipe("bert-layer-drop").override({"prune.target": {"attention": 2, "mlp": 2}}))
    job.method.one_shot()
    student, record = compress.fold(job)
    assert record.kept_layers is not None and len(record.kept_layers) == 2
    sublayers = _sublayers(student, teacher, record)
    teacher_layers = [int(s.teacher_sum.split(".")[2]) for s in sublayers]
    assert teacher_layers == [j for j in record.kept_layers for _ in range(2)]
    errors = reconstruct(student, teacher, sublayers, _batches(120), progress=False)
    assert all(after <= before for before, after in errors)


@pytest.mark.usefixtures("one_thread")
def test_post_ln_speech_layers_are_refitted():
    torch.manual_seed(0)
    teacher = HubertModel(tiny_speech_config()).eval()
    job = compress.attach(teacher, speech_recipe("hubert"))
    job.prune_to(0.5)
    student, record = compress.fold(job)
    waves = [{"input_values": torch.randn(2, 4000, generator=torch.Generator().manual_seed(i))} for i in range(3)]
    errors = reconstruct(student, teacher, _sublayers(student, teacher, record), waves, progress=False)
    assert len(errors) == 4
    assert all(after < before for before, after in errors)


@pytest.mark.usefixtures("one_thread")
def test_pre_ln_layers_are_refused_before_anything_runs(tmp_path):
    teacher = HubertModel(tiny_speech_config(stable=True, norm="layer"))
    with pytest.raises(compress.RecipeError, match="pre-LN.*reconstruct.batches=0"):
        compress.run(
            speech_recipe("hubert"), teacher=teacher, processor=Wav2Vec2FeatureExtractor(), out=tmp_path / "student",
            overrides={"train.max_steps": 0, "finetune.max_steps": 0, "reconstruct.batches": 2},
        )
    assert not (tmp_path / "student").exists()


def test_calibration_batches_are_model_inputs_and_repeat_for_a_seed(minilm):
    _, tokenizer = minilm
    recipe = compress.load_recipe("bert-l0").override({"data.text": "python-docs", "train.batch_size": 4})
    data = training_data(recipe, "text", tokenizer, None)
    first = calibration_batches(data.train, data.collator, 4, 3, seed=0)
    again = calibration_batches(data.train, data.collator, 4, 3, seed=0)
    assert len(first) == 3 and set(first[0]) >= {"input_ids", "attention_mask"}
    assert "labels" not in first[0] and first[0]["input_ids"].shape[0] == 4
    assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(first, again))


def test_the_stage_runs_between_fold_and_finetune_and_is_recorded(tmp_path, tiny_teacher_dir):
    out = compress.run(
        "bert-l0", teacher=tiny_teacher_dir, data="python-docs", out=tmp_path / "student", progress=False,
        overrides={**ONE_SHOT, "prune.axes": ["heads", "ffn"], "reconstruct.batches": 3, "data.text": "python-docs"},
    )
    metrics = json.loads((out / "compression.json").read_text())["metrics"]
    assert metrics["reconstruct"]["sublayers"] == 4 and metrics["reconstruct"]["batches"] == 3
    assert metrics["reconstruct"]["error_after"] < metrics["reconstruct"]["error_before"]
    assert metrics["fidelity_after_reconstruct"] > metrics["fidelity_after_prune"]


@pytest.mark.parametrize("value", [-1, 1.5])
def test_bad_settings_are_refused(value):
    with pytest.raises(compress.RecipeError, match="reconstruct.batches"):
        compress.load_recipe("bert-l0").override({"reconstruct.batches": value})


def test_a_student_that_kept_no_sublayer_records_an_empty_refit(tmp_path, tiny_teacher_dir):
    out = compress.run(
        "bert-magnitude", teacher=tiny_teacher_dir, data="python-docs", out=tmp_path / "student", progress=False,
        overrides={
            **ONE_SHOT, "prune.axes": ["attention", "mlp"], "prune.target_sparsity": None,
            "prune.target": {"attention": 0, "mlp": 0}, "reconstruct.batches": 2, "data.text": "python-docs",
        },
    )
    metrics = json.loads((out / "compression.json").read_text())["metrics"]
    assert metrics["reconstruct"] == {"sublayers": 0, "batches": 2}
