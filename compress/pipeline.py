"""``compress.run``: the whole job from a recipe to an exported student, as named stages.

``setup`` loads the teacher and the data and attaches the recipe's method (``Run``); then
``prune_stage`` trains the weights with distillation while the method chooses the structure
(learned L0 gates under a size controller, scheduled top-k, compactors) or, with
``train.max_steps = 0``, lets the method choose it one-shot; ``fold_stage`` folds the gated model
into the dense student; ``reconstruct_stage`` (when ``reconstruct.batches`` > 0) refits its output
projections to the teacher by least squares; ``finetune_stage`` distils it; ``export_stage`` writes it.
``run`` chains them (``STAGES``); a script can call them one by one, or replace one. Each
training stage checkpoints into ``OUT.checkpoints/<stage>`` beside the output, so an interrupted run
continues with ``resume=True`` (refused when the recipe, teacher or data changed); the student is built
in a staging folder and moved into ``OUT`` only when complete, and the checkpoints are removed then
(unless ``keep_checkpoints``). The Trainer of both stages is built in one place (``build_trainer``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file
from transformers import PreTrainedModel, TrainerState, TrainingArguments, set_seed
from transformers.integrations import get_reporting_integration_callbacks
from transformers.trainer import TRAINER_STATE_NAME
from transformers.utils import SAFE_WEIGHTS_NAME

from compress.adapters import modality_of
from compress.data import load_texts
from compress.distill import DistillationLoss
from compress.errors import CompressError, DataError, Interrupted, OutputDirError, RecipeError
from compress.evaluate import MIN_FIDELITY_ITEMS
from compress.export import TRAINING_LOG_FILE, write_student
from compress.families import recipe_fits
from compress.fingerprint import check_fingerprint, run_fingerprint, write_fingerprint
from compress.folding import CompressionRecord, fold
from compress.guards import FiniteGuard, fidelity_at_chance, fidelity_collapse, schedule_outlasts_stage
from compress.generic import job_for
from compress.job import CompressionJob
from compress.methods.base import PruningMethod
from compress.objective import with_layer_map, with_objective
from compress.outputs import (
    FIDELITY_KEYS,
    STUDENT_MARKER,
    SUMMARY_MARKER,
    StagedOutput,
    check_output_path,
    checkpoints_dir,
    remove_checkpoints,
    remove_stale_siblings,
)
from compress.recipe import Recipe, check_trainer_arguments, load_recipe
from compress.reconstruct import calibration_batches, plan, reconstruct
from compress.report import base_macs
from compress.sentence import MEAN_POOLING, SentencePipeline, is_sentence_transformer, sentence_encoder, teacher_pipeline
from compress.sources import named_corpora
from compress.structure import Structure
from compress.teachers import default_teacher_path, load_teacher
from compress.trainer import DISTILL_ATTR, CompressionTrainer, StopOnSignal
from compress.training_data import TrainingData, task_labels, training_data
from compress.vocabulary import check_prunable, prune_loaded

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)
#: the two training stages, by the name of their checkpoint folder
PRUNE, FINETUNE = "prune", "finetune"


def is_main_process() -> bool:
    """Rank 0 of a torchrun / accelerate launch, or the only process."""
    return int(os.environ.get("RANK", "0")) == 0


def _barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def prepare_output(out: Path, overwrite: bool, resume: bool, protected: list, fingerprint: dict) -> Path:
    """Check ``out`` before any work, and the checkpoints beside it; returns ``out`` resolved.

    A new run needs an ``out`` that loses nothing (``compress.outputs.check_output_path``) and no
    unfinished run beside it unless ``overwrite``; a resumed run needs that unfinished run, made
    with the same recipe, teacher and data (its fingerprint).
    """
    if resume and overwrite:
        raise OutputDirError("pass either resume (continue the run in OUT) or overwrite (start again), not both")
    checkpoints = checkpoints_dir(out)
    if resume:
        if not checkpoints.is_dir():
            finished = (Path(out) / STUDENT_MARKER).is_file()
            raise OutputDirError(
                f"nothing to resume for {out}: there is no {checkpoints.name} folder of an unfinished run beside it"
                + (" (the student in it is finished)" if finished else "")
            )
        check_fingerprint(checkpoints, fingerprint)
        out = check_output_path(out, protected, overwrite=True)
        remove_stale_siblings(out)  # what a run killed while exporting left beside it
        return out
    out = check_output_path(out, protected, overwrite)
    if checkpoints.is_dir():
        if not overwrite:
            raise OutputDirError(
                f"{checkpoints} holds an unfinished earlier run for {out}; continue it with --resume (resume=True) "
                "or start again with --overwrite"
            )
        remove_checkpoints(out)
    remove_stale_siblings(out)
    write_fingerprint(checkpoints, fingerprint)
    return out


#: TrainingArguments the run sets unless the recipe's ``trainer:`` section sets them
TRAINER_DEFAULTS: dict[str, Any] = {
    "report_to": "none",
    "save_total_limit": 2,
    "dataloader_num_workers": 0,
    "logging_first_step": True,
}


def trainer_defaults(recipe: Recipe) -> dict[str, Any]:
    """The TrainingArguments a recipe's ``trainer:`` section may override: ``TRAINER_DEFAULTS``, and for
    paragraph examples (``data.examples``) batches of paragraphs of similar length, each padded to its
    longest paragraph rather than to ``train.seq_len``."""
    if recipe.data["examples"] == "paragraphs":
        return {**TRAINER_DEFAULTS, "train_sampling_strategy": "group_by_length"}
    return dict(TRAINER_DEFAULTS)


def training_arguments(
    recipe: Recipe, stage_dir: Path, stage: str, progress: bool, max_steps: int | None = None
) -> TrainingArguments:
    """The Trainer's arguments for ``stage`` (``prune`` or ``finetune``) of ``recipe``.

    ``recipe.trainer`` is passed through over ``trainer_defaults``; the arguments set below come from
    the recipe's own keys (the recipe refuses them in ``trainer:``, ``LIBRARY_TRAINING_ARGUMENTS``).
    ``max_steps`` replaces the stage's steps (one student's part of a multi-size stage 1).
    """
    train = recipe.train
    steps, lr = (train["max_steps"], train["lr"]) if stage == PRUNE else (recipe.finetune["max_steps"], recipe.finetune["lr"])
    steps = steps if max_steps is None else max_steps
    return TrainingArguments(
        **{**trainer_defaults(recipe), **recipe.trainer},
        output_dir=str(stage_dir),
        max_steps=steps,
        per_device_train_batch_size=train["batch_size"],
        gradient_accumulation_steps=train["grad_accum"],
        learning_rate=lr,
        warmup_steps=train["warmup_steps"],
        lr_scheduler_type="constant_with_warmup" if stage == PRUNE else "linear",
        logging_steps=train["logging_steps"],
        save_steps=train["save_steps"],
        seed=train["seed"],
        data_seed=train["seed"],
        disable_tqdm=not progress,
        # Without use_cpu, transformers does not start DDP on a CPU-only machine under torchrun.
        use_cpu=not torch.cuda.is_available(),
        # The distillation heads and multipliers are used outside the model's forward; every trainable
        # parameter gets exactly one gradient per step, which DDP checks without a graph search.
        ddp_find_unused_parameters=False,
        # Under DDP every rank reads its own batches: speech batches (length buckets, cropped per batch)
        # differ in length from rank to rank, so rank 0 cannot fetch and concatenate them all.
        accelerator_config={"dispatch_batches": False},
    )


def check_trainer_section(recipe: Recipe) -> None:
    """Build both stages' arguments once, so a ``trainer:`` value transformers refuses fails before any loading."""
    if not recipe.trainer:
        return
    try:
        for stage in (PRUNE, FINETUNE):
            args = training_arguments(recipe, Path(f"{recipe.name}-check"), stage, progress=False)
        get_reporting_integration_callbacks(args.report_to)
    except (TypeError, ValueError) as err:
        raise RecipeError(f"{recipe.source}: transformers refuses the trainer section {recipe.trainer}: {err}") from err


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


