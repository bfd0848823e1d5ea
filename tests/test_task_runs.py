"""Task-specific compression: labelled data (data.label) for a teacher with a classification head."""

from __future__ import annotations

import json
import random

import pytest
import torch
import transformers

import compress
from compress.data import load_labelled, tokenize_labelled
from compress.errors import DataError, RecipeError
from compress.evaluate import accuracy_retention, classification_accuracy
from compress.teachers import small_random_bert

LABELS = {"fruit": 0, "tool": 1}
WORDS = {"fruit": ["apple", "banana", "cherry", "grape", "lemon"], "tool": ["hammer", "saw", "drill", "wrench", "chisel"]}
SHORT = {
    "data.label": "label",
    "distill.task": 1.0,
    "distill.logits_kl": 1.0,
    "train.max_steps": 30,
    "train.batch_size": 8,
    "train.seq_len": 16,
    "train.logging_steps": 2,
    "finetune.max_steps": 30,
    "finetune.lr": 1e-3,
    "prune.schedule": {"kind": "linear", "start_step": 0, "ramp_steps": 15},
    "distill.layers": [[0, 0], [2, 2]],
}


def _rows(count: int, seed: int = 0) -> list[dict]:
    """Short texts whose class is the kind of thing they name: an easy task a tiny model learns in a few steps."""
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        label = "fruit" if i % 2 else "tool"
        rows.append({"text": f"the {rng.choice(WORDS[label])} is on the table", "label": label})
    return rows


@pytest.fixture(scope="module")
def labelled_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("task") / "task.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in _rows(120)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory, minilm):
    """A small random BertForSequenceClassification with named classes, saved with the MiniLM tokenizer."""
    model = small_random_bert(minilm[1].vocab_size, model_cls=transformers.BertForSequenceClassification)
    model.config.label2id, model.config.id2label = LABELS, {i: name for name, i in LABELS.items()}
    folder = tmp_path_factory.mktemp("classifier")
    model.save_pretrained(folder)
    minilm[1].save_pretrained(folder)
    return folder


def test_labels_map_through_the_teachers_label_names_or_indices(labelled_file, tmp_path):
    rows = load_labelled(labelled_file, "label", LABELS)
    assert rows.column_names == ["text", "labels"] and len(rows) == 120
    assert rows["labels"][:2] == [LABELS["tool"], LABELS["fruit"]]
    indexed = tmp_path / "indexed.csv"
    indexed.write_text("sentence,y\nan apple,1\na saw,0\n", encoding="utf-8")
    assert load_labelled(indexed, "y", LABELS, column="sentence")["labels"] == [1, 0]


@pytest.mark.parametrize(
    "content, label, message",
    [
        ('{"text": "a pear", "label": "vegetable"}\n', "label", "'vegetable', which the teacher's head does not have"),
        ('{"text": "a pear", "label": 2}\n', "label", "classes are 0..1"),
        ('{"text": "a pear", "label": "fruit"}\n', "class", "no label column 'class'"),
    ],
)
def test_bad_labels_are_refused_by_name(tmp_path, content, label, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        load_labelled(path, label, LABELS)


def test_a_builtin_or_joined_corpus_has_no_labels():
    with pytest.raises(DataError, match="has no labels"):
        load_labelled("python-docs", "label", LABELS)
    with pytest.raises(DataError, match="not a joined source"):
        load_labelled("python-docs+wordnet", "label", LABELS)


def test_tokenized_examples_are_unpadded_and_truncated(labelled_file, minilm):
    examples = tokenize_labelled(load_labelled(labelled_file, "label", LABELS), minilm[1], max_length=5)
    lengths = {len(ids) for ids in examples["input_ids"]}
    assert max(lengths) == 5 and "labels" in examples.column_names and "text" not in examples.column_names


def test_accuracy_counts_correct_labels(classifier_dir, minilm):
    model = transformers.AutoModelForSequenceClassification.from_pretrained(classifier_dir)
    texts = [row["text"] for row in _rows(40)]
    predicted = model(**minilm[1](texts, padding=True, return_tensors="pt")).logits.argmax(-1).tolist()
    assert classification_accuracy(model, minilm[1], texts, predicted, 16, batch_size=7) == 1.0
    flipped = [1 - p for p in predicted]
    assert classification_accuracy(model, minilm[1], texts, flipped, 16) == 0.0
    half = predicted[:20] + flipped[20:]
    assert accuracy_retention(model, model, minilm[1], texts, half, 16) == 1.0


def test_labels_need_a_classification_teacher_and_a_loss_that_uses_them(tiny_teacher_dir, classifier_dir, labelled_file, tmp_path):
    with pytest.raises(RecipeError, match="sequence-classification head, but the teacher is BertModel"):
        compress.run("bert-l0", teacher=tiny_teacher_dir, data=labelled_file, out=tmp_path / "a", overrides=SHORT, progress=False)
    unused = {**SHORT, "distill.task": 0.0, "distill.logits_kl": 0.0}
    with pytest.raises(RecipeError, match="nothing uses them"):
        compress.run("bert-l0", teacher=classifier_dir, data=labelled_file, out=tmp_path / "b", overrides=unused, progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.parametrize("recipe", ["bert-l0", "bert-magnitude"])
def test_task_run_trains_on_labels_and_exports_a_classifier(recipe, classifier_dir, labelled_file, tmp_path, minilm):
    out = compress.run(recipe, teacher=classifier_dir, data=labelled_file, out=tmp_path / "run", overrides=SHORT, progress=False)
    record = json.loads((out / "compression.json").read_text())
    metrics = record["metrics"]
    assert metrics["measured_as"].startswith("accuracy retention") and metrics["held_out_examples"] == 12
    assert 0.0 <= metrics["fidelity_after_finetune"] <= 2.0
    assert abs(record["structure"]["encoder_sparsity"] - 0.5) <= 0.02
    logs = json.loads((out / "training_log.json").read_text())
    for stage in ("prune", "finetune"):
        task = [entry["task"] for entry in logs[stage] if "task" in entry]
        kl = [entry["logits_kl"] for entry in logs[stage] if "logits_kl" in entry]
        assert len(task) >= 5 and len(kl) >= 5, f"{stage} logs the task and logits terms"
    finetune = [entry["loss"] for entry in logs["finetune"] if "loss" in entry]
    assert sum(finetune[-3:]) < sum(finetune[:3]), "the task terms fall while the dense student trains"
    student = transformers.AutoModelForSequenceClassification.from_pretrained(out, trust_remote_code=True)
    assert student.config.label2id == LABELS
    batch = minilm[1](["the apple is on the table"], return_tensors="pt")
    with torch.no_grad():
        assert student(**batch).logits.shape == (1, 2)
    readme = (out / "README.md").read_text()
    assert "accuracy retention" in readme
