"""What the training stages read: the training set, its collator and the held-out fidelity, per modality.

Text teachers train on packed token blocks and are scored on held-out sentences; speech teachers
train on length-bucketed audio crops and are scored on held-out clips (``compress.evaluate``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import DataCollatorForLanguageModeling, PreTrainedModel

from compress import audio
from compress.data import text_datasets
from compress.errors import DataError
from compress.evaluate import audio_fidelity, embedding_fidelity, held_out_sentences
from compress.recipe import Recipe
from compress.sentence import MEAN_POOLING, Pooling

#: held-out clips scored for fidelity (each one forward pass of at most data.max_seconds)
FIDELITY_CLIPS = 64

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
    source: str | Path | None = None


def training_data(
    recipe: Recipe, modality: str, processor: Any, data: str | Path | None, pooling: Pooling = MEAN_POOLING
) -> TrainingData:
    """The training set, collator and fidelity for a teacher of ``modality``, from ``data`` or the recipe's.

    Text fidelity embeds with ``pooling``, the teacher's. Without a processor nothing can be fed to the
    teacher: no data (one-shot pruning only).
    """
    if processor is None:
        return TrainingData(None, None, "held_out_items", 0, None)
    if modality == "speech":
        return _speech_data(recipe, processor, data or recipe.data["audio"])
    return _text_data(recipe, processor, data or recipe.data["text"], pooling)


def _text_data(recipe: Recipe, tokenizer: Any, source: str | Path, pooling: Pooling) -> TrainingData:
    train, data = recipe.train, recipe.data
    blocks, _, held_texts = text_datasets(
        source, tokenizer, train["seq_len"], data["held_out"], train["seed"], data["column"]
    )
    sentences = held_out_sentences(held_texts)
    collator = None
    if train["objective"] == "mlm":
        collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=train["mlm_probability"], seed=train["seed"])

    def fidelity(teacher: PreTrainedModel, student: PreTrainedModel) -> float:
        return embedding_fidelity(teacher, student, tokenizer, sentences, pooling=pooling)

    return TrainingData(
        blocks, collator, "held_out_sentences", len(sentences), fidelity if sentences else None, pooling, source
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
