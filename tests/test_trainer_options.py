"""The recipe's ``trainer:`` section and ``compress.run(training_args=...)``: TrainingArguments passed through.

The run's own arguments (steps, learning rates, batch size, checkpointing for resume, seeds, DDP) are
refused there, naming the recipe key or option to use; unknown names get close matches. With
``report_to: tensorboard`` the size controller's expected sparsity and multipliers reach TensorBoard.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers import TrainingArguments

import compress
from compress import cli
from compress.errors import RecipeError
from compress.pipeline import FINETUNE, PRUNE, RUNS_DIR, trainer_defaults, training_arguments
from compress.recipe import LIBRARY_TRAINING_ARGUMENTS

FIELDS = {f.name for f in dataclasses.fields(TrainingArguments) if f.init}

#: a refused name and what its message must point to instead
REFUSED = [
    ("learning_rate", "set train.lr"),
    ("max_steps", "set train.max_steps"),
    ("num_train_epochs", "train.max_steps"),
    ("per_device_train_batch_size", "set train.batch_size"),
    ("gradient_accumulation_steps", "set train.grad_accum"),
    ("output_dir", "--out"),
    ("save_steps", "set train.save_steps"),
    ("seed", "set train.seed"),
    ("eval_strategy", "data.held_out"),
    ("disable_tqdm", "--no-progress"),
    ("ddp_find_unused_parameters", "False"),
]


@pytest.mark.parametrize("key, hint", REFUSED)
def test_the_runs_own_arguments_are_refused_naming_where_they_belong(key, hint, tmp_path):
    recipe = compress.load_recipe("bert-l0")
    with pytest.raises(RecipeError, match=rf"trainer\.{key}: .*{hint}"):
        recipe.override({f"trainer.{key}": 1})
    with pytest.raises(RecipeError, match=rf"training_args\.{key}: .*{hint}"):
        compress.run(recipe, teacher=tmp_path / "not-loaded", out=tmp_path / "run", training_args={key: 1})


def test_refused_on_the_command_line_too(capsys):
    assert cli.main(["run", "bert-l0", "--out", "never", "trainer.learning_rate=1e-3"]) == 2
    assert "trainer.learning_rate: set train.lr (finetune.lr for the fine-tuning stage) in the recipe instead" in capsys.readouterr().err


@pytest.mark.parametrize("key, close", [("gradient_checkpointng", "'gradient_checkpointing'"), ("report_too", "'report_to'")])
def test_unknown_names_are_refused_with_close_matches(key, close):
    with pytest.raises(RecipeError, match=rf"trainer\.{key} is not a transformers TrainingArguments field; did you mean {close}"):
        compress.load_recipe("bert-l0").override({f"trainer.{key}": True})


@pytest.mark.parametrize(
    "training_args, message",
    [
        ({"optim": "adamw_foo"}, "adamw_foo is not a valid OptimizerNames"),
        ({"report_to": "tensorbord"}, "tensorbord is not supported"),
        ({"torch_compile_backend": Path("inductor")}, "is not plain data; compression.json records it"),
    ],
)
def test_values_transformers_refuses_fail_before_anything_loads(training_args, message, tmp_path):
    # the teacher does not exist: an error about it would mean the arguments were checked too late
    with pytest.raises(RecipeError, match=message):
        compress.run("bert-l0", teacher=tmp_path / "missing", out=tmp_path / "run", training_args=training_args)


def test_every_argument_the_run_sets_is_refused_or_an_overridable_default(tmp_path):
    """Keeps ``LIBRARY_TRAINING_ARGUMENTS`` honest: what ``training_arguments`` changes from transformers' defaults."""
    assert set(LIBRARY_TRAINING_ARGUMENTS) - {"logging_dir"} <= FIELDS and "logging_dir" not in FIELDS
    recipe = compress.load_recipe("bert-l0")
    for stage in (PRUNE, FINETUNE):
        args = training_arguments(recipe, tmp_path, stage, progress=False)
        # use_cpu (the run's) also turns off dataloader_pin_memory: compare with the same device choice
        stock = TrainingArguments(output_dir=str(tmp_path), use_cpu=args.use_cpu)
        changed = {name for name in FIELDS if getattr(args, name) != getattr(stock, name)}
        assert {"learning_rate", "max_steps", "save_steps", "accelerator_config", "save_total_limit"} <= changed
        assert changed <= LIBRARY_TRAINING_ARGUMENTS.keys() | trainer_defaults(recipe).keys(), changed - LIBRARY_TRAINING_ARGUMENTS.keys()


