"""Slow end to end: `compress run bert-l0` with no other arguments, as the README's first command.

Deselected by default (about 8 minutes on 2 cores); CI runs it with `-m slow`.
"""

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

SCRIPT = shutil.which("compress") or str(Path(sys.executable).with_name("compress"))


@pytest.mark.slow
def test_default_run_trains_a_half_size_student_that_loads(tmp_path, minilm, sentences):
    proc = subprocess.run([SCRIPT, "run", "bert-l0"], cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "bert-l0-student"
    record = json.loads((out / "compression.json").read_text())
    assert abs(record["structure"]["encoder_sparsity"] - 0.5) <= 0.01
    metrics = record["metrics"]
    assert metrics["fidelity_after_finetune"] > 0.6 and metrics["fidelity_after_prune"] > 0.6
    student = transformers.AutoModel.from_pretrained(out, trust_remote_code=True).eval()
    teacher, tokenizer = minilm
    batch = transformers.AutoTokenizer.from_pretrained(out)(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = student(**batch).last_hidden_state
    assert hidden.shape[:2] == batch["input_ids"].shape and torch.isfinite(hidden).all()
    assert sum(p.numel() for p in student.parameters()) == record["student_parameters"]