def _restore(trainer: CompressionTrainer, checkpoint: Path) -> None:
    """Load a checkpoint's weights (attached modules too) and trainer state without training a step."""
    weights = load_file(checkpoint / SAFE_WEIGHTS_NAME)
    model = trainer.model
    missing, unexpected = model.load_state_dict(weights, strict=False)
    # save_pretrained keeps one of each set of tied tensors: the others share its storage.
    loaded = {t.data_ptr() for name, t in model.state_dict().items() if name in weights}
    untied = [name for name in missing if model.state_dict()[name].data_ptr() not in loaded]
    if unexpected or untied:
        raise CompressError(f"checkpoint {checkpoint} does not match the model ({(unexpected or untied)[:3]}); start again with --overwrite")
    trainer.state = TrainerState.load_from_json(str(checkpoint / TRAINER_STATE_NAME))


def _train_stage(trainer: CompressionTrainer, stage_dir: Path, resume: bool, stopper: StopOnSignal) -> list[dict]:
    checkpoint = last_complete_checkpoint(stage_dir) if resume else None
    if checkpoint:
        done = TrainerState.load_from_json(str(Path(checkpoint) / TRAINER_STATE_NAME)).global_step
        if done >= trainer.args.max_steps:
            # The stage had finished: resuming the Trainer would train one step more.
            logger.info("stage %s finished before the interruption: restoring %s", stage_dir.name, checkpoint)
            _restore(trainer, Path(checkpoint))
            return trainer.state.log_history
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


