"""What a careless user could lose or export broken, each case first as it was reported.

Output folders that hold the user's files, non-finite training, late checks, resumes of a changed
run, overrides, and files changed after export.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import transformers

import compress
from compress.errors import CompressError, DataError, IntegrityError, OutputDirError, RecipeError
from compress.guards import NonFiniteError
from conftest import offline_env

SHORT = {
    "train.max_steps": 6,
    "train.batch_size": 4,
    "train.seq_len": 32,
    "train.logging_steps": 2,
    "train.save_steps": 3,
    "finetune.max_steps": 4,
    "prune.schedule": {"kind": "linear", "start_step": 0, "ramp_steps": 4},
    "distill.layers": [[0, 0], [1, 1], [2, 2]],
}


def _run(teacher: Path, out: Path, **kwargs) -> Path:
    overrides = {**SHORT, **kwargs.pop("overrides", {})}
    return compress.run("bert-l0", teacher=teacher, out=out, overrides=overrides, progress=False, **kwargs)


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# -- 1. output folders ------------------------------------------------------------------------
def test_overwrite_of_a_folder_holding_the_teacher_and_data_is_refused_and_deletes_nothing(tiny_teacher_dir, tmp_path):
    sandbox = tmp_path / "sandbox"
    teacher = sandbox / "teacher"
    __import__("shutil").copytree(tiny_teacher_dir, teacher)
    corpus = sandbox / "corpus.txt"
    corpus.write_text("Plain text for training. " * 400)
    (sandbox / "notes.txt").write_text("unrelated")
    before = _listing(sandbox)
    with pytest.raises(OutputDirError, match="contains"):
        _run(teacher, sandbox, data=corpus, overwrite=True)
    assert _listing(sandbox) == before


def test_the_working_directory_is_never_an_output(tiny_teacher_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(OutputDirError, match="working directory"):
        _run(tiny_teacher_dir, Path("."), overwrite=True)
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_a_failed_overwrite_run_leaves_the_previous_student(tiny_teacher_dir, tmp_path):
    out = _run(tiny_teacher_dir, tmp_path / "student")
    before = {p: p.read_bytes() for p in out.iterdir()}
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(CompressError):
        _run(tiny_teacher_dir, out, data=empty, overwrite=True)
    assert {p: p.read_bytes() for p in out.iterdir()} == before
    assert compress.load_student(out) is not None


# -- 2. non-finite training -------------------------------------------------------------------
@pytest.mark.parametrize("key, stage", [("finetune.lr", "finetune"), ("train.lr", "prune")])
def test_non_finite_training_stops_with_the_stage_step_and_key_and_exports_nothing(tiny_teacher_dir, tmp_path, key, stage):
    with pytest.raises(NonFiniteError, match=rf"stage {stage} at step \d+ .*lower {key}"):
        _run(tiny_teacher_dir, tmp_path / "student", overrides={key: 1e30})
    assert not (tmp_path / "student").exists()


def test_the_cli_exits_2_with_one_line_on_non_finite_training(tiny_teacher_dir, tmp_path):
    overrides = [f"{k}={json.dumps(v)}" for k, v in {**SHORT, "train.lr": 1e30}.items()]
    done = subprocess.run(
        [sys.executable, "-m", "compress.cli", "run", "bert-l0", "--teacher", str(tiny_teacher_dir), "--out", "s",
         "--no-progress", *overrides],
        cwd=tmp_path, env=offline_env(), capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("compress: error: training went non-finite in stage prune") and "train.lr" in last
    assert "Traceback" not in done.stderr


# -- 5. checks before training ----------------------------------------------------------------
def test_a_layer_map_deeper_than_the_teacher_is_refused_before_training(tiny_teacher_dir, tmp_path):
    """MiniLM's map [[0, 0], [2, 2], [4, 4], [6, 6]] (the recipes' default before ``auto``) on a 2-layer teacher."""
    with pytest.raises(RecipeError, match=r"distill.layers pair \[4, 4\] .*2-layer teacher"):
        _run(tiny_teacher_dir, tmp_path / "s", overrides={"distill.layers": [[0, 0], [2, 2], [4, 4], [6, 6]]})
    assert not list(tmp_path.iterdir()), "nothing was left behind, so the corrected rerun is not refused"


def test_a_sequence_longer_than_the_position_embeddings_is_refused_before_training(tiny_teacher_dir, tmp_path):
    limit = transformers.AutoConfig.from_pretrained(tiny_teacher_dir).max_position_embeddings
    with pytest.raises(RecipeError, match=rf"train.seq_len={limit * 2} .* {limit} position"):
        _run(tiny_teacher_dir, tmp_path / "s", overrides={"train.seq_len": limit * 2})
    assert not list(tmp_path.iterdir())


def test_a_held_out_split_too_small_is_refused_before_training(tiny_teacher_dir, tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    lines = [{"text": "A sentence that is long enough to be held out for fidelity checks, one of a few. " * 3}] * 12
    corpus.write_text("\n".join(json.dumps(line) for line in lines))
    with pytest.raises(DataError, match="held-out split has [12] .* at least 3"):
        _run(tiny_teacher_dir, tmp_path / "s", data=corpus, overrides={"data.held_out": 0.1})
    assert not (tmp_path / "s.checkpoints").exists()


def test_an_unwritable_output_is_refused_before_training(tiny_teacher_dir, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(OutputDirError, match="is a file"):
        _run(tiny_teacher_dir, blocker / "student")


def test_a_recipe_file_that_is_not_utf8_is_a_recipe_error(tmp_path):
    path = tmp_path / "latin.yaml"
    path.write_bytes("name: caf\xe9\nprune: {method: l0}\n".encode("latin-1"))
    with pytest.raises(RecipeError, match="not UTF-8"):
        compress.load_recipe(path)


# -- 4. resume of a changed run ---------------------------------------------------------------
@pytest.mark.slow  # minutes-long on 2 cores; CI runs it in its -m slow pass
def test_resume_refuses_a_changed_recipe_naming_the_keys(tiny_teacher_dir, tmp_path):
    out = tmp_path / "s"
    _run(tiny_teacher_dir, out, keep_checkpoints=True)
    assert (tmp_path / "s.checkpoints").is_dir()
    with pytest.raises(OutputDirError, match=r"prune.target_sparsity \(0.5 -> 0.75\)"):
        _run(tiny_teacher_dir, out, resume=True, overrides={"prune.target_sparsity": 0.75})
    with pytest.raises(OutputDirError, match=r"prune.axes"):
        _run(tiny_teacher_dir, out, resume=True, overrides={"prune.axes": ["hidden", "ffn"]})


def test_resume_of_a_finished_run_trains_nothing_more(tiny_teacher_dir, tmp_path):
    out = _run(tiny_teacher_dir, tmp_path / "s", keep_checkpoints=True)
    before = (out / "model.safetensors").read_bytes()
    _run(tiny_teacher_dir, out, resume=True, keep_checkpoints=True)
    assert (out / "model.safetensors").read_bytes() == before
    steps = json.loads((out / "training_log.json").read_text())
    assert max(e.get("step", 0) for e in steps["prune"]) <= SHORT["train.max_steps"]
    with pytest.raises(OutputDirError, match="nothing to resume"):
        _run(tiny_teacher_dir, tmp_path / "other", resume=True)


# -- 6. overrides -----------------------------------------------------------------------------
def test_overrides_reach_inside_mappings_and_read_e_notation():
    recipe = compress.load_recipe("bert-l0").override({"prune.schedule.ramp_steps": 60})
    assert recipe.prune["schedule"] == {"kind": "linear", "start_step": 0, "ramp_steps": 60}
    from compress.cli import _parse_override
    from compress.recipe import parse_yaml

    assert _parse_override("train.lr=1e-4") == ("train.lr", 1e-4)
    assert compress.load_recipe("bert-l0").override(dict([_parse_override("train.lr=1e-4")])).train["lr"] == 1e-4
    assert parse_yaml("lr: 1e-4\nbig: 1E30\nname: 1e\n", "test") == {"lr": 1e-4, "big": 1e30, "name": "1e"}
    sizes = compress.load_recipe("bert-l0").override({"prune.target_sparsity": None, "prune.target.hidden": 32})
    assert sizes.prune["target"] == {"hidden": 32}


# -- 8. integrity -----------------------------------------------------------------------------
def test_load_student_names_a_file_changed_after_export(tiny_teacher_dir, tmp_path):
    out = _run(tiny_teacher_dir, tmp_path / "s", overrides={"prune.target": {"ffn": 40}, "prune.target_sparsity": None})
    record = json.loads((out / "compression.json").read_text())
    assert "model.safetensors" in record["files"]
    compress.load_student(out)
    code = next(iter(out.glob("*.py")), None)
    changed = code or out / "model.safetensors"
    changed.write_bytes(changed.read_bytes() + b"\n# edited\n" if code else changed.read_bytes()[:-8] + b"\x00" * 8)
    with pytest.raises(IntegrityError, match=changed.name):
        compress.load_student(out)
    assert compress.load_student(out, verify=False) is not None


# -- 7. a structure or a stage gone wrong is said loudly -------------------------------------
def test_a_target_the_axes_cannot_meet_is_a_warning_in_the_record(tiny_teacher_dir, tmp_path):
    one_shot = {"train.max_steps": 0, "finetune.max_steps": 0, "prune.target_sparsity": 0.99}
    out = compress.run("bert-magnitude", teacher=tiny_teacher_dir, out=tmp_path / "s", progress=False,
                       overrides={**SHORT, **one_shot})
    warnings = json.loads((out / "compression.json").read_text())["metrics"]["warnings"]
    assert any("the target was to remove 99.0%" in w for w in warnings)
    assert any("keeps only" in w for w in warnings)


def test_a_schedule_longer_than_stage_1_is_a_warning_and_with_steps_scales_it(tiny_teacher_dir, tmp_path):
    # bert-l0 ramps over 500 of its 800 steps: a 6-step stage 1 would reach 1% of the target and fold the rest
    short = {key: value for key, value in SHORT.items() if key != "prune.schedule"}
    out = compress.run("bert-l0", teacher=tiny_teacher_dir, out=tmp_path / "late", progress=False, overrides=short)
    warnings = json.loads((out / "compression.json").read_text())["metrics"]["warnings"]
    assert any("prune.schedule has gone 1% of the way to the target at the end of stage 1" in w for w in warnings)
    scaled = compress.load_recipe("bert-l0").with_steps(SHORT["train.max_steps"], SHORT["finetune.max_steps"])
    out = compress.run(scaled, teacher=tiny_teacher_dir, out=tmp_path / "scaled", progress=False, overrides=short)
    metrics = json.loads((out / "compression.json").read_text())["metrics"]
    assert not any("prune.schedule" in w for w in metrics.get("warnings", []))


def test_a_fidelity_collapse_in_stage_2_is_a_warning_in_the_record(tiny_teacher_dir, tmp_path):
    """The stages one by one, with stage 2 replaced by one that ruins the student (as a huge finetune.lr did)."""
    from compress import pipeline

    run = pipeline.setup("bert-l0", teacher=tiny_teacher_dir, out=tmp_path / "s", overrides=SHORT, progress=False)
    pipeline.prune_stage(run)
    pipeline.fold_stage(run)
    before = run.metrics["fidelity_after_prune"]
    with __import__("torch").no_grad():
        for param in run.student.parameters():
            param.copy_(__import__("torch").randn_like(param))
    run.metrics["fidelity_after_finetune"] = run.data.fidelity(run.teacher, run.student)
    assert run.metrics["fidelity_after_finetune"] < before / 2
    out = pipeline.export_stage(run)
    warnings = json.loads((out / "compression.json").read_text())["metrics"]["warnings"]
    assert any("fidelity" in w for w in warnings)
