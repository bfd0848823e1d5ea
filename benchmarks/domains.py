"""Held-out text of other domains than the training corpus, and how close a student stays to its teacher on it.

Text sets written by others for other purposes, which every machine that installed this project (with
its ``bench`` extra) has:

- ``package-descriptions``: the summaries and first paragraphs of the installed Python distributions'
  descriptions (software prose, not the Python documentation the built-in corpus holds);
- ``licenses``: paragraphs of the license files those distributions ship (legal English);
- ``conversations``: question-and-answer pairs of the English ChatterBot corpus (the
  ``chatterbot-corpus`` package, BSD-3-Clause), chit-chat on topics from science to sports.

Scores (teacher vs student, both with the teacher's pooling): ``fidelity``, the Spearman correlation of
pairwise cosine similarities (the run's own figure), and ``nearest10``, the mean overlap of each text's
ten nearest neighbours. ``probe`` classifies the conversations by topic from frozen embeddings (a
logistic-regression probe and a 5-nearest-neighbour vote, both cross-validated) and reports the
student's accuracy against the teacher's. Shared by the benchmarks that quote quality off the training
domain.
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import json
import random
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.neighbors import KNeighborsClassifier

import compress
from compress.data import text_datasets
from compress.evaluate import held_out_sentences, pairwise_cosine, spearman, text_embeddings
from compress.sentence import MEAN_POOLING, Pooling, teacher_pipeline
from compress.teachers import default_teacher_path, load_teacher

#: texts per set: enough pairs for a stable Spearman (32k pairs), few enough to embed in seconds
SET_SIZE = 256
_SPACE = re.compile(r"\s+")
_MARKUP = re.compile(r"[#*`>|\[\]()_=-]{2,}|<[^>]+>|https?://\S+")
_LICENSE_FILE = re.compile(r"(LICEN[CS]E|COPYING|NOTICE)", re.IGNORECASE)
#: this project's own description would be in-domain for nobody: left out
_OWN = "encoder-compress"
IN_DOMAIN = "in-domain (python-docs held out)"
#: the probe's classes: ChatterBot topics with at least this many conversations, each capped at PER_TOPIC
MIN_PER_TOPIC, PER_TOPIC = 20, 60


def _paragraphs(text: str) -> Iterator[str]:
    for block in re.split(r"\n\s*\n", text):
        yield _SPACE.sub(" ", block).strip()


def _prose(paragraph: str, low: int = 60, high: int = 600) -> bool:
    """A paragraph of sentences: long enough, mostly letters, without markup or tables."""
    if not low <= len(paragraph) <= high or _MARKUP.search(paragraph):
        return False
    letters = sum(c.isalpha() or c == " " for c in paragraph)
    return letters / len(paragraph) > 0.85


def package_descriptions() -> list[str]:
    """Summary lines and description paragraphs of the installed distributions (deduplicated)."""
    found: list[str] = []
    for dist in importlib.metadata.distributions():
        if dist.metadata.get("Name", "").lower() == _OWN:
            continue
        summary = (dist.metadata.get("Summary") or "").strip()
        if len(summary) >= 30:
            found.append(summary)
        found.extend(p for p in _paragraphs(dist.metadata.get_payload() or "") if _prose(p))
    return list(dict.fromkeys(found))


def licenses() -> list[str]:
    """Paragraphs of the license files the installed distributions ship (deduplicated)."""
    found: list[str] = []
    for dist in importlib.metadata.distributions():
        for file in dist.files or []:
            if not _LICENSE_FILE.search(file.name):
                continue
            try:
                text = Path(dist.locate_file(file)).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            found.extend(p for p in _paragraphs(text) if _prose(p))
    return list(dict.fromkeys(found))


def conversation_topics() -> dict[str, list[str]]:
    """The English ChatterBot corpus as topic -> "question answer" texts (first answer only, deduplicated)."""
    folder = importlib.resources.files("chatterbot_corpus") / "data" / "english"
    topics: dict[str, list[str]] = {}
    for file in sorted(folder.iterdir(), key=lambda f: f.name):
        if not file.name.endswith(".yml"):
            continue
        pairs = yaml.safe_load(file.read_text(encoding="utf-8")).get("conversations") or []
        texts = (" ".join(str(turn) for turn in pair[:2]) for pair in pairs if len(pair) >= 2)
        topics[file.name.removesuffix(".yml")] = list(dict.fromkeys(_SPACE.sub(" ", t).strip() for t in texts))
    return topics


def conversations() -> list[str]:
    """Every text of ``conversation_topics``, all topics together."""
    return [text for texts in conversation_topics().values() for text in texts]


DOMAINS: dict[str, Callable[[], list[str]]] = {
    "package-descriptions": package_descriptions, "licenses": licenses, "conversations": conversations,
}


def domain_texts(name: str, size: int = SET_SIZE, seed: int = 0) -> list[str]:
    """A fixed sample of ``size`` texts of the named set (sorted first, so the sample is the same on a machine)."""
    texts = sorted(DOMAINS[name]())
    if len(texts) < 20:
        raise RuntimeError(f"only {len(texts)} texts for {name!r} on this machine; the benchmark needs at least 20")
    return random.Random(seed).sample(texts, min(size, len(texts)))


def evaluation_sets(tokenizer: Any) -> dict[str, list[str]]:
    """The held-out documents of the built-in corpus (split as a run splits it) and every other-domain set."""
    recipe = compress.load_recipe("bert-l0")
    data, train = recipe.data, recipe.train
    _, _, held = text_datasets(data["text"], tokenizer, train["seq_len"], data["held_out"], train["seed"], data["column"])
    return {IN_DOMAIN: held_out_sentences(held), **{name: domain_texts(name) for name in DOMAINS}}


def nearest_overlap(teacher_emb: torch.Tensor, student_emb: torch.Tensor, k: int = 10) -> float:
    """Mean fraction of each text's ``k`` nearest neighbours (cosine) that teacher and student share."""
    def neighbours(emb: torch.Tensor) -> torch.Tensor:
        unit = torch.nn.functional.normalize(emb.double(), dim=1)
        similarity = unit @ unit.T
        similarity.fill_diagonal_(-float("inf"))
        return similarity.topk(k, dim=1).indices

    ours, theirs = neighbours(teacher_emb), neighbours(student_emb)
    shared = [len(set(a.tolist()) & set(b.tolist())) / k for a, b in zip(ours, theirs)]
    return sum(shared) / len(shared)