def _load_teacher(teacher: Any, processor: Any) -> tuple[PreTrainedModel, Any]:
    """The Hugging Face teacher and its processor: a model object, a SentenceTransformer's encoder, or a folder's."""
    if is_sentence_transformer(teacher):
        return sentence_encoder(teacher), processor if processor is not None else teacher.tokenizer
    if isinstance(teacher, PreTrainedModel):
        return teacher, processor
    return load_teacher(teacher, processor=processor)


@dataclass
class Run:
    """What the stages of one run share: the inputs, the job, and what each stage leaves for the next."""

    recipe: Recipe
    teacher: PreTrainedModel
    processor: Any
    out: Path
    job: CompressionJob
    data: TrainingData
    distillation: DistillationLoss
    resume: bool = False
    progress: bool = True
    keep_checkpoints: bool = False
    #: the teacher's folder (None for a model object)
    teacher_dir: Path | None = None
    #: the teacher's sentence-transformers pipeline (folder or object): carried over to the student folder
    pipeline: SentencePipeline | None = None
    #: the student's name in a multi-size run (``sparsity-0.50``): its checkpoints and folder are named after it
    label: str | None = None
    stopper: StopOnSignal = field(default_factory=StopOnSignal)
    started: float = field(default_factory=time.perf_counter)
    logs: dict[str, list[dict]] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    student: PreTrainedModel | None = None
    record: CompressionRecord | None = None

    def stage_dir(self, stage: str) -> Path:
        """Where ``stage`` checkpoints: ``OUT.checkpoints/<stage>``, per student in a multi-size run."""
        folder = checkpoints_dir(self.out) / stage
        return folder / self.label if self.label else folder

    @property
    def trainable(self) -> Callable[[str], bool] | None:
        """Which weights train: all when a loss reaches the head, else the embeddings and encoder only."""
        uses_head = self.recipe.distill["logits_kl"] > 0 or self.recipe.distill["task"] > 0
        return None if uses_head else self.job.adapter.is_backbone


def _local_paths(*candidates: Any) -> list[Path]:
    """The candidates that name existing files or folders (hub ids and built-in names are not); a mix's or join's corpora too."""
    names = [name for c in candidates if not isinstance(c, PreTrainedModel) for name in named_corpora(c)]
    return [Path(c) for c in names if c is not None and Path(c).exists()]


def check_before_training(recipe: Recipe, job: CompressionJob, teacher: PreTrainedModel) -> None:
    """Refuse, before any step, settings that would fail at the first step: the layer map, the sequence length."""
    trains = recipe.train["max_steps"] > 0 or recipe.finetune["max_steps"] > 0
    if not trains:
        return
    depth = teacher.config.num_hidden_layers
    for student_state, teacher_state in recipe.distill["layers"]:
        if max(student_state, teacher_state) > depth:
            raise RecipeError(
                f"distill.layers pair [{student_state}, {teacher_state}] names a hidden state the {depth}-layer teacher "
                f"does not have (0 is the embeddings, {depth} the last layer); list pairs within 0..{depth}, e.g. "
                f"distill.layers=[[0, 0], [{depth}, {depth}]]"
            )
    positions = getattr(teacher.config, "max_position_embeddings", None)
    if job.adapter.modality == "text" and positions is not None and recipe.train["seq_len"] > positions:
        raise RecipeError(
            f"train.seq_len={recipe.train['seq_len']} is longer than the teacher's {positions} position embeddings; "
            f"set train.seq_len <= {positions}"
        )


