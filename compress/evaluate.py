"""Embedding fidelity: how well a student keeps the teacher's similarity structure on held-out text or audio.

Students may have a smaller hidden size than their teacher, so raw vectors are never compared;
instead both models rank all pairs of texts by cosine similarity, and the Spearman correlation
of those two rankings is the score (1.0: the student orders every pair as the teacher does).
Texts are embedded the teacher's way (``compress.sentence.Pooling``: a sentence-transformers
teacher's pooling, normalisation and length; mean pooling for a plain transformers teacher).
A task run (``data.label``: a teacher with a classification head) is scored by accuracy retention
instead: the student's held-out accuracy over the teacher's.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from itertools import islice
from typing import Any

import torch
from datasets import Dataset
from transformers import PreTrainedModel

from compress.audio import features
from compress.data import LETTER
from compress.errors import DataError
from compress.measure import position_limit
from compress.sentence import DEFAULT_MAX_LENGTH, MEAN_POOLING, Pooling

#: what each fidelity figure measures, as records and model cards name it
SIMILARITY_MEASURE = "Spearman of pairwise cosine similarities, teacher vs student"
ACCURACY_MEASURE = "accuracy retention, student / teacher accuracy on held-out labelled examples"
#: fewest held-out texts or clips a fidelity figure is computed over
MIN_FIDELITY_ITEMS = 3
PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


def text_embeddings(
    model: PreTrainedModel, tokenizer: Any, texts: list[str], pooling: Pooling = MEAN_POOLING, batch_size: int = 32
) -> torch.Tensor:
    """The last hidden layer of each text pooled by ``pooling``, as an (N, width) float tensor.

    Runs ``model.base_model``, so models with heads (e.g. BertForMaskedLM) work like bare encoders
    without computing their heads. ``output_hidden_states`` is avoided on purpose: transformers 5
    leaves output-capturing hooks installed on a model after its first such call. Runs in eval mode
    without gradients and restores the model's mode afterwards.
    """
    if not texts:
        raise DataError("no texts to embed; pass a non-empty list of strings")
    max_length = min(pooling.max_length, position_limit(model))
    was_training = model.training
    model.eval()
    pooled = []
    try:
        with torch.no_grad():
            for start in range(0, len(texts), batch_size):
                batch = tokenizer(
                    texts[start : start + batch_size],
                    padding=True,
                    truncation=True,
                    max_length=max_length,
                    return_tensors="pt",
                ).to(model.device)
                hidden = model.base_model(**batch).last_hidden_state
                pooled.append(pooling(hidden, batch["attention_mask"]).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(pooled)


def mean_pooled_embeddings(
    model: PreTrainedModel,
    tokenizer: Any,
    texts: list[str],
    batch_size: int = 32,
    max_length: int = DEFAULT_MAX_LENGTH,
) -> torch.Tensor:
    """Mean of the last hidden layer over each text's non-padding tokens, as an (N, hidden) float tensor."""
    return text_embeddings(model, tokenizer, texts, Pooling(max_length=max_length), batch_size)


def pairwise_cosine(emb: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every pair i < j of rows of ``emb``, flattened row by row."""
    unit = torch.nn.functional.normalize(emb.double(), dim=1)
    rows, cols = torch.triu_indices(len(emb), len(emb), offset=1)
    return (unit @ unit.T)[rows, cols]


def _ranks(values: torch.Tensor) -> torch.Tensor:
    """1-based ranks of ``values``; tied values share the mean of the ranks they span."""
    order = torch.argsort(values)
    _, inverse, counts = torch.unique_consecutive(values[order], return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    mean_rank = ends - (counts.double() - 1) / 2
    ranks = torch.empty(len(values), dtype=torch.float64)
    ranks[order] = mean_rank[inverse]
    return ranks


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation of two 1-D tensors (Pearson correlation of tie-averaged ranks).

    Returns NaN when either input is constant, since no ranking exists then.
    """
    if a.dim() != 1 or a.shape != b.shape or len(a) < 2:
        raise DataError(
            f"spearman needs two 1-D tensors of the same length >= 2, got shapes {tuple(a.shape)} and "
            f"{tuple(b.shape)}; pass matching vectors"
        )
    ra, rb = _ranks(a.detach().cpu()), _ranks(b.detach().cpu())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / torch.sqrt((ra * ra).sum() * (rb * rb).sum()))


def embedding_fidelity(
    teacher: PreTrainedModel,
    student: PreTrainedModel,
    tokenizer: Any,
    texts: list[str],
    batch_size: int = 32,
    max_length: int | None = None,
    pooling: Pooling = MEAN_POOLING,
) -> float:
    """Spearman correlation of the teacher's and the student's pairwise cosine similarities over ``texts``.

    Compares similarity structure rather than vectors, so it works across hidden sizes. Both models
    embed with ``pooling`` (the teacher's); ``max_length`` overrides its token length.
    """
    if len(texts) < MIN_FIDELITY_ITEMS:
        raise DataError(f"embedding fidelity needs at least {MIN_FIDELITY_ITEMS} texts, got {len(texts)}; pass more held-out texts")
    if max_length is not None:
        pooling = replace(pooling, max_length=max_length)
    similarities = [pairwise_cosine(text_embeddings(model, tokenizer, texts, pooling, batch_size)) for model in (teacher, student)]
    return spearman(*similarities)


