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
from compress.evaluate import AccuracyRetention, classification_accuracy
from compress.guards import fidelity_at_chance
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


@pytest.fixture(scope="module")
def wide_classifier_dir(tmp_path_factory, minilm):
    """A 2-layer classifier at MiniLM's widths (384 hidden, 1536 FFN, 6 heads), fine-tuned on the task for 30 steps.

    WID's compactors are as wide as MiniLM's here, which is what made the first Adam steps of a
    1e-3 compactor learning rate scramble a classifier (a tiny model's 48-wide ones do not).
    """
    tokenizer = minilm[1]
    model = small_random_bert(tokenizer.vocab_size, hidden=384, ffn=1536, heads=6, model_cls=transformers.BertForSequenceClassification)
    model.config.label2id, model.config.id2label = LABELS, {i: name for name, i in LABELS.items()}
    rows, optimizer = _rows(200, seed=1), torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    for step in range(30):
        batch = [rows[(step * 16 + i) % len(rows)] for i in range(16)]
        inputs = tokenizer([row["text"] for row in batch], padding=True, return_tensors="pt")
        model(**inputs, labels=torch.tensor([LABELS[row["label"]] for row in batch])).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    folder = tmp_path_factory.mktemp("wide-classifier")
    model.eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
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
        ('{"text": 3, "label": "fruit"}\n', "label", "column 'text' .* not strings"),
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
    retention = AccuracyRetention(minilm[1], texts, half, 16)
    assert retention.chance() is None and retention(model, model) == 1.0 and retention.teacher_accuracy == 0.5
    common = max(half.count(0), half.count(1)) / len(half)
    assert retention.chance() == pytest.approx(common / 0.5), "always the most common label, over the teacher's accuracy"


def test_a_student_at_chance_gets_a_warning_that_names_the_chance_level():
    chance = (100 / 1900) / 0.804  # 19 balanced classes, a teacher right on 80.4%
    warning = fidelity_at_chance(0.065, chance)
    assert warning and "at chance" in warning and f"{chance:.3f}" in warning and "train.compactor_lr" in warning
    assert fidelity_at_chance(0.95, chance) is None, "a student that kept the task"
    assert fidelity_at_chance(chance + 0.11 * (1 - chance), chance) is None, "past a tenth of the way to the teacher"
    assert fidelity_at_chance(0.5, 1.0) is None and fidelity_at_chance(0.5, None) is None, "no teacher above chance to lose"


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



def test_wid_keeps_a_classifier_through_its_first_steps_and_a_student_at_chance_is_flagged(wide_classifier_dir, labelled_file, tmp_path):
    """Four WID steps before any pruning: at bert-wid's compactor lr the student is still the teacher's equal.

    At the earlier default, 1e-3, Adam's first steps move every compactor entry by about the learning
    rate, a coherent step of spectral norm up to 1536 x 1e-3 on an identity: the student predicts one
    class, and is exported with the at-chance warning.
    """
    first_steps = {**SHORT, "train.max_steps": 4, "finetune.max_steps": 0,
                   "prune.schedule": {"kind": "cubic", "start_step": 100, "end_step": 200, "interval": 10}}
    kept = compress.run("bert-wid", teacher=wide_classifier_dir, data=labelled_file, out=tmp_path / "kept", overrides=first_steps, progress=False)
    metrics = json.loads((kept / "compression.json").read_text())["metrics"]
    assert metrics["fidelity_after_prune"] >= 0.95 and not any("at chance" in w for w in metrics.get("warnings", []))
    scrambled = compress.run("bert-wid", teacher=wide_classifier_dir, data=labelled_file, out=tmp_path / "scrambled",
                             overrides={**first_steps, "train.compactor_lr": 1e-3}, progress=False)
    metrics = json.loads((scrambled / "compression.json").read_text())["metrics"]
    assert metrics["fidelity_after_prune"] < 0.7
    assert any("at chance" in warning for warning in metrics["warnings"])
    assert "at chance" in (scrambled / "README.md").read_text()