def check_reconstruct(recipe: Recipe, job: CompressionJob) -> None:
    """Refuse ``reconstruct.batches`` for layers it cannot refit (no LayerNorm reading each sublayer's residual sum)."""
    if recipe.reconstruct["batches"] > 0 and not job.adapter.residual_sums(0):
        raise RecipeError(
            f"reconstruct refits each sublayer's output projection against the LayerNorm that reads its residual sum "
            f"(post-LN layers); the layers of this {type(job.model).__name__} have none (pre-LN, or the generic path): "
            "set reconstruct.batches=0"
        )


def check_sizes(recipe: Recipe, job: CompressionJob) -> None:
    """Refuse a multi-size run that cannot give every student its part of stage 1, or a method that has no sizes."""
    count = len(job.targets)
    if count == 1:
        return
    steps = recipe.train["max_steps"]
    if 0 < steps < count:
        raise RecipeError(
            f"{count} students share stage 1's train.max_steps={steps}: each needs at least one step; "
            f"set train.max_steps >= {count} (or 0 for one-shot students)"
        )
    if recipe.prune["method"] == "layer-drop":
        raise RecipeError("layer-drop keeps a number of layers (prune.target), not a list of sizes; run it once per size")


def setup(
    recipe: Recipe | str | Path,
    teacher: PreTrainedModel | SentenceTransformer | str | Path | None = None,
    data: str | Path | Mapping[str, float] | None = None,
    out: str | Path | None = None,
    processor: Any = None,
    overrides: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
    keep_checkpoints: bool = False,
    training_args: Mapping[str, Any] | None = None,
    generic: bool = False,
) -> Run:
    """Check everything that can be checked, load the teacher and the data, attach the recipe's method.

    ``teacher`` is a model folder (default: MiniLM), a model, or a ``SentenceTransformer`` (its encoder,
    tokenizer, pooling and length are used as its folder's would be; the student folder gets its pipeline).
    ``training_args`` (``transformers.TrainingArguments`` names) are merged over the recipe's
    ``trainer:`` section, so compression.json records them with it. The output folder is checked first
    (nothing is trained for a folder the run could not write); the resume state is checked against the
    recipe, teacher and data once they are loaded. ``generic`` prunes on the generic path (FFN units only,
    ``compress.generic``) even when a family adapter fits; without it the generic path is chosen, with a
    notice, only when none does.
    """
    started = time.perf_counter()
    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    if overrides:
        recipe = recipe.override(overrides)
    if training_args:
        check_trainer_arguments(training_args, "training_args", "compress.run")
        recipe = recipe.override({"trainer": {**recipe.trainer, **training_args}})
    check_trainer_section(recipe)
    if teacher is None and not recipe_fits(recipe.family, "bert"):
        raise RecipeError(
            f"recipe {recipe.name!r} compresses {recipe.family} models, and without a teacher the teacher is the "
            f"bundled MiniLM (bert): pass a {recipe.family} model folder with --teacher PATH (teacher=...)"
        )
    out = Path(out) if out is not None else Path(f"{recipe.name}-student")
    is_object = isinstance(teacher, PreTrainedModel) or is_sentence_transformer(teacher)
    teacher_dir = None if is_object else (teacher or default_teacher_path())
    protected = _local_paths(teacher_dir, data)
    if is_main_process():
        check_output_path(out, protected, overwrite=overwrite or resume)
    # A sentence-transformers module the student cannot carry is refused now, not at export.
    pipeline = teacher_pipeline(teacher if is_object else teacher_dir)
    teacher, processor = _load_teacher(teacher, processor)
    trains = recipe.train["max_steps"] > 0 or recipe.finetune["max_steps"] > 0 or recipe.reconstruct["batches"] > 0
    if processor is None and trains:
        raise CompressError(
            "training needs the teacher's tokenizer (feature extractor for speech), and so does reconstruct, and the "
            "teacher folder has none: save it there (tokenizer.save_pretrained(TEACHER_DIR)), or in Python pass processor=...; a "
            "one-shot run (train.max_steps=0 finetune.max_steps=0 reconstruct.batches=0) needs none"
        )
    set_seed(recipe.train["seed"])
    modality = modality_of(teacher)
    recipe = with_layer_map(with_objective(recipe, teacher, modality), teacher.config.num_hidden_layers)
    # Before the data: a recipe of another family, or one the generic path cannot run, fails fast.
    job = job_for(teacher, recipe, generic, asked_axes=(overrides or {}).get("prune.axes"))
    recipe = job.recipe  # the generic path narrows prune.axes: the run, its fingerprint and record use that
    for target in job.targets:  # a target the axes cannot meet is refused before any step
        target.check_reachable(job.gated)
    check_sizes(recipe, job)
    check_reconstruct(recipe, job)
    check_before_training(recipe, job, teacher)
    if recipe.export["vocabulary"] is not None:  # refused now rather than after training
        if modality != "text" or processor is None:
            raise RecipeError("export.vocabulary prunes a tokenizer's vocabulary: it needs a text teacher with its tokenizer")
        check_prunable(processor)
    pooling = pipeline.pooling if pipeline else MEAN_POOLING  # the teacher's: fidelity and pooled losses use it
    prepared = training_data(recipe, modality, processor, data, pooling, task_labels(recipe, teacher))
    if trains and 0 < prepared.held_out_count < MIN_FIDELITY_ITEMS:
        raise DataError(
            f"the held-out split has {prepared.held_out_count} {prepared.held_out_name.replace('_', ' ')}, and fidelity "
            f"needs at least {MIN_FIDELITY_ITEMS}: pass more data or raise data.held_out (now {recipe.data['held_out']})"
        )
    width = teacher.config.hidden_size
    try:
        distillation = DistillationLoss(recipe.distill, width, width, pooling=pooling)
    except ValueError as err:  # a distill section the losses cannot be built from (an empty layer map)
        raise RecipeError(f"{recipe.source}: {err}") from None
    if is_main_process():
        source = data or (recipe.data["audio"] if modality == "speech" else recipe.data["text"])
        out = prepare_output(out, overwrite, resume, protected, run_fingerprint(recipe.to_dict(), job.teacher_hash, source))
    return Run(
        recipe, teacher, processor, out, job, prepared, distillation, resume, progress, keep_checkpoints,
        teacher_dir=Path(teacher_dir) if teacher_dir is not None else None, pipeline=pipeline, started=started,
    )


