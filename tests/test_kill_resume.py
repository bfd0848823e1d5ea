"""SIGKILL at every stage of a run: the resumed run ends with the uninterrupted run's student, tensor for
tensor, and an ``--overwrite`` run killed anywhere leaves the previous student exactly as it was."""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import offline_env

SHORT = {
    "train.max_steps": 8,
    "train.batch_size": 4,
    "train.seq_len": 32,
    "train.logging_steps": 2,
    "train.save_steps": 4,
    "finetune.max_steps": 8,
    "prune.schedule": {"kind": "linear", "start_step": 0, "ramp_steps": 6},
    "distill.layers": [[0, 0], [1, 1], [2, 2]],
    "data.text": "python-docs",  # these test the driver; the small corpus tokenises in a fraction of the default mix's time
}

# Runs the CLI after arranging for the process to SIGKILL itself at one point of the run (KILL_AT).
KILLER = textwrap.dedent(
    """
    import os, signal, sys
    import compress.pipeline as pipeline
    from compress.trainer import CompressionTrainer

    point = os.environ["KILL_AT"]

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    if point == "fold":
        pipeline.STAGES = tuple(die if stage is pipeline.fold_stage else stage for stage in pipeline.STAGES)
    elif point == "export":
        write = pipeline.write_student
        def write_then_die(*args, **kwargs):
            write(*args, **kwargs)  # the student is complete in the staging folder, not yet moved into place
            die()
        pipeline.write_student = write_then_die
    else:  # "prune-N" / "finetune-N": killed before the optimiser step N + 1 of that stage
        stage, _, after = point.partition("-")
        training_step = CompressionTrainer.training_step
        def step_or_die(self, *args, **kwargs):
            if (self.method is not None) == (stage == "prune") and self.state.global_step >= int(after):
                die()
            return training_step(self, *args, **kwargs)
        CompressionTrainer.training_step = step_or_die

    from compress.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)

POINTS = ("prune-5", "fold", "finetune-2", "finetune-6", "export")


def _command(teacher: Path, out: str, *extra: str) -> list[str]:
    overrides = [f"{k}={json.dumps(v)}" for k, v in SHORT.items()]
    return ["run", "bert-l0", "--teacher", str(teacher), "--out", out, "--no-progress", *extra, *overrides]


def _cli(args: list[str], cwd: Path, kill_at: str | None = None) -> subprocess.CompletedProcess:
    if kill_at is None:
        command = [sys.executable, "-m", "compress.cli", *args]
        env = offline_env()
    else:
        command = [sys.executable, "-c", KILLER, *args]
        env = {**offline_env(), "KILL_AT": kill_at}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def reference(tiny_teacher_dir, tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("reference")
    done = _cli(_command(tiny_teacher_dir, "student"), cwd)
    assert done.returncode == 0, done.stderr[-3000:]
    return cwd / "student"


# One kill point in the default run; the others run with -m slow.
@pytest.mark.parametrize("point", [p if p == "export" else pytest.param(p, marks=pytest.mark.slow) for p in POINTS])
def test_killed_overwrite_run_keeps_the_old_student_and_resumes_to_the_same_student(reference, tiny_teacher_dir, tmp_path, point):
    old = tmp_path / "student"
    shutil.copytree(reference, old)
    (old / "notes.txt").write_text("the user's previous student\n")
    before = _hashes(old)

    killed = _cli(_command(tiny_teacher_dir, "student", "--overwrite"), tmp_path, kill_at=point)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert _hashes(old) == before, f"killed at {point}, the previous student changed"

    resumed = _cli(_command(tiny_teacher_dir, "student", "--resume"), tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected, got = load_file(reference / "model.safetensors"), load_file(old / "model.safetensors")
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected), f"killed at {point}, the resumed student differs"
    record = json.loads((old / "compression.json").read_text())
    assert record["structure"] == json.loads((reference / "compression.json").read_text())["structure"]
    assert not (old / "notes.txt").exists(), "the new student replaced the old folder completely"
    assert not (tmp_path / "student.checkpoints").exists(), "checkpoints are removed once the student is written"
    assert not list(tmp_path.glob(".student.*")), "no staging folder is left behind"


def test_the_exported_folder_holds_no_pickles_or_checkpoints(reference):
    names = {p.name for p in reference.rglob("*")}
    assert not [n for n in names if n.endswith((".pt", ".pth", ".bin", ".pkl"))] and "checkpoints" not in names
    assert not reference.with_name("student.checkpoints").exists()
    record = json.loads((reference / "compression.json").read_text())
    assert set(record["files"]) >= {"model.safetensors"}
