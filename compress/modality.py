"""The modality split of the pipeline: training data, collator and held-out fidelity for a teacher.

Text teachers (BERT) train on packed token blocks and are scored on held-out sentences; speech teachers
(HuBERT, wav2vec2) train on length-bucketed audio crops and are scored on held-out clips. Both use the
same fidelity: Spearman correlation of the teacher's and the student's pairwise cosine similarities of
mean-pooled last hidden states.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import DataCollatorForLanguageModeling, PreTrainedModel

from compress import audio
from compress.data import text_datasets
from compress.errors import DataError, RecipeError
from compress.evaluate import embedding_fidelity, held_out_sentences, pairwise_cosine, spearman
from compress.recipe import Recipe

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


def is_speech(model: PreTrainedModel) -> bool:
    """Whether ``model`` reads raw audio (HuBERT / wav2vec2) rather than tokens."""
    return getattr(model, "main_input_name", None) == "input_values"


#: the distill section of the teacher-free masked-LM objective: the student's own MLM loss alone
MLM_ONLY = {
    "distill.layers": [],
    "distill.hidden_l1": 0.0,
    "distill.hidden_cos": 0.0,
    "distill.hidden_mse": 0.0,
    "distill.logits_kl": 0.0,
    "distill.attention_relation": 0.0,
    "distill.task": 1.0,
}


def with_objective(recipe: Recipe, teacher: PreTrainedModel) -> Recipe:
    """The recipe with ``train.objective`` resolved to ``distill`` or ``mlm``.

    ``mlm`` (WID's teacher-free setting) trains on the masked-LM loss alone, so its distill section is
    replaced by the task loss; it needs a text teacher with an MLM head. ``auto`` picks ``mlm`` when
    the teacher has one and ``distill`` otherwise (e.g. the MiniLM sentence encoder).
    """
    objective = recipe.train["objective"]
    has_mlm_head = not is_speech(teacher) and teacher.get_output_embeddings() is not None
    if objective == "auto":
        objective = "mlm" if has_mlm_head else "distill"
    if objective == "distill":
        return recipe.override({"train.objective": "distill"})
    if not has_mlm_head:
        raise RecipeError(
            f"train.objective=mlm needs a text teacher with a masked-LM head (e.g. BertForMaskedLM), but the "
            f"teacher is {type(teacher).__name__}; use train.objective=distill (or auto)"
        )
    return recipe.override({"train.objective": "mlm", **MLM_ONLY})


def training_data(recipe: Recipe, teacher: PreTrainedModel, processor: Any, data: str | Path | None) -> TrainingData:
    """The training set, collator and fidelity for ``teacher``'s modality, from ``data`` or the recipe's.

    Without a processor nothing can be fed to the teacher: no data (one-shot pruning only).
    """
    if processor is None:
        return TrainingData(None, None, "held_out_items", 0, None)
    if is_speech(teacher):
        return _speech_data(recipe, processor, data or recipe.data["audio"])
    return _text_data(recipe, processor, data or recipe.data["text"])


def _text_data(recipe: Recipe, tokenizer: Any, source: str | Path) -> TrainingData:
    train, data = recipe.train, recipe.data
    blocks, _, held_texts = text_datasets(
        source, tokenizer, train["seq_len"], data["held_out"], train["seed"], data["column"]
    )
    sentences = held_out_sentences(held_texts)
    collator = None
    if train["objective"] == "mlm":
        collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=train["mlm_probability"], seed=train["seed"])

    def fidelity(teacher: PreTrainedModel, student: PreTrainedModel) -> float:
        return embedding_fidelity(teacher, student, tokenizer, sentences)

    return TrainingData(blocks, collator, "held_out_sentences", len(sentences), fidelity if sentences else None)


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


@torch.no_grad()
def mean_pooled_audio_embeddings(model: PreTrainedModel, extractor: Any, waves: list) -> torch.Tensor:
    """Mean over frames of the last hidden state of each clip (one clip per pass: no padding), (N, hidden)."""
    was_training = model.training
    model.eval()
    try:
        pooled = [
            model.base_model(audio.features(extractor, [wave]).to(model.device)).last_hidden_state.mean(1).float().cpu()
            for wave in waves
        ]
    finally:
        model.train(was_training)
    return torch.cat(pooled)


def audio_fidelity(teacher: PreTrainedModel, student: PreTrainedModel, extractor: Any, waves: list) -> float:
    """Spearman correlation of teacher and student pairwise cosine similarities over held-out clips."""
    if len(waves) < 3:
        raise DataError(f"audio fidelity needs at least 3 clips, got {len(waves)}; hold out more audio")
    similarities = [pairwise_cosine(mean_pooled_audio_embeddings(m, extractor, waves)) for m in (teacher, student)]
    return spearman(*similarities)