#: the recipe key holding each training stage's learning rate, named when training goes non-finite
LEARNING_RATE_KEYS = {PRUNE: "train.lr", FINETUNE: "finetune.lr"}


def build_trainer(
    run: Run,
    model: PreTrainedModel,
    stage: str,
    distillation: DistillationLoss,
    method: PruningMethod | None = None,
    max_steps: int | None = None,
) -> CompressionTrainer:
    """The Trainer of a training stage (``prune``: the gated model with its method; ``finetune``: the student)."""
    return CompressionTrainer(
        model=model,
        args=training_arguments(run.recipe, run.stage_dir(stage), stage, run.progress, max_steps),
        train_dataset=run.data.train,
        data_collator=run.data.collator,
        teacher=run.teacher,
        distillation=distillation,
        method=method,
        trainable=run.trainable,
        relation_layers=_relation_layers(run.job, model),
        guard=FiniteGuard(stage, LEARNING_RATE_KEYS[stage]),
        dropout=run.recipe.train["dropout"],
    )


def prune_stage(run: Run) -> None:
    """Stage 1: train the gated model while its method chooses the structure (or choose it one-shot)."""
    job, prune = run.job, run.recipe.prune
    if run.recipe.train["max_steps"] > 0:
        late = schedule_outlasts_stage(prune["schedule"], prune["axes"], run.recipe.train["max_steps"])
        _warn(run, [late] if late else [])
        trainer = build_trainer(run, job.model, PRUNE, run.distillation, method=job.method)
        run.logs[PRUNE] = _train_stage(trainer, run.stage_dir(PRUNE), run.resume, run.stopper)
        run.distillation = getattr(job.model, DISTILL_ATTR)
        run.metrics.update(job.method.finish())
    else:
        run.metrics.update(job.method.one_shot())


def structure_warnings(structure: Structure, target: float, achieved: float | None = None, measure: str = "encoder parameters") -> list[str]:
    """What is wrong with a structure that still folds: a missed target, no sublayer of a kind left, too little left.

    ``target`` and ``achieved`` are fractions of ``measure`` removed (``achieved`` defaults to the
    structure's encoder sparsity).
    """
    found = []
    removed = structure.encoder_sparsity
    achieved = removed if achieved is None else achieved
    if abs(achieved - target) > 0.01:
        found.append(
            f"the target was to remove {target:.1%} of the {measure}, the student removes {achieved:.1%} "
            "(the smallest structure the axes allow is coarser); choose a target the axes can meet"
        )
    for kind, name in (("attention", "attention"), ("mlp", "FFN")):
        kept = structure.per_layer(kind)
        if kept and not any(kept):
            found.append(f"the student keeps no {name} sublayer in any layer; lower the target sparsity")
    if removed >= 0.95:
        found.append(f"the student keeps only {1 - removed:.1%} of the encoder parameters; expect its quality to collapse")
    return found


