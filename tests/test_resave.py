"""A loaded heterogeneous student re-saved with save_pretrained (as push_to_hub does) keeps its modeling code."""

from __future__ import annotations

import torch
import transformers

import compress
from conftest import load_elsewhere, tiny_bert_config, token_batch


def test_save_pretrained_of_a_loaded_student_writes_its_code_and_loads_without_the_library(tmp_path):
    torch.manual_seed(0)
    teacher = transformers.BertModel(tiny_bert_config()).eval()
    job = compress.attach(teacher, compress.load_recipe("bert-l0").override({"export.format": "heterogeneous"}))
    job.prune_to({"hidden": 40, "heads": 4, "ffn": 50})
    student, record = compress.fold(job)
    out = compress.save_student(student, tmp_path / "student", record=record)

    loaded = transformers.AutoModel.from_pretrained(out).eval()  # registered by import compress: no remote code
    resaved = tmp_path / "resaved"
    loaded.save_pretrained(resaved)
    assert (resaved / "modeling_compressed_bert.py").is_file(), "save_pretrained wrote the modeling file"
    batch = token_batch(teacher.config.vocab_size)
    with torch.no_grad():
        expected = loaded(**batch).last_hidden_state
    name, got = load_elsewhere(resaved, "AutoModel", remote=True, batch=batch, tmp_path=tmp_path)
    assert name == "CompressedBertModel"
    assert (got - expected).abs().max().item() <= 1e-5
