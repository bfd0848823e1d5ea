"""One run, several students: ``prune.target_sparsity`` (or ``target_macs``) as a list.

Stage 1 trains once with its target rising through the sizes; each student is settled at its size,
folded exactly, distilled and written to ``OUT/<label>`` with its own compression.json, beside the
``students.json`` summary.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import compress
from compress.cli import main
from compress.errors import OutputDirError, RecipeError
from compress.pipeline import part_steps
from conftest import load_many_elsewhere, offline_env, save_tiny_teacher

SIZES = [0.75, 0.5, 0.6]  # any order: the students come out largest first
QUICK = {
    "train.max_steps": 30,
    "train.save_steps": 10,
    "train.batch_size": 4,
    "train.seq_len": 32,
    "finetune.max_steps": 4,
    "prune.schedule.ramp_steps": 15,
}
LABELS = ["sparsity-0.50", "sparsity-0.60", "sparsity-0.75"]


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, minilm) -> Path:
    """A 4-layer random BERT: fine enough a structure for every size to be met within 1%."""
    return save_tiny_teacher(tmp_path_factory.mktemp("teacher4"), minilm[1], layers=4)


@pytest.fixture(scope="module")
def three_students(teacher_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sizes") / "students"
    overrides = {**QUICK, "prune.target_sparsity": SIZES}
    return compress.run("bert-l0", teacher=teacher_dir, out=out, overrides=overrides, progress=False)


def _records(out: Path) -> list[dict]:
    return [json.loads((out / label / "compression.json").read_text()) for label in LABELS]


def test_each_student_meets_its_own_target(three_students):
    assert sorted(p.name for p in three_students.iterdir()) == [*LABELS, "students.json"]
    for record, wanted in zip(_records(three_students), (0.5, 0.6, 0.75)):
        assert abs(record["structure"]["encoder_sparsity"] - wanted) <= 0.01
        assert record["recipe"]["prune"]["target_sparsity"] == wanted
        assert record["metrics"]["sizes"] == {"target_sparsity": [0.5, 0.6, 0.75], "student": LABELS.index(f"sparsity-{wanted:.2f}")}
        assert record["metrics"]["target_sparsity"] == wanted
        assert 0 < record["structure"]["macs_ratio"] < 1


def test_smaller_students_inherit_the_larger_ones_training(three_students):
    """Each student's log holds every part of stage 1 up to its size, steps counted on, then its own stage 2."""
    logs = [json.loads((three_students / label / "training_log.json").read_text()) for label in LABELS]
    for index, log in enumerate(logs):
        steps = [entry["step"] for entry in log["prune"] if "loss" in entry]
        assert steps == sorted(steps) and max(steps) == sum(part_steps(30, 3)[: index + 1])
        # logged values are means over the logging interval: they rise, past the last size, up to this one
        targets = [float(entry["target_sparsity"]) for entry in log["prune"] if "target_sparsity" in entry]
        assert targets == sorted(targets)
        assert (0.0, 0.5, 0.6)[index] < max(targets) <= (0.5, 0.6, 0.75)[index] + 1e-6
        assert log["finetune"]
    # the 0.6 student's part started at the 0.5 target, not at the teacher
    middle = [float(e["target_sparsity"]) for e in logs[1]["prune"] if "target_sparsity" in e and e["step"] > 10]
    assert min(middle) >= 0.5 - 1e-6


def test_the_summary_lists_every_student(three_students):
    summary = json.loads((three_students / "students.json").read_text())
    rows = summary["students"]
    assert [row["folder"] for row in rows] == LABELS
    records = _records(three_students)
    for row, record in zip(rows, records):
        assert row["encoder_sparsity"] == record["structure"]["encoder_sparsity"]
        assert row["parameters"] == record["structure"]["parameters"]
        assert row["fidelity_after_finetune"] == record["metrics"]["fidelity_after_finetune"]
    assert summary["minutes"] > 0


