"""The example scripts run end to end with short settings and leave a loadable, smaller student."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import offline_env
import transformers

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, *args: str, cwd: Path) -> str:
    done = subprocess.run([sys.executable, str(ROOT / "examples" / script), *args], cwd=cwd, env=offline_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _removed(stdout: str) -> float:
    return float(re.search(r"encoder parameters: .* \(([\d.]+)% removed\)", stdout).group(1)) / 100


@pytest.mark.parametrize("method", ["magnitude", "taylor"])
def test_custom_loop_prunes_on_its_own_schedule(tmp_path, method):
    stdout = _run("custom_loop.py", "--tiny", "--steps", "8", "--bursts", "2", "--method", method, "--out", "loop", cwd=tmp_path)
    bursts = re.findall(r"step (\d+): loss [\d.]+, kept .*, encoder sparsity ([\d.]+)", stdout)
    assert [int(step) for step, _ in bursts] == [2, 4], "the script's schedule pruned twice, at steps 2 and 4"
    assert float(bursts[0][1]) < float(bursts[1][1])
    assert abs(_removed(stdout) - 0.5) <= 0.01
    student = transformers.AutoModel.from_pretrained(tmp_path / "loop/student")
    assert student.config.hidden_size < 32


def test_trainer_script_with_a_schedule_callable(tmp_path):
    stdout = _run("trainer_script.py", "--tiny", "--steps", "8", "--method", "taylor", "--schedule", "schedules:thirds",
                  "--out", "hf", cwd=tmp_path)
    assert abs(_removed(stdout) - 0.5) <= 0.01
    logged = [float(s) for s in re.findall(r"'sparsity': '([\d.]+)'", stdout)]
    assert logged[0] == 0.0 and logged[-1] > 0.45, "thirds() pruned during training, logged as it went"
    assert transformers.AutoModel.from_pretrained(tmp_path / "hf/student").config.num_attention_heads == 3


def test_trainer_script_l0(tmp_path):
    stdout = _run("trainer_script.py", "--tiny", "--steps", "4", "--out", "l0", cwd=tmp_path)
    assert abs(_removed(stdout) - 0.5) <= 0.01
    assert transformers.AutoModel.from_pretrained(tmp_path / "l0/student", trust_remote_code=True) is not None
