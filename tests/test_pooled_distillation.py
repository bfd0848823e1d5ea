"""Distilling the pooled sentence embedding: ``distill.pooled_cos`` and ``distill.pooled_similarity``.

Both terms embed the last hidden state with the teacher's pooling (the student's through its own
identity-initialised projection): they vanish for an unchanged student, give the folded student the
gated model's loss exactly, and fall in a short real run, where each is logged under its own name.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers.modeling_outputs import BaseModelOutput

import compress
from compress.data import load_texts
from compress.distill import DistillationLoss, PooledDistillation
from compress.sentence import MEAN_POOLING, POOLERS, Pooling
from conftest import own_copy, randomise_gates

POOLED = {"pooled_cos": 1.0, "pooled_similarity": 1.0}
#: every pooling mode alone, a concatenation, and unit-length embeddings
POOLINGS = [Pooling((mode,)) for mode in POOLERS] + [Pooling(("cls", "mean")), Pooling(("max",), normalize=True)]


def _states(width: int, seed: int, batch: int = 4, seq: int = 7) -> BaseModelOutput:
    generator = torch.Generator().manual_seed(seed)
    return BaseModelOutput(hidden_states=(torch.randn(batch, seq, width, generator=generator),) * 2)


def _mask() -> torch.Tensor:
    """Right padding in row 1, left padding in row 2 (cls / lasttoken find the real ends)."""
    mask = torch.ones(4, 7, dtype=torch.long)
    mask[1, 5:] = 0
    mask[2, :2] = 0
    return mask


@pytest.mark.parametrize("pooling", POOLINGS, ids=lambda p: "+".join(p.modes) + ("-unit" if p.normalize else ""))
def test_pooled_terms_vanish_for_an_unchanged_student(pooling):
    loss = DistillationLoss(POOLED, 16, 16, pooling=pooling)
    states = _states(16, seed=0)
    parts = loss(states, states, attention_mask=_mask())
    assert parts["pooled_cos"].item() <= 1e-6 and parts["pooled_similarity"].item() == 0.0
    other = loss(states, _states(16, seed=1), attention_mask=_mask())
    assert other["pooled_cos"] > 0.01 and other["pooled_similarity"] > 1e-4
    assert other["loss"].item() == pytest.approx(other["pooled_cos"].item() + other["pooled_similarity"].item())


def test_pooled_terms_are_off_by_default_and_refuse_bad_input():
    assert DistillationLoss({"layers": [[0, 0]], "hidden_l1": 1.0}, 8, 8).pooled is None
    with pytest.raises(ValueError, match="distill.pooled_cos must be a finite number >= 0"):
        DistillationLoss({"pooled_cos": -1.0}, 8, 8)
    with pytest.raises(ValueError, match="pooling must be a compress.sentence.Pooling"):
        DistillationLoss(POOLED, 8, 8, pooling="mean")
    with pytest.raises(ValueError, match="needs cos or similarity > 0"):
        PooledDistillation(8, 8)
    loss = DistillationLoss(POOLED, 8, 8)
    with pytest.raises(ValueError, match="student hidden state has width 6 but this loss was built for 8"):
        loss(_states(6, seed=0), _states(8, seed=0))
    with pytest.raises(ValueError, match=r"mask of shape \(4, 3\) does not match the token positions \(4, 7\)"):
        loss(_states(8, seed=0), _states(8, seed=0), attention_mask=torch.ones(4, 3))
    with pytest.raises(ValueError, match="student output has no hidden_states but a hidden_\\* or pooled_\\* weight"):
        loss(BaseModelOutput(last_hidden_state=torch.zeros(4, 7, 8)), _states(8, seed=0))
    single = _states(8, seed=0, batch=1)
    assert loss(single, _states(8, seed=1, batch=1))["pooled_similarity"].item() == 0.0, "one text has no pairs"


@pytest.mark.parametrize(
    "pooling", [MEAN_POOLING, Pooling(("cls", "max"), normalize=True)], ids=["mean", "cls+max-unit"]
)
def test_pooled_terms_fold_with_the_student(pooling, minilm, sentences):
    teacher, tokenizer = own_copy(minilm)
    job = compress.attach(teacher, "bert-l0")
    randomise_gates(job, seed=3)
    batch = dict(tokenizer(sentences, padding=True, return_tensors="pt"))
    width = teacher.config.hidden_size
    loss = DistillationLoss(POOLED, width, width, pooling=pooling)
    noise = torch.randn(width, width, generator=torch.Generator().manual_seed(4)) * 0.05
    with torch.no_grad():
        loss.pooled.projections[0].weight.add_(noise)  # a trained projection: its folded slice must match
        teacher_out = teacher(**batch, output_hidden_states=True)
        gated_out = job.model.eval()(**batch, output_hidden_states=True)
        student, _ = compress.fold(job)
        student_out = student(**batch, output_hidden_states=True)
    kept = job.kept()["hidden"]
    assert 0 < kept.numel() < width
    dropped = torch.ones(width, dtype=torch.bool).index_fill(0, kept, False)
    assert gated_out.hidden_states[-1][..., dropped].abs().max() == 0, "pruned hidden units are exactly zero"
    folded = loss.fold(kept)
    assert folded.pooled.pooling == pooling and folded.pooled.student_width == kept.numel()
    assert loss.remap_layers({}).pooled.pooling == pooling, "the pooling survives a layer remap"
    expected = loss(gated_out, teacher_out, attention_mask=batch["attention_mask"])
    actual = folded(student_out, teacher_out, attention_mask=batch["attention_mask"])
    assert expected["pooled_cos"] > 1e-3 and expected["pooled_similarity"] > 1e-5, "the check is not vacuous"
    for name in ("pooled_cos", "pooled_similarity", "distill_pooled", "loss"):
        assert abs(actual[name].item() - expected[name].item()) <= 1e-5, name


def _small_corpus(path: Path, paragraphs: int = 60) -> Path:
    """Paragraphs of the built-in corpus as a .txt file: few held-out texts, so the fidelity checks are quick."""
    found = [p.strip() for doc in load_texts()["text"][:20] for p in doc.split("\n\n") if len(p.strip()) > 80]
    path.write_text("\n\n".join(found[:paragraphs]) + "\n", encoding="utf-8")
    return path


def test_a_short_run_lowers_the_pooled_terms_and_logs_each(minilm, tmp_path):
    """The real MiniLM, 30 pruning steps: sampled gates and dropout start the student away from the teacher."""
    teacher, tokenizer = own_copy(minilm)
    overrides = {
        "train.max_steps": 30, "train.batch_size": 8, "train.seq_len": 32, "train.logging_steps": 2,
        "finetune.max_steps": 2, "distill.pooled_cos": 1.0, "distill.pooled_similarity": 1.0,
    }
    out = compress.run("bert-l0", teacher=teacher, processor=tokenizer, data=_small_corpus(tmp_path / "corpus.txt"),
                       out=tmp_path / "run", overrides=overrides, progress=False)
    logs = json.loads((out / "training_log.json").read_text())
    for stage in ("prune", "finetune"):  # the folded student's loss (finetune) has the pooled terms too
        logged = [e for e in logs[stage] if "loss" in e]
        terms = {"pooled_cos", "pooled_similarity", "distill_pooled", "hidden_l1"}
        assert logged and all(terms <= e.keys() for e in logged), stage
    prune = [e for e in logs["prune"] if "pooled_cos" in e]
    third = len(prune) // 3
    for name in ("pooled_cos", "pooled_similarity"):
        values = [e[name] for e in prune]
        assert sum(values[-third:]) < 0.8 * sum(values[:third]), (name, values)