def _warn(run: Run, messages: list[str]) -> None:
    for message in messages:
        logger.warning(message)
    if messages:
        run.metrics.setdefault("warnings", []).extend(messages)


def fold_stage(run: Run) -> None:
    """Fold the gated model into the dense student and score it; a structure gone wrong is a loud warning."""
    run.job.model.eval()
    run.student, run.record = fold(run.job)
    run.metrics["encoder_sparsity"] = run.record.structure.to_dict()["encoder_sparsity"]
    target, gated = run.job.target, run.job.gated
    achieved = float(target.removed(gated, run.record.structure.sizes))
    _warn(run, structure_warnings(run.record.structure, target.fraction(gated), achieved, target.measure))
    if run.data.fidelity:
        run.metrics["fidelity_after_prune"] = run.data.fidelity(run.teacher, run.student)
        run.metrics["measured_as"] = run.data.measure
        if run.data.pooling is not None:  # how both models embedded the texts for the fidelity figures
            run.metrics["pooling"] = run.data.pooling.to_dict()


def reconstruct_stage(run: Run) -> None:
    """Refit the student's output projections to the teacher's residual stream (skipped when ``reconstruct.batches`` is 0)."""
    settings = run.recipe.reconstruct
    if settings["batches"] <= 0:
        return
    student, record = run.student, run.record
    batches = calibration_batches(
        run.data.train, run.data.collator, run.recipe.train["batch_size"], settings["batches"], run.recipe.train["seed"]
    )
    layers = record.kept_layers or list(range(student.config.num_hidden_layers))
    hidden = record.kept_indices.get("hidden")
    errors = reconstruct(
        student, run.teacher, plan(student, run.job.adapter.residual_sums, layers), batches,
        torch.tensor(hidden) if hidden is not None else None, settings["ridge"], run.progress,
    )
    run.metrics["reconstruct"] = {"sublayers": len(errors), "batches": len(batches)}
    if errors:  # a student that kept no attention or FFN sublayer has nothing to refit
        run.metrics["reconstruct"]["error_before"] = sum(e[0] for e in errors) / len(errors)
        run.metrics["reconstruct"]["error_after"] = sum(e[1] for e in errors) / len(errors)
    if run.data.fidelity:
        run.metrics["fidelity_after_reconstruct"] = run.data.fidelity(run.teacher, student)


def finetune_stage(run: Run) -> None:
    """Stage 2: distil the dense student from the teacher (skipped when ``finetune.max_steps`` is 0)."""
    if run.recipe.finetune["max_steps"] <= 0:
        return
    distillation = run.job.method.student_distillation(run.distillation)
    trainer = build_trainer(run, run.student, FINETUNE, distillation)
    run.logs[FINETUNE] = _train_stage(trainer, run.stage_dir(FINETUNE), run.resume, run.stopper)
    delattr(run.student, DISTILL_ATTR)
    run.student.eval()
    if run.data.fidelity:
        run.metrics["fidelity_after_finetune"] = run.data.fidelity(run.teacher, run.student)


#: where TensorBoard event files (``trainer.report_to: tensorboard``) go in the student folder, one folder a stage
RUNS_DIR = "runs"


def _copy_event_files(run: Run, student_dir: Path) -> None:
    """Copy each stage's TensorBoard runs (the Trainer writes them into its checkpoint folder) into the student.

    The checkpoints are removed after export; ``OUT/runs/<stage>`` is where the Hub and ``tensorboard
    --logdir OUT/runs`` look for them.
    """
    for stage in (PRUNE, FINETUNE):
        runs = run.stage_dir(stage) / RUNS_DIR
        if runs.is_dir():
            shutil.copytree(runs, student_dir / RUNS_DIR / stage)


