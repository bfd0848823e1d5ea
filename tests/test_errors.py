"""Bad input: one clear message each, naming the problem and the fix."""

from __future__ import annotations

import pytest
import torch
import transformers

import compress
from conftest import tiny_bert_config
from speech_helpers import tiny_speech_config


def test_unsupported_model_names_the_supported_families():
    config = transformers.DebertaV2Config(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                          intermediate_size=40)
    model = transformers.DebertaV2Model(config)
    with pytest.raises(compress.UnsupportedModelError) as err:
        compress.attach(model, "bert-l0")
    message = str(err.value)
    assert "DebertaV2Model" in message and "deberta-v2" in message
    assert "bert: BertModel, BertForMaskedLM, BertForSequenceClassification, BertForTokenClassification" in message
    assert "distilbert: DistilBertModel" in message and "wavlm: WavLMModel" in message


def test_unsupported_bert_head_is_an_error_too():
    model = transformers.BertForMultipleChoice(tiny_bert_config())
    with pytest.raises(compress.UnsupportedModelError, match="BertForMultipleChoice: the bert adapter does not know"):
        compress.attach(model, "bert-l0")


def test_bert_decoder_is_refused():
    model = transformers.BertModel(tiny_bert_config(is_decoder=True))
    with pytest.raises(compress.UnsupportedModelError, match="decoder.*is_decoder=False"):
        compress.attach(model, "bert-l0")


def test_unknown_recipe_key_suggests_the_right_one():
    recipe = compress.load_recipe("bert-l0")
    with pytest.raises(compress.RecipeError, match=r"unknown key 'prune.target_sparsty'.*Did you mean 'prune.target_sparsity'"):
        recipe.override({"prune.target_sparsty": 0.6})


def test_unknown_top_level_key_in_a_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nfamily: bert\nprune: {target_sparsity: 0.5}\ntrian: {max_steps: 3}\n")
    with pytest.raises(compress.RecipeError, match=r"mine.yaml: unknown key 'trian'.*Did you mean 'train'"):
        compress.load_recipe(path)
    # trainer: is the TrainingArguments passthrough, which refuses what the recipe's own keys set
    path.write_text("name: mine\nfamily: bert\nprune: {target_sparsity: 0.5}\ntrainer: {max_steps: 3}\n")
    with pytest.raises(compress.RecipeError, match=r"mine.yaml: trainer.max_steps: set train.max_steps"):
        compress.load_recipe(path)


def test_target_larger_than_the_teacher(minilm):
    teacher, _ = minilm
    recipe = compress.load_recipe("bert-l0").override({"prune.target_sparsity": None, "prune.target": {"hidden": 512}})
    with pytest.raises(compress.TargetError, match="hidden = 512 is larger than the teacher's 384"):
        compress.attach(teacher, recipe)
    recipe = recipe.override({"prune.target": {"ffn": 4096}})
    with pytest.raises(compress.TargetError, match="ffn = 4096 is larger than the teacher's 1536"):
        compress.attach(teacher, recipe)


def test_non_empty_output_directory_without_overwrite(minilm, tmp_path):
    teacher, tokenizer = minilm
    student = compress.attach(teacher, "bert-l0").fold()
    (tmp_path / "old-run.txt").write_text("precious")
    with pytest.raises(compress.OutputDirError, match="is not empty.*--overwrite"):
        compress.save_student(student, tmp_path, processor=tokenizer)
    assert [p.name for p in tmp_path.iterdir()] == ["old-run.txt"]


def test_output_into_the_teacher_folder_is_refused_even_with_overwrite(tmp_path):
    teacher_dir = tmp_path / "teacher"
    transformers.BertModel(tiny_bert_config()).save_pretrained(teacher_dir)
    with pytest.raises(compress.OutputDirError, match="it is the run's input"):
        compress.run("bert-l0", teacher=teacher_dir, out=teacher_dir, overwrite=True, progress=False)
    assert (teacher_dir / "model.safetensors").is_file()


def test_stock_export_of_a_heterogeneous_student_is_refused():
    teacher = transformers.BertModel(tiny_bert_config())
    recipe = compress.load_recipe("bert-l0").override({"export.format": "stock"})
    job = compress.attach(teacher, recipe)
    job.prune_to({"hidden": 40, "heads": 3, "ffn": 30})
    with pytest.raises(compress.TargetError, match="export.format is 'stock'.*use export.format=auto"):
        job.fold()


def test_recipe_family_must_be_known_and_match_the_teacher(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: r\nfamily: gpt2\nprune: {target_sparsity: 0.5}\n")
    with pytest.raises(compress.RecipeError, match="'family' must be one of bert, roberta, .*, auto"):
        compress.load_recipe(path)
    path.write_text("name: r\nfamily: hubert\nprune: {target_sparsity: 0.5}\n")
    speech = compress.load_recipe(path)
    assert speech.prune["axes"] == ["conv", "heads", "ffn", "attention", "mlp"], "axes default to the family's"
    with pytest.raises(compress.RecipeError, match="is for family 'hubert' but the teacher is 'bert'; use a bert recipe"):
        compress.attach(transformers.BertModel(tiny_bert_config()), speech)


def test_a_speech_recipe_without_a_teacher_asks_for_one(tmp_path):
    """The default teacher is MiniLM (text): a speech recipe without --teacher names what to pass, before any work."""
    with pytest.raises(compress.RecipeError, match="bundled MiniLM.*--teacher PATH"):
        compress.run("hubert-dphubert", data=tmp_path / "audio", out=tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_a_recipe_of_another_family_fails_before_the_data_is_read(tmp_path):
    torch.manual_seed(0)
    transformers.HubertModel(tiny_speech_config("hubert")).save_pretrained(tmp_path / "hubert")
    with pytest.raises(compress.RecipeError, match="is for family 'bert' but the teacher is 'hubert'; use a hubert recipe"):
        compress.run("bert-l0", teacher=tmp_path / "hubert", out=tmp_path / "run", progress=False)

