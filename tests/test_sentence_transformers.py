"""A sentence-transformers teacher gives a sentence-transformers student folder (pooling, normalisation, length)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import torch.nn.functional as F
import transformers
from sentence_transformers import SentenceTransformer

import compress
from compress.errors import UnsupportedModelError
from compress.teachers import default_teacher_path

ONE_SHOT = {"train.max_steps": 0, "finetune.max_steps": 0}


@pytest.mark.parametrize("export_format", ["auto", "heterogeneous"])
def test_the_minilm_student_is_a_sentence_transformer_with_the_teachers_pipeline(tmp_path, sentences, export_format):
    out = compress.run("bert-l0", out=tmp_path / "student", progress=False,
                       overrides={**ONE_SHOT, "export.format": export_format})
    hidden = transformers.AutoConfig.from_pretrained(out).hidden_size
    assert json.loads((out / "1_Pooling/config.json").read_text())["word_embedding_dimension"] == hidden
    assert [m["type"].rpartition(".")[2] for m in json.loads((out / "modules.json").read_text())] == [
        "Transformer", "Pooling", "Normalize"]

    model = SentenceTransformer(str(out), device="cpu", trust_remote_code=export_format == "heterogeneous")
    assert model.max_seq_length == 256
    embeddings = model.encode(sentences, convert_to_tensor=True)
    # What the teacher's pipeline computes on the student: mean pooling over tokens, then unit length.
    student = transformers.AutoModel.from_pretrained(out, trust_remote_code=True).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    batch = tokenizer(sentences, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        states = student(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    expected = F.normalize((states * mask).sum(1) / mask.sum(1), dim=-1)
    assert (embeddings - expected).abs().max().item() <= 1e-5
    assert torch.allclose(embeddings.norm(dim=-1), torch.ones(len(sentences)), atol=1e-5)


def test_a_teacher_pipeline_with_modules_the_student_cannot_carry_is_refused_before_work(tmp_path):
    teacher = tmp_path / "teacher"
    shutil.copytree(default_teacher_path(), teacher)
    modules = json.loads((teacher / "modules.json").read_text())
    modules.append({"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"})
    (teacher / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(UnsupportedModelError, match="Dense"):
        compress.run("bert-l0", teacher=teacher, out=tmp_path / "student", progress=False, overrides=ONE_SHOT)
    assert not (tmp_path / "student").exists()


def test_a_plain_transformers_teacher_gives_a_plain_student(tiny_teacher_dir, tmp_path):
    overrides = {**ONE_SHOT, "distill.layers": [[0, 0], [2, 2]]}
    out = compress.run("bert-l0", teacher=tiny_teacher_dir, out=tmp_path / "student", progress=False, overrides=overrides)
    assert not (out / "modules.json").exists()