def scores(teacher_emb: torch.Tensor, student_emb: torch.Tensor) -> dict[str, float]:
    """Fidelity and nearest-10 overlap of a student's embeddings of some texts to the teacher's."""
    fidelity = spearman(pairwise_cosine(teacher_emb), pairwise_cosine(student_emb))
    return {"fidelity": fidelity, "nearest10": nearest_overlap(teacher_emb, student_emb)}


def probe_set(seed: int = 0) -> tuple[list[str], list[str]]:
    """Texts and topic labels for the probe: topics with ``MIN_PER_TOPIC`` texts or more, ``PER_TOPIC`` at most each.

    A text the corpus files under two topics has no single label: it is left out.
    """
    rng = random.Random(seed)
    topics = conversation_topics()
    seen = Counter(text for items in topics.values() for text in items)
    texts: list[str] = []
    labels: list[str] = []
    for topic, every in topics.items():
        items = [text for text in every if seen[text] == 1]
        if len(items) >= MIN_PER_TOPIC:
            chosen = rng.sample(items, min(PER_TOPIC, len(items)))
            texts += chosen
            labels += [topic] * len(chosen)
    return texts, labels


def probe_accuracy(emb: torch.Tensor, labels: list[str], folds: int = 5, seed: int = 0) -> dict[str, float]:
    """Cross-validated accuracy of a logistic-regression probe and of a 5-NN cosine vote on unit embeddings."""
    x = torch.nn.functional.normalize(emb.double(), dim=1).numpy()
    y = np.array(labels)
    split = StratifiedKFold(folds, shuffle=True, random_state=seed)
    classifiers = {
        "linear": LogisticRegression(C=10.0, max_iter=5000),
        "knn": KNeighborsClassifier(n_neighbors=5, metric="cosine"),
    }
    return {name: float((cross_val_predict(c, x, y, cv=split) == y).mean()) for name, c in classifiers.items()}


@dataclass
class Reference:
    """The teacher's side of every comparison, computed once: its embeddings of each set and its probe accuracy."""

    tokenizer: Any
    pooling: Pooling
    sets: dict[str, list[str]]
    embeddings: dict[str, torch.Tensor]
    probe_texts: list[str]
    probe_labels: list[str]
    probe_accuracy: dict[str, float]

    @classmethod
    def of(cls, teacher: Any, tokenizer: Any, pooling: Pooling = MEAN_POOLING) -> Reference:
        """Embed every evaluation set and the probe set with ``teacher`` and score its probe."""
        sets = evaluation_sets(tokenizer)
        texts, labels = probe_set()
        embeddings = {name: text_embeddings(teacher, tokenizer, items, pooling) for name, items in sets.items()}
        accuracy = probe_accuracy(text_embeddings(teacher, tokenizer, texts, pooling), labels)
        return cls(tokenizer, pooling, sets, embeddings, texts, labels, accuracy)

    def compare(self, student: Any) -> dict[str, Any]:
        """``scores`` on every set, and the probe: the student's accuracies and their ratios to the teacher's."""
        result: dict[str, Any] = {
            name: scores(self.embeddings[name], text_embeddings(student, self.tokenizer, texts, self.pooling))
            for name, texts in self.sets.items()
        }
        accuracy = probe_accuracy(text_embeddings(student, self.tokenizer, self.probe_texts, self.pooling), self.probe_labels)
        result["probe"] = {
            "texts": len(self.probe_texts), "topics": len(set(self.probe_labels)), "teacher": self.probe_accuracy,
            "student": accuracy, "ratio": {name: accuracy[name] / self.probe_accuracy[name] for name in accuracy},
        }
        return result

    def other_domains(self) -> list[str]:
        """The names of the sets that are not the training corpus's held-out text."""
        return [name for name in self.sets if name != IN_DOMAIN]


def teacher_reference(teacher_dir: Path | None = None) -> Reference:
    """The ``Reference`` of a teacher folder (default: the bundled MiniLM), with the teacher's own pooling."""
    folder = teacher_dir or default_teacher_path()
    teacher, tokenizer = load_teacher(folder)
    pipeline = teacher_pipeline(folder)
    return Reference.of(teacher, tokenizer, pipeline.pooling if pipeline else MEAN_POOLING)


def student_row(reference: Reference, folder: Path) -> dict[str, Any]:
    """What a student folder removed and kept (from its ``compression.json``) and ``reference.compare`` of it."""
    record = json.loads((folder / "compression.json").read_text(encoding="utf-8"))
    return {
        "student": str(folder),
        "encoder_sparsity": record["structure"]["encoder_sparsity"],
        "macs_ratio": record["structure"].get("macs_ratio"),
        "minutes": record.get("metrics", {}).get("minutes"),
        "scores": reference.compare(compress.load_student(folder)),
    }
