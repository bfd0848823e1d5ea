"""What the training stages read: the training set, its collator and the held-out fidelity, per modality.

Text teachers train on the corpus's paragraphs (or packed token blocks, ``data.examples``) and are
scored on held-out sentences; speech teachers train on length-bucketed audio crops and are scored on
held-out clips (``compress.evaluate``). A task run (``data.label``, a teacher with a classification
head) trains on labelled examples, padded per batch, and is scored by held-out accuracy retention.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import DataCollatorForLanguageModeling, DataCollatorWithPadding, PreTrainedModel

from compress import audio
from compress.data import load_labelled, split_held_out, text_datasets, tokenize_labelled
from compress.errors import DataError, RecipeError
from compress.evaluate import (
    ACCURACY_MEASURE,
    SIMILARITY_MEASURE,
    AccuracyRetention,
    audio_fidelity,
    embedding_fidelity,
    held_out_sentences,
)
from compress.recipe import Recipe
from compress.sentence import MEAN_POOLING, Pooling

#: held-out clips scored for fidelity (each one forward pass of at most data.max_seconds)
FIDELITY_CLIPS = 64

#: held-out labelled examples scored for accuracy retention
ACCURACY_EXAMPLES = 1024

Fidelity = Callable[[PreTrainedModel, PreTrainedModel], float]


@dataclass
class TrainingData:
    """What a pipeline stage trains on, and how the student is scored on held-out items."""

    train: Any
    collator: Callable | None
    held_out_name: str
    held_out_count: int
    fidelity: Fidelity | None
    #: how text fidelity embeds (the teacher's pooling), for the record; None for speech (mean over frames)
    pooling: Pooling | None = None
    #: the text corpus trained on (a built-in name, file, folder or hub id); None for speech
    source: str | Path | Mapping[str, float] | None = None
    #: what the fidelity figure measures, as the run's record and model card say it
    measure: str = SIMILARITY_MEASURE
    #: the figure of a student that learned nothing (known once the teacher is scored), if the measure has one
    chance: Callable[[], float | None] | None = None


def task_labels(recipe: Recipe, teacher: PreTrainedModel) -> dict[str, int] | None:
    """The teacher's ``label2id`` when the recipe trains on labels (``data.label``), else None.

    Labels need a head that predicts them and a loss that uses them; either missing is refused now,
    before any data is read.
    """
    if recipe.data["label"] is None:
        return None
    if not type(teacher).__name__.endswith("ForSequenceClassification"):
        raise RecipeError(
            f"data.label={recipe.data['label']!r} trains on class labels, which needs a teacher with a sequence-"
            f"classification head, but the teacher is {type(teacher).__name__}: fine-tune one first "
            "(AutoModelForSequenceClassification, see examples/task_compression.py), or unset data.label"
        )
    if not (recipe.distill["task"] > 0 or recipe.distill["logits_kl"] > 0):
        raise RecipeError(
            "data.label gives the run labels, but distill.task and distill.logits_kl are both 0, so nothing uses them: "
            "set distill.task=1 distill.logits_kl=1 (CoFi's task setting), or unset data.label"
        )
    return {str(name): int(index) for name, index in teacher.config.label2id.items()}


def training_data(
    recipe: Recipe,
    modality: str,
    processor: Any,
    data: str | Path | Mapping[str, float] | None,
    pooling: Pooling = MEAN_POOLING,
    label2id: dict[str, int] | None = None,
) -> TrainingData:
    """The training set, collator and fidelity for a teacher of ``modality``, from ``data`` or the recipe's.

    Text fidelity embeds with ``pooling``, the teacher's; with ``label2id`` (``task_labels``) the text is
    labelled examples instead, scored by accuracy retention. Without a processor nothing can be fed to
    the teacher: no data (one-shot pruning only).
    """
    if processor is None:
        return TrainingData(None, None, "held_out_items", 0, None)
    if modality == "speech":
        return _speech_data(recipe, processor, data or recipe.data["audio"])
    if label2id is not None:
        return _task_data(recipe, processor, data or recipe.data["text"], label2id)
    return _text_data(recipe, processor, data or recipe.data["text"], pooling)


def _task_data(recipe: Recipe, tokenizer: Any, source: str | Path, label2id: dict[str, int]) -> TrainingData:
    """Labelled examples, one per row, padded per batch; held-out rows score the student's accuracy retention."""
    train, data = recipe.train, recipe.data
    rows = load_labelled(source, data["label"], label2id, data["column"])
    train_rows, held = split_held_out(rows, data["held_out"], train["seed"])
    held = held.select(range(min(len(held), ACCURACY_EXAMPLES)))
    retention = AccuracyRetention(tokenizer, held["text"], held["labels"], train["seq_len"])
    examples = tokenize_labelled(train_rows, tokenizer, train["seq_len"])
    return TrainingData(
        examples, DataCollatorWithPadding(tokenizer), "held_out_examples", len(held), retention, None, source,
        ACCURACY_MEASURE, retention.chance,
    )


def _text_data(recipe: Recipe, tokenizer: Any, source: str | Path | Mapping[str, float], pooling: Pooling) -> TrainingData:
    train, data = recipe.train, recipe.data
    examples, _, held_texts = text_datasets(
        source, tokenizer, train["seq_len"], data["held_out"], train["seed"], data["column"], data["examples"]
    )
    sentences = held_out_sentences(held_texts)
    collator = None if data["examples"] == "blocks" else DataCollatorWithPadding(tokenizer)
    if train["objective"] == "mlm":
        collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=train["mlm_probability"], seed=train["seed"])

    def fidelity(teacher: PreTrainedModel, student: PreTrainedModel) -> float:
        return embedding_fidelity(teacher, student, tokenizer, sentences, pooling=pooling)

    return TrainingData(
        examples, collator, "held_out_sentences", len(sentences), fidelity if sentences else None, pooling, source
    )


def _speech_data(recipe: Recipe, extractor: Any, source: str | Path | None) -> TrainingData:
    if source is None:
        raise DataError(
            f"a speech teacher needs audio: pass --data AUDIO (data=...) or set data.audio in the recipe; "
            f"AUDIO is {audio.SUPPORTED}"
        )
    train, data = recipe.train, recipe.data
    rate = extractor.sampling_rate
    clips = audio.load_clips(source, rate, data["column"])
    shortest = round(data["min_seconds"] * rate)
    kept = [clip for clip in clips if len(clip.wave) >= shortest]
    if len(kept) < 2:
        raise DataError(
            f"{source}: {len(kept)} of {len(clips)} clips are at least data.min_seconds={data['min_seconds']} long; "
            "at least 2 are needed (training and held out): pass more audio or lower data.min_seconds"
        )
    train_clips, held = audio.split_clips(kept, data["held_out"], train["seed"])
    max_samples = round(data["max_seconds"] * rate)
    buckets = audio.LengthBuckets([c.wave for c in train_clips], train["batch_size"], train["seed"], max_samples)
    held_waves = [c.wave[:max_samples] for c in held[:FIDELITY_CLIPS]]

    def fidelity(teacher: PreTrainedModel, student: PreTrainedModel) -> float:
        return audio_fidelity(teacher, student, extractor, held_waves)

    collator = audio.CropCollator(extractor)
    usable = len(held_waves) >= 3
    return TrainingData(buckets, collator, "held_out_clips", len(held_waves), fidelity if usable else None)
