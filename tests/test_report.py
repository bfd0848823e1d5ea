"""``compress report``: per-layer numbers equal the run's record, MACs match a hand count, the PNGs are real; clear errors."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch
import transformers
from matplotlib.image import imread
from speech_helpers import tiny_speech_config, write_clips

import compress
from compress.cli import main
from compress.report import build_report, value_scale
from compress.teachers import default_teacher_path

SHORT = {
    "train.max_steps": 8,
    "train.batch_size": 4,
    "train.seq_len": 32,
    "train.logging_steps": 2,
    "finetune.max_steps": 4,
    "prune.schedule": {"kind": "linear", "start_step": 0, "ramp_steps": 4},
    "distill.layers": [[0, 0], [1, 1], [2, 2]],
}
# The tiny teacher (tests/conftest.py): hidden 48, 4 heads of width 12, FFN 96, 2 layers.
TEACHER = {"hidden": 48, "heads": 4, "ffn": 96, "attention": 1, "mlp": 1}
HEAD_DIM = 12
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def l0_run(tiny_teacher_dir, tmp_path_factory) -> Path:
    """A real L0 run (stage 1, fold, stage 2, export) on the tiny teacher: heterogeneous sizes per layer."""
    out = tmp_path_factory.mktemp("runs") / "l0"
    return compress.run("bert-l0", teacher=tiny_teacher_dir, out=out, overrides=SHORT, progress=False)


def _record(run: Path) -> dict:
    return json.loads((run / "compression.json").read_text())


def _printed_table(text: str) -> dict[tuple[int, str], tuple[int, int]]:
    """``{(layer, kind): (teacher, student)}`` read back from the printed per-layer table."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("layer |"))
    kinds = [cell.strip() for cell in lines[start].split("|")[1:]]
    table = {}
    for line in lines[start + 1 :]:
        cells = [cell.strip() for cell in line.split("|")]
        if len(cells) != len(kinds) + 1:
            break
        for kind, cell in zip(kinds, cells[1:]):
            teacher, student = cell.split(" -> ")
            table[(int(cells[0]), kind)] = (int(teacher), int(student))
    return table


def _macs_per_token(sizes: dict[str, int], layers: int, seq: int) -> float:
    """Hand count for a BERT base model: Q/K/V and output projections, FFN, Q K^T and A V, pooler (one token)."""
    hidden, total = sizes["hidden"], 0
    for i in range(layers):
        width = sizes[f"layers.{i}.heads"] * HEAD_DIM
        total += 4 * hidden * width + 2 * seq * width + 2 * hidden * sizes[f"layers.{i}.ffn"]
    return total + hidden * hidden / seq


def test_report_prints_the_recorded_structure_and_writes_the_plots(l0_run, tmp_path, capsys):
    assert main(["report", str(l0_run), "--plot-dir", str(tmp_path), "--rounds", "2"]) == 0
    out = capsys.readouterr().out
    structure = _record(l0_run)["structure"]
    sizes = structure["sizes"]
    expected = {}
    for name, kept in sizes.items():
        if name.startswith("layers."):
            _, layer, kind = name.split(".")
            expected[(int(layer), kind)] = (TEACHER[kind], kept)
    assert _printed_table(out) == expected
    assert any(teacher != kept for teacher, kept in expected.values()), "the run pruned units"
    assert f"hidden: 48 -> {sizes['hidden']}\n" in out
    assert f"parameters: {structure['teacher_parameters']:,} -> {structure['parameters']:,}\n" in out
    assert f"encoder parameters: {structure['teacher_encoder_parameters']:,} -> {structure['encoder_parameters']:,} " in out
    latency = re.search(r"teacher ([\d.]+) ms, student ([\d.]+) ms, teacher / student ([\d.]+)", out)
    assert latency, out
    teacher_ms, student_ms, ratio = map(float, latency.groups())
    assert teacher_ms > 0 and student_ms > 0
    # every printed figure is rounded to 2 decimals, so the ratio lies within the rounding interval
    rounding = 0.005
    low = (teacher_ms - rounding) / (student_ms + rounding) - rounding
    high = (teacher_ms + rounding) / (student_ms - rounding) + rounding
    assert low <= ratio <= high, (teacher_ms, student_ms, ratio)
    for name in ("report_structure.png", "report_training.png"):
        path = tmp_path / name
        assert f"wrote {path}" in out
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        height, width, _ = imread(path).shape
        assert height > 200 and width > 400
    assert not (l0_run / "report_structure.png").exists(), "--plot-dir sends the PNGs away from the run"