@torch.no_grad()
def mean_pooled_audio_embeddings(model: PreTrainedModel, extractor: Any, waves: list) -> torch.Tensor:
    """Mean over frames of the last hidden state of each clip (one clip per pass: no padding), (N, hidden)."""
    was_training = model.training
    model.eval()
    try:
        pooled = [
            model.base_model(features(extractor, [wave]).to(model.device)).last_hidden_state.mean(1).float().cpu()
            for wave in waves
        ]
    finally:
        model.train(was_training)
    return torch.cat(pooled)


def audio_fidelity(teacher: PreTrainedModel, student: PreTrainedModel, extractor: Any, waves: list) -> float:
    """Spearman correlation of teacher and student pairwise cosine similarities over held-out clips."""
    if len(waves) < MIN_FIDELITY_ITEMS:
        raise DataError(f"audio fidelity needs at least {MIN_FIDELITY_ITEMS} clips, got {len(waves)}; hold out more audio")
    similarities = [pairwise_cosine(mean_pooled_audio_embeddings(m, extractor, waves)) for m in (teacher, student)]
    return spearman(*similarities)


@torch.no_grad()
def classification_accuracy(model: PreTrainedModel, tokenizer: Any, texts: list[str], labels: list[int], max_length: int, batch_size: int = 64) -> float:
    """The fraction of ``texts`` that a sequence-classification model labels as ``labels`` (eval mode)."""
    if not texts or len(texts) != len(labels):
        raise DataError(f"accuracy needs as many labels as texts, got {len(labels)} labels for {len(texts)} texts")
    was_training = model.training
    model.eval()
    correct = 0
    try:
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start : start + batch_size], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            predicted = model(**batch.to(model.device)).logits.argmax(-1).cpu()
            correct += int((predicted == torch.tensor(labels[start : start + batch_size])).sum())
    finally:
        model.train(was_training)
    return correct / len(texts)


class AccuracyRetention:
    """The student's held-out accuracy over the teacher's (1.0: as accurate as the teacher); a run's task fidelity.

    The frozen teacher is scored once, at the first call, and kept. ``chance`` is the figure of a
    student that learned nothing: always the most common held-out label, over the teacher's accuracy.
    """

    def __init__(self, tokenizer: Any, texts: list[str], labels: list[int], max_length: int) -> None:
        self.tokenizer, self.texts, self.labels, self.max_length = tokenizer, texts, labels, max_length
        self.teacher_accuracy: float | None = None

    def accuracy(self, model: PreTrainedModel) -> float:
        return classification_accuracy(model, self.tokenizer, self.texts, self.labels, self.max_length)

    def __call__(self, teacher: PreTrainedModel, student: PreTrainedModel) -> float:
        if self.teacher_accuracy is None:
            self.teacher_accuracy = self.accuracy(teacher)
        if self.teacher_accuracy == 0:
            raise DataError("the teacher labels none of the held-out examples correctly; check data.label against the teacher's head")
        return self.accuracy(student) / self.teacher_accuracy

    def chance(self) -> float | None:
        """Most-common-label accuracy over the teacher's; None before the teacher is scored."""
        if not self.teacher_accuracy:
            return None
        return max(self.labels.count(label) for label in set(self.labels)) / len(self.labels) / self.teacher_accuracy


def held_out_sentences(texts: Dataset, limit: int = 256, min_chars: int = 40, max_chars: int = 500) -> list[str]:
    """Up to ``limit`` snippets from a ``text`` Dataset, in corpus order, for fidelity checks.

    Each snippet is one paragraph with its whitespace collapsed and lines without letters
    (rules, underlines) removed; snippets shorter than ``min_chars`` are skipped and longer ones
    cut at a word boundary near ``max_chars``, keeping each within one model input.
    """
    return list(islice(_snippets(texts, min_chars, max_chars), limit))


def _snippets(texts: Dataset, min_chars: int, max_chars: int) -> Iterator[str]:
    """Every paragraph of every document that is long enough, as a snippet, lazily."""
    for document in texts["text"]:
        for paragraph in PARAGRAPH_BREAK.split(document):
            snippet = _snippet(paragraph, max_chars)
            if len(snippet) >= min_chars:
                yield snippet


def _snippet(paragraph: str, max_chars: int) -> str:
    """One paragraph as a single line of text of at most ``max_chars`` characters."""
    lines = [line for line in paragraph.splitlines() if LETTER.search(line)]
    text = " ".join(" ".join(lines).split())
    return text if len(text) <= max_chars else text[:max_chars].rsplit(" ", 1)[0]
