"""``benchmarks/domains.py`` and ``benchmarks/budget_curve.py``: the other-domain sets, the topic probe, the curve's merge and plot."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def domains():
    sys.path.insert(0, str(BENCHMARKS))  # benchmarks/ is not a package; its scripts import each other by name
    try:
        import budget_curve
        import domains

        yield domains, budget_curve
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_probe_set_is_fixed_balanced_and_from_topics_with_enough_texts(domains):
    domains, _ = domains
    texts, labels = domains.probe_set()
    assert (texts, labels) == domains.probe_set(), "the same sample on every call"
    counts = {label: labels.count(label) for label in set(labels)}
    topics = domains.conversation_topics()
    assert set(counts) <= {t for t, items in topics.items() if len(items) >= domains.MIN_PER_TOPIC}
    assert all(domains.MIN_PER_TOPIC <= n <= domains.PER_TOPIC for n in counts.values())
    assert counts["trivia"] == domains.PER_TOPIC and all(t in topics[label] for t, label in zip(texts, labels))
    assert len(set(texts)) == len(texts) and len(counts) >= 10, "every probe text has one label"


def test_probe_accuracy_reads_the_labels_an_embedding_holds(domains):
    domains, _ = domains
    generator = torch.Generator().manual_seed(0)
    labels = [f"topic{i % 5}" for i in range(200)]
    separable = torch.eye(5)[[i % 5 for i in range(200)]] * 4 + 0.3 * torch.randn(200, 5, generator=generator)
    assert domains.probe_accuracy(separable, labels) == {"linear": 1.0, "knn": 1.0}
    noise = domains.probe_accuracy(torch.randn(200, 16, generator=generator), labels)
    assert noise["linear"] < 0.4 and noise["knn"] < 0.4, "no better than chance (0.2) by much on noise"


def test_scores_of_identical_embeddings_are_perfect_and_of_shuffled_ones_low(domains):
    domains, _ = domains
    emb = torch.randn(60, 8, generator=torch.Generator().manual_seed(1))
    assert domains.scores(emb, emb) == {"fidelity": pytest.approx(1.0), "nearest10": 1.0}
    shuffled = domains.scores(emb, emb[torch.randperm(60, generator=torch.Generator().manual_seed(2))])
    assert abs(shuffled["fidelity"]) < 0.2 and shuffled["nearest10"] < 0.4


def test_every_other_domain_set_has_texts_on_this_machine(domains):
    domains, _ = domains
    for name in domains.DOMAINS:
        texts = domains.domain_texts(name)
        assert len(texts) >= 20 and all(isinstance(t, str) and t.strip() for t in texts), name


def _row(method: str, size: float, steps: int, minutes: float, other: float) -> dict:
    return {"method": method, "target_sparsity": size, "steps": steps, "variant": "recipe", "minutes": minutes,
            "other_domain_fidelity": other, "in_domain_fidelity": other + 0.1}


def test_the_curve_keeps_earlier_points_and_draws_a_panel_per_size(domains, tmp_path):
    _, curve = domains
    assert curve.earlier_rows(tmp_path / "missing.json") == []
    rows = [_row("l0", 0.5, 360, 5.0, 0.7), _row("l0", 0.5, 720, 9.0, 0.75), _row("magnitude", 0.75, 360, 4.0, 0.5)]
    (tmp_path / "budget_curve.json").write_text(json.dumps({"rows": rows}), encoding="utf-8")
    assert curve.earlier_rows(tmp_path / "budget_curve.json") == rows
    assert len({curve._key(r) for r in rows}) == 3
    curve.plot(rows, tmp_path / "curve.png")
    assert (tmp_path / "curve.png").read_bytes()[:8] == PNG_SIGNATURE