def test_a_loss_that_dwarfs_the_others_gets_a_log_scale():
    """WID's shrink penalty starts far above the distillation loss: the panel switches to a symmetric log."""
    def losses(penalty: list[float]) -> dict:
        keys = {"loss": [0.5 + p for p in penalty], "distill_loss": [0.5] * len(penalty), "penalty": penalty}
        return {key: {"prune": list(enumerate(values, start=1))} for key, values in keys.items()}

    assert value_scale(losses([24.0, 12.0, 3.0, 0.5, 0.0, 0.0])) == ("symlog", pytest.approx(0.05))
    assert value_scale(losses([0.3, -0.1, 0.2, 0.1, 0.0, 0.0])) == ("linear", None)


def test_macs_count_every_product_at_the_stated_length(l0_run, tiny_teacher_dir):
    seq = 64
    report = build_report(l0_run, latency=False, plots=False, seq=seq)
    assert report.teacher == Path(tiny_teacher_dir)
    teacher_sizes = {"hidden": 48, **{f"layers.{i}.{k}": TEACHER[k] for i in range(2) for k in ("heads", "ffn")}}
    assert report.macs[0] == pytest.approx(_macs_per_token(teacher_sizes, 2, seq))
    assert report.macs[1] == pytest.approx(_macs_per_token(report.student_sizes, 2, seq))
    assert report.macs_unit == f"per token (base model, sequence of {seq})"
    assert report.latency is None and report.plots == []
    assert report.training_minutes > 0


def test_teacher_found_by_option_when_the_record_names_a_missing_folder(l0_run, tiny_teacher_dir, tmp_path, capsys):
    moved = tmp_path / "moved"
    shutil.copytree(l0_run, moved)
    record = _record(moved)
    record["teacher"] = str(tmp_path / "gone")
    (moved / "compression.json").write_text(json.dumps(record))
    assert main(["report", str(moved), "--no-latency", "--no-plots"]) == 2
    assert "is not a model folder on this machine; pass --teacher PATH" in capsys.readouterr().err
    assert main(["report", str(moved), "--no-latency", "--no-plots", "--teacher", str(tiny_teacher_dir)]) == 0
    out = capsys.readouterr().out
    assert f"teacher: {tiny_teacher_dir}" in out and "CPU latency" not in out and "wrote" not in out
    assert not list(moved.glob("*.png"))


def test_a_teacher_that_does_not_match_the_run_is_refused(l0_run, capsys):
    assert main(["report", str(l0_run), "--no-latency", "--no-plots", "--teacher", str(default_teacher_path())]) == 2
    assert "does not match the run" in capsys.readouterr().err


def test_a_folder_that_is_not_a_run_is_refused(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert f"{tmp_path} is not a compression run: it has no compression.json" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "absent")]) == 2
    assert "is not a folder; pass the output folder of `compress run`" in capsys.readouterr().err


def test_missing_matplotlib_names_the_extra(l0_run, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    assert main(["report", str(l0_run), "--no-latency"]) == 2
    err = capsys.readouterr().err
    assert "need matplotlib" in err and "pip install 'encoder-compress[report]'" in err and "--no-plots" in err
    assert main(["report", str(l0_run), "--no-latency", "--no-plots"]) == 0


def test_a_run_without_training_gets_no_training_plot(tiny_teacher_dir, tmp_path):
    one_shot = {**SHORT, "train.max_steps": 0, "finetune.max_steps": 0}
    run = compress.run("bert-l0", teacher=tiny_teacher_dir, out=tmp_path / "run", overrides=one_shot, progress=False)
    report = build_report(run, latency=False)
    assert [p.name for p in report.plots] == ["report_structure.png"]
    assert report.training_minutes is None


def test_speech_run_reports_conv_channels_and_macs_per_second_of_audio(tmp_path):
    torch.manual_seed(0)
    teacher_dir = tmp_path / "teacher"
    transformers.HubertModel(tiny_speech_config("hubert", conv_dim=(32, 32, 32), intermediate_size=64)).save_pretrained(teacher_dir)
    transformers.Wav2Vec2FeatureExtractor(do_normalize=False).save_pretrained(teacher_dir)
    write_clips(tmp_path / "audio", 8, rate=16000)
    one_shot = {"train.max_steps": 0, "finetune.max_steps": 0, "train.batch_size": 2, "data.min_seconds": 0.2,
                "distill.layers": [[0, 0], [2, 2]]}
    run = compress.run("hubert-dphubert", teacher=teacher_dir, data=tmp_path / "audio", out=tmp_path / "run",
                       overrides=one_shot, progress=False)
    report = build_report(run, batch=2, seconds=0.5, rounds=2)
    text = report.text()
    sizes = _record(run)["structure"]["sizes"]
    for j in range(3):
        assert f"conv.{j}: 32 -> {sizes[f'conv.{j}']}\n" in text
    assert "MACs per second of 16 kHz audio (base model)" in text and "batch 2 x 0.5 s audio" in text
    assert report.macs_ratio > 1.5, "a 75%-sparsity target removes most of the computation"
    assert [p.name for p in report.plots] == ["report_structure.png"]