def test_trainer_section_passes_through_over_the_defaults(tmp_path):
    recipe = compress.load_recipe("bert-l0")
    default = training_arguments(recipe, tmp_path, PRUNE, progress=False)
    assert (default.report_to, default.save_total_limit, default.dataloader_num_workers) == ([], 2, 0)
    section = {"report_to": "tensorboard", "save_total_limit": 5, "dataloader_num_workers": 1, "weight_decay": 0.01,
               "gradient_checkpointing": True, "torch_compile": False}
    overridden = recipe.override({"trainer": section, "finetune.lr": 3.0e-5})
    for stage, lr in ((PRUNE, recipe.train["lr"]), (FINETUNE, 3.0e-5)):
        args = training_arguments(overridden, tmp_path, stage, progress=False)
        assert args.report_to == ["tensorboard"] and args.save_total_limit == 5 and args.dataloader_num_workers == 1
        assert args.weight_decay == 0.01 and args.activation_checkpointing is True
        assert args.learning_rate == lr and args.output_dir == str(tmp_path)


def test_paragraph_examples_are_batched_by_length_unless_the_trainer_section_says_otherwise(tmp_path):
    recipe = compress.load_recipe("bert-l0")
    paragraphs, blocks = recipe.override({"data.examples": "paragraphs"}), recipe.override({"data.examples": "blocks"})
    assert training_arguments(paragraphs, tmp_path, PRUNE, progress=False).train_sampling_strategy == "group_by_length"
    assert training_arguments(blocks, tmp_path, PRUNE, progress=False).train_sampling_strategy == "random"
    shuffled = paragraphs.override({"trainer": {"train_sampling_strategy": "random"}})
    assert training_arguments(shuffled, tmp_path, FINETUNE, progress=False).train_sampling_strategy == "random"


def _scalars(stage_runs: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the event files under one stage's runs folder, as (step, value) lists."""
    folders = sorted({p.parent for p in stage_runs.rglob("events.out.tfevents.*")})
    assert len(folders) == 1, folders
    events = EventAccumulator(str(folders[0]))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_tensorboard_gets_the_expected_sparsity_and_the_multipliers(tiny_teacher_dir, tmp_path, capsys):
    overrides = {
        "train.max_steps": 6, "train.batch_size": 4, "train.seq_len": 32, "train.logging_steps": 2,
        "finetune.max_steps": 2, "prune.schedule": {"kind": "linear", "start_step": 0, "ramp_steps": 4},
        "distill.layers": [[0, 0], [1, 1], [2, 2]],
    }
    argv = ["run", "bert-l0", "--teacher", str(tiny_teacher_dir), "--out", str(tmp_path / "run"), "--no-progress",
            "trainer.report_to=tensorboard", *[f"{k}={json.dumps(v)}" for k, v in overrides.items()]]
    assert cli.main(argv) == 0, capsys.readouterr().err[-2000:]
    out = tmp_path / "run"
    assert not (tmp_path / "run.checkpoints").exists(), "the checkpoints went; the event files stayed in the student"
    logs = json.loads((out / "training_log.json").read_text())
    prune = _scalars(out / RUNS_DIR / PRUNE)
    logged = [e for e in logs[PRUNE] if "expected_sparsity" in e]
    assert [e["step"] for e in logged] == [1, 2, 4, 6]
    for key in ("expected_sparsity", "target_sparsity", "lambda_1", "lambda_2", "distill_loss", "loss"):
        assert [step for step, _ in prune[f"train/{key}"]] == [e["step"] for e in logged]
        assert [value for _, value in prune[f"train/{key}"]] == pytest.approx([e[key] for e in logged], rel=1e-6, abs=1e-7)
    assert prune["train/target_sparsity"][-1][1] == pytest.approx(0.5) and prune["train/lambda_2"][-1][1] != 0
    finetune = _scalars(out / RUNS_DIR / FINETUNE)
    assert [step for step, _ in finetune["train/loss"]] == [1, 2] and "train/expected_sparsity" not in finetune
    record = json.loads((out / "compression.json").read_text())
    assert record["recipe"]["trainer"] == {"report_to": "tensorboard"}