def complete_record(run: Run) -> None:
    """Put what the run measured into the student's record: target, minutes, MACs (and their ratio), warnings.

    MACs are counted as ``compress report`` counts them (``compress.report.base_macs``), per token of a
    ``train.seq_len``-token sequence for text; ``structure.macs_ratio`` is student / teacher.
    """
    target = run.job.target
    run.metrics["minutes"] = (time.perf_counter() - run.started) / 60
    if target.sizes is None and (target.macs is not None or target.count != "encoder"):
        run.metrics.update(target.to_dict())  # the target in what it counts (MACs, all parameters)
    else:
        run.metrics["target_sparsity"] = run.job.target_sparsity()
    (teacher_macs, student_macs), unit = base_macs(run.teacher, run.student, seq=run.recipe.train["seq_len"])
    run.metrics["macs"] = {"teacher": teacher_macs, "student": student_macs, "unit": unit}
    run.record.structure = replace(run.record.structure, macs_ratio=round(student_macs / teacher_macs, 6))
    run.metrics[run.data.held_out_name] = run.data.held_out_count
    before, after = run.metrics.get("fidelity_after_prune"), run.metrics.get("fidelity_after_finetune")
    collapse = fidelity_collapse(before, after) if before is not None and after is not None else None
    latest = after if after is not None else before
    chance = run.data.chance() if run.data.chance and latest is not None else None
    at_chance = fidelity_at_chance(latest, chance) if chance is not None else None
    _warn(run, [warning for warning in (collapse, at_chance) if warning])
    run.record.metrics.update(run.metrics)


def write_run_student(run: Run, folder: Path) -> None:
    """The student, its record, its training log and TensorBoard runs, written into ``folder``.

    With ``export.vocabulary: corpus`` the student keeps only the tokens of the training corpus
    (``compress.vocabulary``): its outputs on that text are unchanged, checked before it is written.
    """
    processor, pruned = run.processor, None
    if run.recipe.export["vocabulary"] == "corpus":
        texts = load_texts(run.data.source)["text"]
        pruned = prune_loaded(run.student, run.processor, texts, str(run.data.source))
        structure = run.record.structure  # the student was cut in place: its record (and a run's summary) follows
        run.record.structure = replace(structure, parameters=structure.parameters - pruned.removed_parameters)
        processor = pruned.tokenizer
    record = run.record.to_dict()
    if pruned is not None:
        record["vocabulary"] = pruned.section
    write_student(run.student, folder, processor, record, sentence_from=run.pipeline)
    if pruned is not None:
        pruned.check_saved(folder, texts)
    (folder / TRAINING_LOG_FILE).write_text(json.dumps(run.logs, indent=2) + "\n", encoding="utf-8")
    _copy_event_files(run, folder)


def export_stage(run: Run) -> Path:
    """Write the student to ``OUT`` (staged beside it, moved into place when complete); drop the checkpoints."""
    complete_record(run)
    if is_main_process():
        with StagedOutput(run.out) as staged:
            write_run_student(run, staged.path)
            staged.commit()
        if not run.keep_checkpoints:
            remove_checkpoints(run.out)
        logger.info("student written to %s", run.out)
    _barrier()
    return run.out


STAGES: tuple[Callable[[Run], Any], ...] = (prune_stage, fold_stage, reconstruct_stage, finetune_stage, export_stage)


# -- several students from one run ----------------------------------------------------------------
def part_steps(total: int, parts: int) -> list[int]:
    """Stage 1's steps split into ``parts`` nearly equal parts, one per student (the remainder goes first)."""
    share, extra = divmod(total, parts)
    return [share + (i < extra) for i in range(parts)]


def prune_sizes_stage(run: Run) -> list[dict[str, torch.Tensor]]:
    """Stage 1 of a multi-size run: one training whose target rises through the students' sizes.

    Each student gets an equal part of ``train.max_steps`` (its own checkpoint folder), the method
    aimed at its target from the structure the previous part reached (``PruningMethod.retarget``),
    so a smaller student inherits the larger one's learned structure. Returns the gated model's
    state at the end of each part (weights, gates, distillation heads), largest student first.
    """
    job, states = run.job, []
    steps = part_steps(run.recipe.train["max_steps"], len(job.targets))
    for target, part in zip(job.targets, steps):
        job.method.retarget(target, part)
        student = replace(run, label=target.label)
        if part > 0:
            trainer = build_trainer(student, job.model, PRUNE, run.distillation, method=job.method, max_steps=part)
            run.logs[target.label] = _train_stage(trainer, student.stage_dir(PRUNE), run.resume, run.stopper)
            run.distillation = getattr(job.model, DISTILL_ATTR)
        states.append({name: tensor.detach().clone() for name, tensor in job.model.state_dict().items()})
    return states


