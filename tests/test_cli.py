"""The ``compress`` console script, run as a user runs it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers

import compress

SCRIPT = shutil.which("compress") or str(Path(sys.executable).with_name("compress"))


def _compress(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([SCRIPT, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


# One-shot structure (no training steps): the CLI path end to end in seconds. The trained default
# run is covered by tests/test_driver.py and the slow end-to-end test.
ONE_SHOT = ("train.max_steps=0", "finetune.max_steps=0")


@pytest.mark.slow  # minutes-long on 2 cores; CI runs it in its -m slow pass
def test_run_default_teacher_writes_a_loadable_half_size_student(tmp_path, minilm, sentences):
    proc = _compress("run", "bert-l0", "--out", "student", *ONE_SHOT, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "student written to student (stock config, model_type bert)" in proc.stdout
    out = tmp_path / "student"
    record = json.loads((out / "compression.json").read_text())
    assert abs(record["structure"]["encoder_sparsity"] - 0.5) <= 0.01
    student = transformers.AutoModel.from_pretrained(out, trust_remote_code=True)
    assert sum(p.numel() for p in student.parameters()) == record["student_parameters"]
    # The one-shot student keeps the teacher's weights on the kept units: same embedding rows.
    teacher, tokenizer = minilm
    kept = torch.tensor(record["kept_indices"]["hidden"])
    assert torch.equal(student.embeddings.word_embeddings.weight, teacher.embeddings.word_embeddings.weight[:, kept])
    assert transformers.AutoTokenizer.from_pretrained(out)(sentences)["input_ids"] == tokenizer(sentences)["input_ids"]

    again = _compress("run", "bert-l0", "--out", "student", *ONE_SHOT, cwd=tmp_path)
    assert again.returncode == 2 and "holds an earlier student" in again.stderr and "--overwrite" in again.stderr
    overridden = _compress("run", "bert-l0", "--out", "student", "--overwrite", "prune.target_sparsity=0.75", *ONE_SHOT, cwd=tmp_path)
    assert overridden.returncode == 0, overridden.stderr[-2000:]
    record = json.loads((out / "compression.json").read_text())
    assert abs(record["structure"]["encoder_sparsity"] - 0.75) <= 0.01


def test_run_with_a_teacher_folder_and_a_bad_override(tmp_path):
    teacher_dir = tmp_path / "teacher"
    config = transformers.BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=40)
    transformers.BertForMaskedLM(config).save_pretrained(teacher_dir)
    proc = _compress("run", "bert-l0", "--teacher", str(teacher_dir), "--out", "s", "prune.target_sparsity=0.3", *ONE_SHOT, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    student = compress.load_student(tmp_path / "s")
    assert type(student).__name__ in ("BertForMaskedLM", "CompressedBertForMaskedLM")
    bad = _compress("run", "bert-l0", "--teacher", str(teacher_dir), "--out", "t", "prune.target_sparsty=0.3", cwd=tmp_path)
    assert bad.returncode == 2 and "Did you mean 'prune.target_sparsity'" in bad.stderr
    assert not (tmp_path / "t").exists()


def test_recipes_lists_the_bundled_recipes(tmp_path):
    proc = _compress("recipes", cwd=tmp_path)
    assert proc.returncode == 0
    assert "bert-l0" in proc.stdout and "method=l0" in proc.stdout and "50% of encoder parameters" in proc.stdout
