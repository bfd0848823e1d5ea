"""``compress.run``: the whole job from a recipe to an exported student.

Stage 1 trains the weights with distillation while the recipe's pruning method chooses the structure
(learned L0 gates under a size controller, scheduled top-k, compactors); the gated model is folded;
stage 2 distils the dense student; the student is exported. Each stage checkpoints into
``OUT/checkpoints/<stage>`` so an interrupted run continues with ``resume=True``. With
``train.max_steps = 0`` the method chooses the structure one-shot from the teacher's weights instead.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, TrainingArguments, set_seed

from compress.distill import DistillationLoss
from compress.errors import CompressError, Interrupted, OutputDirError, RecipeError
from compress.export import TRAINING_LOG_FILE, check_output_dir, save_student
from compress.job import CompressionJob, attach
from compress.modality import training_data, with_objective
from compress.recipe import Recipe, load_recipe
from compress.teachers import default_teacher_path, load_teacher
from compress.trainer import DISTILL_ATTR, CompressionTrainer, StopOnSignal

logger = logging.getLogger(__name__)
CHECKPOINTS = "checkpoints"


def is_main_process() -> bool:
    """Rank 0 of a torchrun / accelerate launch, or the only process."""
    return int(os.environ.get("RANK", "0")) == 0


def _barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def prepare_output(out: Path, overwrite: bool, resume: bool, protected: list) -> None:
    """Check the output folder: empty, an unfinished run to resume, or explicitly overwritten."""
    if resume and overwrite:
        raise OutputDirError("pass either resume (continue the run in OUT) or overwrite (start again), not both")
    if resume:
        if not (out / CHECKPOINTS).is_dir():
            raise OutputDirError(f"nothing to resume in {out}: it holds no {CHECKPOINTS}/ folder of an earlier run")
        return
    try:
        check_output_dir(out, overwrite=False, protected=protected)
    except OutputDirError:
        if not overwrite:
            if (out / CHECKPOINTS).is_dir():
                raise OutputDirError(
                    f"output directory {out} holds an earlier run; continue it with --resume (resume=True) "
                    "or start again with --overwrite"
                ) from None
            raise
        check_output_dir(out, overwrite=True, protected=protected)
        shutil.rmtree(out)


def _training_args(recipe: Recipe, stage_dir: Path, stage: str, progress: bool) -> TrainingArguments:
    train = recipe.train
    steps, lr = (train["max_steps"], train["lr"]) if stage == "prune" else (recipe.finetune["max_steps"], recipe.finetune["lr"])
    return TrainingArguments(
        output_dir=str(stage_dir),
        max_steps=steps,
        per_device_train_batch_size=train["batch_size"],
        gradient_accumulation_steps=train["grad_accum"],
        learning_rate=lr,
        warmup_steps=train["warmup_steps"],
        lr_scheduler_type="constant_with_warmup" if stage == "prune" else "linear",
        logging_steps=train["logging_steps"],
        logging_first_step=True,
        save_steps=train["save_steps"],
        save_total_limit=2,
        report_to="none",
        seed=train["seed"],
        data_seed=train["seed"],
        disable_tqdm=not progress,
        dataloader_num_workers=0,
        # Without use_cpu, transformers does not start DDP on a CPU-only machine under torchrun.
        use_cpu=not torch.cuda.is_available(),
        # The distillation heads and multipliers are used outside the model's forward; every trainable
        # parameter gets exactly one gradient per step, which DDP checks without a graph search.
        ddp_find_unused_parameters=False,
        # Under DDP every rank reads its own batches: speech batches (length buckets, cropped per batch)
        # differ in length from rank to rank, so rank 0 cannot fetch and concatenate them all.
        accelerator_config={"dispatch_batches": False},
    )


def last_complete_checkpoint(stage_dir: Path) -> str | None:
    """The newest checkpoint the Trainer finished writing (its trainer state is written last).

    A run killed while saving leaves a partial folder behind; resuming skips it.
    """
    found = sorted(stage_dir.glob("checkpoint-*"), key=lambda p: int(p.name.rpartition("-")[2]), reverse=True)
    for checkpoint in found:
        if (checkpoint / "trainer_state.json").is_file():
            return str(checkpoint)
        logger.warning("skipping incomplete checkpoint %s", checkpoint)
    return None


def _train_stage(trainer: CompressionTrainer, stage_dir: Path, resume: bool, stopper: StopOnSignal) -> list[dict]:
    checkpoint = last_complete_checkpoint(stage_dir) if resume else None
    if checkpoint:
        logger.info("resuming from %s", checkpoint)
    trainer.add_callback(stopper)
    stopper.install()
    try:
        trainer.train(resume_from_checkpoint=checkpoint)
    finally:
        stopper.uninstall()
    if stopper.received is not None:
        raise Interrupted(
            f"interrupted at step {trainer.state.global_step}; a checkpoint is in {stage_dir}. "
            "Continue with the same command plus --resume"
        )
    return trainer.state.log_history


def _relation_layers(job: CompressionJob, student: torch.nn.Module) -> tuple[list, list] | None:
    """Q/K/V module names of the mapped layers, student and teacher side, when the recipe asks for them.

    Hidden-state index ``s`` of the layer map is the output of layer ``s - 1``; layers whose attention
    the student no longer has are left out.
    """
    if job.recipe.distill["attention_relation"] <= 0:
        return None
    modules = dict(student.named_modules())
    pairs = [(s - 1, t - 1) for s, t in job.recipe.distill["layers"] if s > 0 and t > 0]

    def has_heads(layer: int) -> bool:
        query = modules.get(job.adapter.attention_projections(layer)[0])
        return query is not None and query.out_features > 0

    pairs = [(s, t) for s, t in pairs if has_heads(s)]
    return [job.adapter.attention_projections(s) for s, _ in pairs], [job.adapter.attention_projections(t) for _, t in pairs]


def _load_teacher(teacher: PreTrainedModel | str | Path | None, processor: Any) -> tuple[PreTrainedModel, Any]:
    if isinstance(teacher, PreTrainedModel):
        return teacher, processor
    model, tokenizer = load_teacher(teacher)
    return model, processor or tokenizer


def run(
    recipe: Recipe | str | Path,
    teacher: PreTrainedModel | str | Path | None = None,
    data: str | Path | None = None,
    out: str | Path | None = None,
    processor: Any = None,
    overrides: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
) -> Path:
    """Compress ``teacher`` (default: the MiniLM teacher) with ``recipe`` on ``data``; export to ``out``.

    ``data`` defaults to the recipe's ``data.text`` (the built-in ``python-docs`` corpus), or for a
    speech teacher (HuBERT, wav2vec2) ``data.audio``: audio files or a dataset with an audio column.
    Returns the output folder, which holds the student (loadable with ``AutoModel.from_pretrained``),
    its tokenizer or feature extractor, ``compression.json`` and the run's checkpoints.
    """
    started = time.perf_counter()
    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    if overrides:
        recipe = recipe.override(overrides)
    if teacher is None and recipe.family != "bert":
        raise RecipeError(
            f"recipe {recipe.name!r} compresses {recipe.family} models, and without a teacher the teacher is the "
            f"bundled MiniLM (bert): pass a {recipe.family} model folder with --teacher PATH (teacher=...)"
        )
    out = Path(out) if out is not None else Path(f"{recipe.name}-student")
    teacher_dir = None if isinstance(teacher, PreTrainedModel) else (teacher or default_teacher_path())
    if is_main_process():
        prepare_output(out, overwrite, resume, protected=[teacher_dir] if teacher_dir else [])
    teacher, processor = _load_teacher(teacher, processor)
    train, seed = recipe.train, recipe.train["seed"]
    trains = train["max_steps"] > 0 or recipe.finetune["max_steps"] > 0
    if processor is None and trains:
        raise CompressError(
            "training needs the teacher's tokenizer (feature extractor for speech): pass processor=... "
            "(or a teacher folder with one)"
        )
    set_seed(seed)
    recipe = with_objective(recipe, teacher)
    job = attach(teacher, recipe)  # before the data: a recipe of another family fails fast, naming the mismatch
    prepared = training_data(recipe, teacher, processor, data)
    width = teacher.config.hidden_size
    distillation = DistillationLoss(recipe.distill, width, width)
    stopper = StopOnSignal()
    logs: dict[str, list[dict]] = {}
    target = job.target_sparsity()
    uses_head = recipe.distill["logits_kl"] > 0 or recipe.distill["task"] > 0
    trainable = None if uses_head else job.adapter.is_backbone
    if train["max_steps"] > 0:
        stage_dir = out / CHECKPOINTS / "prune"
        trainer = CompressionTrainer(
            model=job.model,
            args=_training_args(recipe, stage_dir, "prune", progress),
            train_dataset=prepared.train,
            data_collator=prepared.collator,
            teacher=teacher,
            distillation=distillation,
            job=job,
            gate_lr=train["gate_lr"],
            lambda_lr=train["lambda_lr"],
            compactor_lr=train["compactor_lr"],
            trainable=trainable,
            relation_layers=_relation_layers(job, job.model),
        )
        logs["prune"] = _train_stage(trainer, stage_dir, resume, stopper)
        distillation = getattr(job.model, DISTILL_ATTR)
        metrics = job.method.finish()
    else:
        metrics = job.method.one_shot()
    job.model.eval()
    student = job.fold()
    metrics["encoder_sparsity"] = student.compression_record["structure"]["encoder_sparsity"]
    if prepared.fidelity:
        metrics["fidelity_after_prune"] = prepared.fidelity(teacher, student)
    if recipe.finetune["max_steps"] > 0:
        stage_dir = out / CHECKPOINTS / "finetune"
        trainer = CompressionTrainer(
            model=student,
            args=_training_args(recipe, stage_dir, "finetune", progress),
            train_dataset=prepared.train,
            data_collator=prepared.collator,
            teacher=teacher,
            distillation=job.method.student_distillation(distillation),
            trainable=trainable,
            relation_layers=_relation_layers(job, student),
        )
        logs["finetune"] = _train_stage(trainer, stage_dir, resume, stopper)
        delattr(student, DISTILL_ATTR)
        student.eval()
        if prepared.fidelity:
            metrics["fidelity_after_finetune"] = prepared.fidelity(teacher, student)
    metrics.update(target_sparsity=target, minutes=(time.perf_counter() - started) / 60)
    metrics[prepared.held_out_name] = prepared.held_out_count
    if is_main_process():
        _export(student, out, processor, metrics, logs)
    _barrier()
    return out


def _export(student: PreTrainedModel, out: Path, processor: Any, metrics: dict, logs: dict) -> None:
    """Write the student into ``out`` beside the checkpoints (the folder then loads as a model)."""
    staged = save_student(student, out / CHECKPOINTS / "student", processor=processor, overwrite=True, record={"metrics": metrics})
    for item in staged.iterdir():
        target = out / item.name
        if target.is_dir():
            shutil.rmtree(target)
        item.replace(target)
    staged.rmdir()
    if not any((out / CHECKPOINTS).iterdir()):
        (out / CHECKPOINTS).rmdir()
    (out / TRAINING_LOG_FILE).write_text(json.dumps(logs, indent=2) + "\n", encoding="utf-8")
    logger.info("student written to %s", out)
