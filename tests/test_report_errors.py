"""``compress report`` on a damaged run folder: one ``compress: error:`` line naming the file and what is wrong.

Reported: a hand-edited or truncated ``compression.json`` / ``training_log.json`` ended in TypeError,
KeyError or AttributeError tracebacks. The run folder is a cheap one-shot run on the tiny teacher.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import compress
from compress.cli import main
from conftest import ONE_SHOT, offline_env

RECORD, LOG = "compression.json", "training_log.json"
#: a training log as the Trainer writes it: logged steps, then the end-of-training summary
VALID_LOG = {
    "prune": [{"loss": 2.5, "step": 1, "epoch": 0.1}, {"loss": 2.0, "step": 2}, {"train_runtime": 3.0, "step": 2}],
    "finetune": [{"loss": 1.0, "step": 1}, {"train_runtime": 1.5, "step": 1}],
}


@pytest.fixture(scope="module")
def one_shot_run(tiny_teacher_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "one-shot"
    return compress.run("bert-l0", teacher=tiny_teacher_dir, out=out, overrides=ONE_SHOT, progress=False)


@pytest.fixture
def run_copy(one_shot_run, tmp_path) -> Path:
    """A copy of the run, free to damage."""
    return Path(shutil.copytree(one_shot_run, tmp_path / "run"))


def _report(folder: Path, capsys) -> tuple[int, str]:
    """Exit code and stderr of ``compress report FOLDER --no-latency --no-plots`` (stdout stays readable)."""
    code = main(["report", str(folder), "--no-latency", "--no-plots"])
    captured = capsys.readouterr()
    _report.out = captured.out
    return code, captured.err


def _edit(path: Path, change: Callable[[dict], object]) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    result = change(data)
    path.write_text(json.dumps(data if result is None else result), encoding="utf-8")


def _set(keys: str, value: object) -> Callable[[dict], None]:
    """Set the dotted entry ``keys`` (e.g. ``structure.sizes``) to ``value``."""

    def change(data: dict) -> None:
        *parents, last = keys.split(".")
        for key in parents:
            data = data[key]
        data[last] = value

    return change


def _drop(keys: str) -> Callable[[dict], None]:
    def change(data: dict) -> None:
        *parents, last = keys.split(".")
        for key in parents:
            data = data[key]
        del data[last]

    return change


def _first_size(value: object) -> Callable[[dict], None]:
    def change(data: dict) -> None:
        sizes = data["structure"]["sizes"]
        sizes[next(iter(sizes))] = value

    return change


def test_the_undamaged_run_and_a_full_training_log_report(run_copy, capsys):
    (run_copy / LOG).write_text(json.dumps(VALID_LOG))
    code, err = _report(run_copy, capsys)
    assert code == 0, err
    assert "min of optimiser steps (prune, finetune)" in _report.out


RECORD_DAMAGE = {
    "truncated JSON": (lambda p: p.write_text(p.read_text()[:-40]), "is not valid JSON"),
    "not UTF-8": (lambda p: p.write_bytes(b"\xff\xfe\x00garbage"), "is not UTF-8 text"),
    "an empty file": (lambda p: p.write_text(""), "is not valid JSON"),
    "a number at the top": (lambda p: p.write_text("42"), "holds a number, not a JSON object"),
    "a list at the top": (lambda p: p.write_text("[1, 2]"), "holds a list, not a JSON object"),
    "no structure": (lambda p: _edit(p, _drop("structure")), "has no 'structure' entry"),
    "structure a list": (lambda p: _edit(p, _set("structure", [1])), "'structure' is a list, not an object"),
    "no sizes": (lambda p: _edit(p, _drop("structure.sizes")), "has no 'structure.sizes' entry"),
    "sizes a list": (lambda p: _edit(p, _set("structure.sizes", [48, 4])),
                     "'structure.sizes' is a list, not an object"),
    "empty sizes": (lambda p: _edit(p, _set("structure.sizes", {})), "'structure.sizes' is empty"),
    "a size as text": (lambda p: _edit(p, _first_size("48")), "is a string, not a whole number"),
    "a negative size": (lambda p: _edit(p, _first_size(-1)), "is -1, not a whole number >= 0"),
    "no parameter count": (lambda p: _edit(p, _drop("structure.teacher_encoder_parameters")),
                           "has no 'structure.teacher_encoder_parameters' entry"),
    "a count as text": (lambda p: _edit(p, _set("structure.parameters", "many")),
                        "'structure.parameters' is a string, not a whole number"),
    "a zero teacher count": (lambda p: _edit(p, _set("structure.teacher_encoder_parameters", 0)),
                             "'structure.teacher_encoder_parameters' is 0, not a whole number >= 1"),
    "sparsity as text": (lambda p: _edit(p, _set("structure.encoder_sparsity", "half")),
                         "'structure.encoder_sparsity' is a string, not a number"),
    "teacher a number": (lambda p: _edit(p, _set("teacher", 7)), "'teacher' is a number, not a string"),
    "recipe a string": (lambda p: _edit(p, _set("recipe", "bert-l0")), "'recipe' is a string, not an object"),
    "prune a list": (lambda p: _edit(p, _set("recipe.prune", [])), "'recipe.prune' is a list, not an object"),
    "metrics a list": (lambda p: _edit(p, _set("metrics", [0.9])), "'metrics' is a list, not an object"),
    "fidelity as text": (lambda p: _edit(p, _set("metrics.fidelity_after_prune", "high")),
                         "'metrics.fidelity_after_prune' is a string, not a number"),
    "files a list": (lambda p: _edit(p, _set("files", ["model.safetensors"])), "'files' is a list, not an object"),
}


@pytest.mark.parametrize("damage", list(RECORD_DAMAGE))
def test_a_damaged_record_is_refused_in_one_line(run_copy, capsys, damage):
    apply, problem = RECORD_DAMAGE[damage]
    apply(run_copy / RECORD)
    code, err = _report(run_copy, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err[-3000:]
    assert lines[0].startswith(f"compress: error: {run_copy / RECORD}"), lines[0]
    assert problem in lines[0], lines[0]
    assert "run `compress run` again, or restore the file from a copy" in lines[0], lines[0]


LOG_DAMAGE = {
    "truncated JSON": (lambda p: p.write_text(json.dumps(VALID_LOG)[:-5]), "is not valid JSON"),
    "not UTF-8": (lambda p: p.write_bytes(b"\xff\xfe\x00garbage"), "is not UTF-8 text"),
    "a list at the top": (lambda p: p.write_text("[]"), "holds a list, not a JSON object"),
    "a stage not a list": (lambda p: p.write_text(json.dumps({"prune": {"loss": 1.0}})),
                           "'prune' is an object, not a list"),
    "an entry not an object": (lambda p: p.write_text(json.dumps({"prune": [1.0, 2.0]})),
                               "'prune[0]' is a number, not an object"),
    "a step as text": (lambda p: p.write_text(json.dumps({"prune": [{"step": "one", "loss": 1.0}]})),
                       "'prune[0].step' is a string, not a whole number"),
    "a runtime as text": (lambda p: p.write_text(json.dumps({"prune": [{"step": 2, "train_runtime": "3s"}]})),
                          "'prune[0].train_runtime' is a string, not a number"),
}


@pytest.mark.parametrize("damage", list(LOG_DAMAGE))
def test_a_damaged_training_log_is_refused_in_one_line(run_copy, capsys, damage):
    apply, problem = LOG_DAMAGE[damage]
    apply(run_copy / LOG)
    code, err = _report(run_copy, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err[-3000:]
    assert lines[0].startswith(f"compress: error: {run_copy / LOG}"), lines[0]
    assert problem in lines[0], lines[0]
    assert "restore the file from a copy, or delete it to report without training figures" in lines[0], lines[0]


def test_a_damaged_log_is_refused_before_plotting_too(run_copy, capsys, tmp_path):
    """The plots read every step; a damaged one is named, not a ValueError from int()."""
    (run_copy / LOG).write_text(json.dumps({"prune": [{"step": "one", "loss": 1.0}]}))
    code = main(["report", str(run_copy), "--no-latency", "--plot-dir", str(tmp_path / "plots")])
    err = capsys.readouterr().err
    assert code == 2 and "'prune[0].step' is a string, not a whole number" in err


def test_the_console_command_reports_and_refuses_in_a_fresh_process(run_copy, tmp_path):
    """``compress report`` as users run it: a new interpreter whose first heavy import is the report's.

    It used to die of a circular import (PreTrainedModel loading the Auto machinery half-way, which
    registers the students, which import PreTrainedModel) before reading anything.
    """
    command = [sys.executable, "-m", "compress.cli", "report", str(run_copy), "--no-latency", "--no-plots"]
    proc = subprocess.run(command, cwd=tmp_path, env=offline_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "encoder parameters:" in proc.stdout
    (run_copy / RECORD).write_text("[]")
    proc = subprocess.run(command, cwd=tmp_path, env=offline_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines() == [
        f"compress: error: {run_copy / RECORD} holds a list, not a JSON object; "
        "the run folder is damaged: run `compress run` again, or restore the file from a copy"
    ]
