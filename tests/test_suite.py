"""``benchmarks/suite.py``: the budget rule and sizes it gives each method, and its ``--quick`` run end to end."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import offline_env

from pruners import schedules

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "suite.py"
METHODS = ("wid", "l0", "magnitude", "layer-drop")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def suite():
    """The benchmark script as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("suite", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_layer_drop_keeps_the_layer_count_closest_to_the_target(suite):
    assert suite.layers_to_keep(6, 0.5) == 3
    assert suite.layers_to_keep(6, 0.75) == 2, "1 and 2 of 6 layers are equally far from 75%: keep more"
    assert suite.layers_to_keep(4, 0.75) == 1
    assert suite.layers_to_keep(12, 0.75) == 3


def test_every_method_gets_the_same_steps_and_scaled_schedules(suite):
    recipes = {m: suite.suite_recipe(m, 0.75, 360, teacher_layers=6, batch=16, seq=64) for m in METHODS}
    for method, recipe in recipes.items():
        assert recipe.train["max_steps"] + recipe.finetune["max_steps"] == 360
        assert (recipe.train["batch_size"], recipe.train["seq_len"]) == (16, 64)
        assert recipe.distill["layers"] == "auto", "every method maps the teacher's layers for its depth"
        if method != "layer-drop":
            assert (recipe.train["max_steps"], recipe.finetune["max_steps"]) == (240, 120)
            assert recipe.prune["target_sparsity"] == 0.75
    assert (recipes["layer-drop"].train["max_steps"], recipes["layer-drop"].prune["target"]) == (0, {"attention": 2, "mlp": 2})
    # bert-magnitude ramps to step 300 of 400 every 25 steps: 240 steps scale that by 0.6.
    assert recipes["magnitude"].prune["schedule"] == {"kind": "cubic", "start_step": 0, "end_step": 180, "interval": 15}
    assert recipes["l0"].prune["schedule"] == {"kind": "linear", "start_step": 0, "ramp_steps": 150}
    per_axis = schedules.scaled_spec({"hidden": {"kind": "linear", "start_step": 10, "end_step": 11}, "default": "m:f"}, 0.1)
    assert per_axis == {"hidden": {"kind": "linear", "start_step": 1, "end_step": 2}, "default": "m:f"}


def _quick(runs: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--runs-dir", str(runs), "--out-dir", str(out), *extra],
        env=offline_env(), capture_output=True, text=True, timeout=600, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow  # minutes-long on 2 cores; CI runs it in its -m slow pass
def test_quick_suite_writes_rows_table_and_plots(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "results"
    proc = _quick(runs, out)
    assert "[8/8] layer-drop at 75% removed" in proc.stdout
    result = json.loads((out / "suite.json").read_text())
    rows = result["rows"]
    assert [(r["method"], r["target_sparsity"]) for r in rows] == [(m, s) for s in (0.5, 0.75) for m in METHODS]
    table = (out / "suite.md").read_text()
    for row in rows:
        record = json.loads((runs / f"{row['method']}_{round(row['target_sparsity'] * 100)}" / "compression.json").read_text())
        structure = record["structure"]
        assert row["encoder_parameter_ratio"] == structure["encoder_parameters"] / structure["teacher_encoder_parameters"]
        assert abs(row["encoder_parameter_ratio"] - (1 - row["target_sparsity"])) <= 0.01
        assert row["fidelity"] == record["metrics"]["fidelity_after_finetune"]
        assert row["fidelity_after_stage1"] == record["metrics"]["fidelity_after_prune"]
        assert row["stage1_steps"] + row["stage2_steps"] == result["settings"]["steps"] == 12
        assert row["stage1_steps"] == (0 if row["method"] == "layer-drop" else 8)
        assert row["latency_ratio"] == pytest.approx(row["teacher_latency_ms"] / row["student_latency_ms"])
        assert row["training_minutes"] > 0
        assert len(row["plots"]) == 2
        for name in row["plots"]:
            assert (out / name).read_bytes()[:8] == PNG_SIGNATURE
        line = f"| {row['method']} | {row['target_sparsity']:.0%} | "
        assert any(r.startswith(line) and f" {row['fidelity']:.3f} |" in r for r in table.splitlines()), line
    for target in (0.5, 0.75):
        best = max((r for r in rows if r["target_sparsity"] == target), key=lambda r: r["fidelity"])
        assert f"- {target:.0%} removed: **{best['method']}** has the best held-out fidelity, {best['fidelity']:.3f}" in table

    again = _quick(runs, tmp_path / "again", "--methods", "wid", "--sizes", "0.75")
    assert f"reusing the finished run in {runs / 'wid_75'}" in again.stdout
    [row] = json.loads((tmp_path / "again" / "suite.json").read_text())["rows"]
    assert row["fidelity"] == rows[4]["fidelity"] and row["training_minutes"] == rows[4]["training_minutes"]