def test_every_student_reloads_without_the_library(three_students, tmp_path):
    batch = {"input_ids": torch.randint(1000, 2000, (2, 9), generator=torch.Generator().manual_seed(0))}
    batch["attention_mask"] = torch.ones_like(batch["input_ids"])
    cases, expected = [], []
    for label, record in zip(LABELS, _records(three_students)):
        student = compress.load_student(three_students / label)
        with torch.no_grad():
            expected.append(student(**batch).last_hidden_state)
        cases.append((three_students / label, "AutoModel", record["format"] == "heterogeneous"))
    for (_, got), want in zip(load_many_elsewhere(cases, batch, tmp_path), expected):
        assert (got - want).abs().max().item() <= 1e-5


def test_a_scheduled_method_takes_a_list_of_macs_targets(tiny_teacher_dir, tmp_path, capsys):
    out = tmp_path / "magnitude"
    code = main([
        "run", "bert-magnitude", "--teacher", str(tiny_teacher_dir), "--out", str(out), "--no-progress",
        *(f"{k}={v}" for k, v in QUICK.items() if not k.startswith("prune.")), "prune.target_sparsity=null",
        "prune.target_macs=[0.5, 0.7]", "prune.schedule={kind: linear, start_step: 0, ramp_steps: 12}",
    ])
    assert code == 0
    printed = capsys.readouterr().out
    assert "2 students written to" in printed and "macs-0.70" in printed and "macs-0.50" in printed
    for label, kept in (("macs-0.70", 0.7), ("macs-0.50", 0.5)):
        record = json.loads((out / label / "compression.json").read_text())
        assert abs(record["structure"]["macs_ratio"] - kept) <= 0.01 * kept
        assert record["metrics"]["target_macs"] == kept


def test_rerunning_into_the_folder_needs_overwrite(three_students, tiny_teacher_dir):
    with pytest.raises(OutputDirError, match="holds an earlier student"):
        compress.run("bert-l0", teacher=tiny_teacher_dir, out=three_students, overrides={**QUICK, "prune.target_sparsity": SIZES})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"prune.target_sparsity": [0.5, 0.5]}, "lists a size twice"),
        ({"prune.target_sparsity": []}, "non-empty list"),
        ({"prune.target_sparsity": [0.5, 1.2]}, r"must be in \[0, 1\).*got 1.2"),
        ({"prune.target_sparsity": [0.5, 0.6], "train.max_steps": 1}, "each needs at least one step"),
        ({"prune.target_macs": 0.5}, "set exactly one of"),
    ],
)
def test_bad_lists_are_refused(tiny_teacher_dir, tmp_path, overrides, message):
    with pytest.raises(RecipeError, match=message):
        compress.run("bert-l0", teacher=tiny_teacher_dir, out=tmp_path / "x", overrides={**QUICK, **overrides})


def test_report_points_at_the_students(three_students, capsys):
    assert main(["report", str(three_students)]) == 2
    assert f"pass one of them, e.g. {three_students / LABELS[0]}" in capsys.readouterr().err


@pytest.mark.slow
def test_an_interrupted_multi_size_run_resumes_to_the_same_students(teacher_dir, tmp_path):
    """SIGINT in the second student's part of stage 1; --resume restores the first part and ends with the same students."""
    script = shutil.which("compress") or str(Path(sys.executable).with_name("compress"))
    overrides = {**QUICK, "prune.target_sparsity": SIZES, "train.save_steps": 4}
    args = [script, "run", "bert-l0", "--teacher", str(teacher_dir), *(f"{k}={json.dumps(v)}" for k, v in overrides.items())]
    reference = subprocess.run([*args, "--out", "reference"], cwd=tmp_path, env=offline_env(), capture_output=True, text=True)
    assert reference.returncode == 0, reference.stderr[-2000:]
    proc = subprocess.Popen([*args, "--out", "resumed"], cwd=tmp_path, env=offline_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    checkpoint = tmp_path / "resumed.checkpoints/prune/sparsity-0.60/checkpoint-4"
    deadline = time.time() + 300
    while not checkpoint.is_dir() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130 and "--resume" in stderr, stderr[-2000:]
    assert not (tmp_path / "resumed").exists()
    resumed = subprocess.run([*args, "--out", "resumed", "--resume"], cwd=tmp_path, env=offline_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    for label in LABELS:
        expected = load_file(tmp_path / "reference" / label / "model.safetensors")
        got = load_file(tmp_path / "resumed" / label / "model.safetensors")
        assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected), label
