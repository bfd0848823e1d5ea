"""Held-out text of other domains than the training corpus, and how close a student stays to its teacher on it.

Two text sets every machine that installed this project has, written by others for other purposes:

- ``package-descriptions``: the summaries and first paragraphs of the installed Python distributions'
  descriptions (software prose, not the Python documentation the built-in corpus holds);
- ``licenses``: paragraphs of the license files those distributions ship (legal English).

Scores (teacher vs student, both with the teacher's pooling): ``fidelity``, the Spearman correlation of
pairwise cosine similarities (the run's own figure), and ``nearest10``, the mean overlap of each text's
ten nearest neighbours. Shared by the benchmarks that quote quality off the training domain.
"""

from __future__ import annotations

import importlib.metadata
import random
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

import compress
from compress.data import text_datasets
from compress.evaluate import held_out_sentences, pairwise_cosine, spearman, text_embeddings
from compress.sentence import MEAN_POOLING, Pooling

#: texts per set: enough pairs for a stable Spearman (32k pairs), few enough to embed in seconds
SET_SIZE = 256
_SPACE = re.compile(r"\s+")
_MARKUP = re.compile(r"[#*`>|\[\]()_=-]{2,}|<[^>]+>|https?://\S+")
_LICENSE_FILE = re.compile(r"(LICEN[CS]E|COPYING|NOTICE)", re.IGNORECASE)
#: this project's own description would be in-domain for nobody: left out
_OWN = "encoder-compress"
IN_DOMAIN = "in-domain (python-docs held out)"


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


DOMAINS: dict[str, Callable[[], list[str]]] = {"package-descriptions": package_descriptions, "licenses": licenses}


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


def scores(teacher: Any, student: Any, tokenizer: Any, texts: list[str], pooling: Pooling = MEAN_POOLING) -> dict[str, float]:
    """Fidelity and nearest-10 overlap of ``student`` to ``teacher`` on ``texts``."""
    teacher_emb, student_emb = (text_embeddings(m, tokenizer, texts, pooling) for m in (teacher, student))
    fidelity = spearman(pairwise_cosine(teacher_emb), pairwise_cosine(student_emb))
    return {"fidelity": fidelity, "nearest10": nearest_overlap(teacher_emb, student_emb)}

