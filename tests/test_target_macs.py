"""Targets in what users pay for: ``prune.target_macs`` (MACs per token) and ``prune.count: all`` (the whole file).

The MACs a target counts (``GatedModel.macs_per_token``) must equal what ``compress report`` measures
with torch's FLOP counter on the folded student, exactly, for every text family: L0's Lagrangian
constrains the differentiable form and the snap meets it.
"""

from __future__ import annotations

import json

import pytest
import torch
import transformers

import compress
from compress.errors import TargetError
from compress.measure import macs_per_unit
from compress.targets import Target
from conftest import randomise_gates, save_tiny_teacher
from speech_helpers import speech_recipe, tiny_speech_config
from test_text_families import _teacher

SEQ = 24
FAMILY_CASES = [
    ("bert", "Model"), ("bert", "ForMaskedLM"), ("roberta", "ForSequenceClassification"), ("electra", "Model"),
    ("distilbert", "Model"), ("mpnet", "Model"),
]


def _bert(head: str) -> transformers.PreTrainedModel:
    config = transformers.BertConfig(vocab_size=120, hidden_size=48, num_hidden_layers=4, num_attention_heads=6,
                                     intermediate_size=64, max_position_embeddings=40)
    torch.manual_seed(0)
    return getattr(transformers, f"Bert{head}")(config).eval()


@pytest.mark.parametrize("family, head", FAMILY_CASES)
def test_the_counted_macs_equal_the_measured_ones(family, head):
    teacher = _bert(head) if family == "bert" else _teacher(family, head)
    job = compress.attach(teacher, "bert-l0")
    gated = job.gated
    assert gated.macs_per_token({}, SEQ) == macs_per_unit(teacher.base_model, SEQ, 0.0)
    randomise_gates(job, 3)
    student = job.fold()
    sizes = job.structure().sizes
    assert gated.macs_per_token(sizes, SEQ) == macs_per_unit(student.base_model, SEQ, 0.0)
    # the expected form is differentiable in the gates, and between the teacher's and nothing
    expected = gated.macs_per_token(gated.expected_sizes(), SEQ)
    expected.backward()
    assert all(p.grad is not None for n, p in job.gates.named_parameters() if n.endswith("log_alpha"))
    assert 0 < expected.item() < gated.macs_per_token({}, SEQ)


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, minilm):
    return save_tiny_teacher(tmp_path_factory.mktemp("teacher4"), minilm[1], layers=4)


QUICK = {"train.max_steps": 24, "train.batch_size": 4, "train.seq_len": 32, "finetune.max_steps": 0,
         "prune.schedule.ramp_steps": 12}


def test_l0_meets_a_macs_target_within_one_percent(teacher_dir, tmp_path):
    out = compress.run("bert-l0", teacher=teacher_dir, out=tmp_path / "macs", progress=False,
                       overrides={**QUICK, "prune.target_sparsity": None, "prune.target_macs": 0.5})
    record = json.loads((out / "compression.json").read_text())
    teacher = transformers.AutoModel.from_pretrained(teacher_dir)
    student = compress.load_student(out)
    measured = macs_per_unit(student.base_model, 32, 0.0) / macs_per_unit(teacher.base_model, 32, 0.0)
    assert abs(measured - 0.5) <= 0.005  # 1% of half the teacher's MACs
    assert record["structure"]["macs_ratio"] == pytest.approx(measured, abs=1e-6)
    assert record["metrics"]["target_macs"] == 0.5 and record["metrics"]["macs_seq_len"] == 32
    # the Lagrangian's target is in MACs: half of them removed, reached as the schedule ramps
    log = json.loads((out / "training_log.json").read_text())["prune"]
    targets = [float(e["target_sparsity"]) for e in log if "target_sparsity" in e]
    assert targets == sorted(targets) and 0.45 < targets[-1] <= 0.5


def test_count_all_counts_the_embeddings_and_prunes_hidden_harder(teacher_dir, tmp_path):
    """With MiniLM's vocabulary the embeddings are most of this teacher: counting them shrinks the residual stream."""
    records = {}
    for count in ("encoder", "all"):
        out = compress.run("bert-l0", teacher=teacher_dir, out=tmp_path / count, progress=False,
                           overrides={**QUICK, "prune.target_sparsity": 0.5, "prune.count": count})
        records[count] = json.loads((out / "compression.json").read_text())
    encoder, everything = records["encoder"]["structure"], records["all"]["structure"]
    assert abs(1 - everything["parameters"] / everything["teacher_parameters"] - 0.5) <= 0.01
    assert abs(encoder["encoder_sparsity"] - 0.5) <= 0.01
    assert everything["sizes"]["hidden"] < encoder["sizes"]["hidden"] / 1.5
    assert records["all"]["metrics"]["target_count"] == "all"


def test_a_uniform_structure_meets_the_macs_target(minilm):
    """One-shot and scheduled methods build a uniform structure at the cost the target counts."""
    job = compress.attach(minilm[0], "bert-magnitude")
    for kept in (0.5, 0.25):
        target = Target(macs=kept, seq_len=128)
        job.gated.keep_top(target.kind_sizes(job.gated), {n: torch.rand(job.gated.axis(n).size) for n in job.gates.names()})
        assert abs(1 - target.achieved(job.gated) - kept) <= 0.01 * kept


def test_macs_targets_are_refused_where_they_cannot_be_counted():
    teacher = transformers.HubertModel(tiny_speech_config()).eval()
    with pytest.raises(TargetError, match="set prune.target_sparsity instead"):
        compress.attach(teacher, speech_recipe("hubert", **{"prune.target_sparsity": None, "prune.target_macs": 0.5}))
    with pytest.raises(TargetError, match=r"target_macs=0.01 cannot be reached .* at least 0.\d\d of MACs stay"):
        ffn_only = compress.load_recipe("bert-l0").override({"prune.axes": ["ffn"]})
        Target(macs=0.01).check_reachable(compress.attach(_bert("Model"), ffn_only).gated)
