"""Export: saved students load in a fresh process that cannot import this library."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

import compress
from conftest import load_elsewhere, randomise_gates, tiny_bert_config, token_batch


def test_uniform_minilm_student_is_stock_bert_and_loads_without_compress(minilm, sentences, tmp_path):
    teacher, tokenizer = minilm
    job = compress.attach(teacher, "bert-l0")
    job.prune_to({"hidden": 256, "heads": 8, "ffn": 1024})
    student, record = compress.fold(job)
    out = compress.save_student(student, tmp_path / "student", processor=tokenizer, record=record)
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "bert"
    assert (config["hidden_size"], config["num_attention_heads"], config["intermediate_size"]) == (256, 8, 1024)
    assert "auto_map" not in config and not list(out.glob("*.py"))
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))
    batch = dict(tokenizer(sentences, padding=True, return_tensors="pt"))
    with torch.no_grad():
        expected = student(**batch).last_hidden_state
    name, got = load_elsewhere(out, "AutoModel", False, batch, tmp_path)
    assert name == "BertModel"
    assert (got - expected).abs().max().item() <= 1e-5
    record = json.loads((out / "compression.json").read_text())
    assert record["format"] == "stock" and record["student_parameters"] == job.structure().parameters
    assert record["structure"]["sizes"]["hidden"] == 256 and record["recipe"]["name"] == "bert-l0"
    assert record["teacher"] == "sentence-transformers/all-MiniLM-L6-v2" and record["teacher_path"].endswith("model")
    # The tokenizer travels with the student and still tokenises the same way.
    reloaded = transformers.AutoTokenizer.from_pretrained(out)
    assert reloaded(sentences)["input_ids"] == tokenizer(sentences)["input_ids"]


def test_heterogeneous_minilm_student_loads_with_remote_code_only(minilm, sentences, tmp_path):
    teacher, tokenizer = minilm
    job = compress.attach(teacher, "bert-l0")
    randomise_gates(job, 3)
    student = job.fold()
    out = compress.save_student(student, tmp_path / "student", processor=tokenizer)
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "compressed_bert"
    assert config["auto_map"]["AutoModel"] == "modeling_compressed_bert.CompressedBertModel"
    assert (out / "modeling_compressed_bert.py").is_file()
    assert config["layer_attention"][1] is False and config["layer_mlp"][-1] is False
    batch = dict(tokenizer(sentences, padding=True, return_tensors="pt"))
    with torch.no_grad():
        expected = student(**batch).last_hidden_state
    name, got = load_elsewhere(out, "AutoModel", True, batch, tmp_path)
    assert name == "CompressedBertModel"
    assert (got - expected).abs().max().item() <= 1e-5
    # In this process compress is imported, so no remote code is needed.
    loaded = transformers.AutoModel.from_pretrained(out).eval()
    with torch.no_grad():
        assert (loaded(**batch).last_hidden_state - expected).abs().max().item() <= 1e-5
    assert type(compress.load_student(out)) is type(student)


@pytest.mark.parametrize(
    "cls, auto_name",
    [
        (transformers.BertForMaskedLM, "AutoModelForMaskedLM"),
        (transformers.BertForSequenceClassification, "AutoModelForSequenceClassification"),
    ],
)
def test_heterogeneous_heads_round_trip(cls, auto_name, tmp_path):
    torch.manual_seed(0)
    teacher = cls(tiny_bert_config()).eval()
    job = compress.attach(teacher, "bert-l0")
    randomise_gates(job, 1)
    student = job.fold()
    out = compress.save_student(student, tmp_path / "student")
    batch = token_batch(teacher.config.vocab_size)
    with torch.no_grad():
        expected = student(**batch).logits
    name, got = load_elsewhere(out, auto_name, True, batch, tmp_path)
    assert name == f"Compressed{cls.__name__}"
    assert (got - expected).abs().max().item() <= 1e-5
    reloaded = compress.load_student(out)
    assert type(reloaded) is type(student)
    if cls is transformers.BertForMaskedLM:
        # The decoder stays tied to the word embeddings after the round trip.
        assert reloaded.cls.predictions.decoder.weight.data_ptr() == reloaded.bert.embeddings.word_embeddings.weight.data_ptr()


def test_save_refuses_non_empty_folder_and_overwrites_only_when_asked(tmp_path):
    teacher = transformers.BertModel(tiny_bert_config()).eval()
    student = compress.attach(teacher, "bert-l0").fold()
    out = tmp_path / "student"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    for overwrite in (False, True):  # a folder that is not a student is never replaced
        with pytest.raises(compress.OutputDirError, match="not empty and holds no student"):
            compress.save_student(student, out, overwrite=overwrite)
    assert (out / "notes.txt").read_text() == "keep me"
    earlier = compress.save_student(student, tmp_path / "earlier")
    with pytest.raises(compress.OutputDirError, match="holds an earlier student; pass --overwrite"):
        compress.save_student(student, earlier)
    (earlier / "notes.txt").write_text("part of the earlier student")
    compress.save_student(student, earlier, overwrite=True)
    assert (earlier / "model.safetensors").is_file() and not (earlier / "notes.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no partial folder is left behind"