def size_student(run: Run, index: int, state: Mapping[str, torch.Tensor]) -> Run:
    """The ``index``-th student of a multi-size run from stage 1's state at its size: settled, folded, distilled.

    Its record names its own target (the recipe's list is kept under ``metrics.sizes``), and its training
    log holds the parts of stage 1 that led to it, their steps counted on.
    """
    job = run.job
    target = job.targets[index]
    job.model.load_state_dict(state)
    job.target = target
    job.method.retarget(target, 1)
    student = replace(run, label=target.label, metrics={}, logs={}, student=None, record=None)
    if run.recipe.train["max_steps"] > 0:
        student.distillation = getattr(job.model, DISTILL_ATTR)
        student.logs[PRUNE] = _joined_logs([run.logs[t.label] for t in job.targets[: index + 1]])
        student.metrics.update(job.method.finish())
    else:
        student.metrics.update(job.method.one_shot())
    fold_stage(student)
    reconstruct_stage(student)
    prune = student.record.recipe["prune"]
    key = "target_macs" if target.macs is not None else "target_sparsity"
    student.metrics["sizes"] = {key: prune[key], "student": index}
    prune[key] = target.macs if target.macs is not None else target.sparsity
    finetune_stage(student)
    complete_record(student)
    return student


def _joined_logs(parts: list[list[dict]]) -> list[dict]:
    """Log histories of consecutive Trainer runs as one, each part's steps counted on from the last."""
    joined, offset = [], 0
    for part in parts:
        joined.extend({**entry, "step": entry["step"] + offset} if "step" in entry else entry for entry in part)
        offset += max((entry.get("step", 0) for entry in part), default=0)
    return joined


def summary_rows(students: list[Run]) -> list[dict[str, Any]]:
    """One row per student of a multi-size run: its folder, target, structure and fidelity."""
    rows = []
    for student in students:
        structure, metrics = student.record.structure, student.record.metrics
        rows.append(
            {
                "folder": student.label,
                **student.job.targets[metrics["sizes"]["student"]].to_dict(),
                "encoder_sparsity": round(structure.encoder_sparsity, 6),
                "parameters": structure.parameters,
                "teacher_parameters": structure.teacher_parameters,
                "macs_ratio": structure.macs_ratio,
                **{key: metrics[key] for key in FIDELITY_KEYS if key in metrics},
            }
        )
    return rows


def run_sizes(run: Run) -> Path:
    """A multi-size run after ``setup``: stage 1 once, then each student folded, distilled and exported.

    ``OUT`` holds one complete student folder per size (``OUT/sparsity-0.50``, ...; ``macs-0.50`` for MACs
    targets) and ``students.json``, the summary table; all of it is staged and moved into place at the end.
    """
    states = prune_sizes_stage(run)
    students = [size_student(run, i, state) for i, state in enumerate(states)]
    minutes = (time.perf_counter() - run.started) / 60
    if is_main_process():
        with StagedOutput(run.out) as staged:
            for student in students:
                write_run_student(student, staged.path / student.label)
            summary = {"students": summary_rows(students), "minutes": minutes, "recipe": run.recipe.to_dict()}
            (staged.path / SUMMARY_MARKER).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
            staged.commit()
        if not run.keep_checkpoints:
            remove_checkpoints(run.out)
        logger.info("%d students written to %s", len(students), run.out)
    _barrier()
    return run.out


def run(recipe: Recipe | str | Path, **options: Any) -> Path:
    """Compress a teacher with ``recipe`` and export the student: ``setup`` (same arguments), then ``STAGES``.

    The teacher defaults to MiniLM, ``data`` to the recipe's ``data.text`` (the built-in
    ``python-docs`` corpus) or for a speech teacher (HuBERT, wav2vec2) ``data.audio``: audio files or
    a dataset with an audio column. Returns the output folder, which holds the student (loadable with
    ``AutoModel.from_pretrained``), its tokenizer or feature extractor and ``compression.json``.
    ``training_args={"report_to": "tensorboard", "bf16": True}`` passes ``TrainingArguments`` through
    to both training stages, over the recipe's ``trainer:`` section.
    """
    state = setup(recipe, **options)
    if len(state.job.targets) > 1:
        return run_sizes(state)
    for stage in STAGES:
        stage(state)
    return state.out
