"""Task-specific compression (CoFi's setting): fine-tune a classifier, compress it on its task, measure accuracy kept.

The task is WordNet supersense tagging: a dictionary definition ("a domesticated carnivorous mammal ...")
and its lexicographer file as the class (noun.animal, noun.food, noun.artifact, ...), from the
``wordnet`` extra's WordNet 3.0, so a fresh machine has it. The flow is what you would run on your own
labelled data:

1. write the labelled set as JSON lines, ``{"text": ..., "label": "noun.animal"}`` (train and test files);
2. fine-tune MiniLM with a sequence-classification head on it: the teacher;
3. ``compress.run`` with ``data.label=label``: the student trains on the task loss, the KL to the
   teacher's logits and the hidden states, on the labelled examples (``distill.task``, ``distill.logits_kl``);
4. load the exported student back with ``AutoModelForSequenceClassification`` and compare test accuracy.

    python examples/task_compression.py --work runs/task                                 # bert-l0, 50%
    python examples/task_compression.py --work runs/task --recipe bert-wid --sparsity 0.75

The task files and the teacher are written once into ``--work`` and reused by later calls.
"""

from __future__ import annotations

import argparse
import json
import random
from collections import defaultdict
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer, TrainingArguments

import compress
from compress.corpora import wordnet_entries
from compress.data import load_labelled, tokenize_labelled
from compress.evaluate import classification_accuracy
from compress.teachers import default_teacher_path

#: noun supersenses with at least this many synsets are the classes (19 of WordNet's 26)
MIN_SYNSETS = 1000
TRAIN_PER_CLASS, TEST_PER_CLASS = 250, 100
MAX_LENGTH = 64


def definition(gloss: str) -> str:
    """A gloss without its quoted usage examples: ``'a fruit; "she ate an apple"'`` -> ``'a fruit'``."""
    return gloss.split('; "', 1)[0].strip()


def write_task(work: Path, seed: int = 0) -> tuple[Path, Path]:
    """The train and test JSON-lines files of the supersense task (balanced, seeded), written once."""
    train, test = work / "train.jsonl", work / "test.jsonl"
    if train.is_file() and test.is_file():
        return train, test
    by_class: dict[str, list[str]] = defaultdict(list)
    for lexfile, _, gloss in wordnet_entries():
        if lexfile.startswith("noun.") and definition(gloss):
            by_class[lexfile].append(definition(gloss))
    rng = random.Random(seed)
    rows: dict[Path, list[dict]] = {train: [], test: []}
    for lexfile, texts in sorted(by_class.items()):
        if len(texts) < MIN_SYNSETS:
            continue
        picked = rng.sample(sorted(set(texts)), TRAIN_PER_CLASS + TEST_PER_CLASS)
        rows[train] += [{"text": text, "label": lexfile} for text in picked[:TRAIN_PER_CLASS]]
        rows[test] += [{"text": text, "label": lexfile} for text in picked[TRAIN_PER_CLASS:]]
    work.mkdir(parents=True, exist_ok=True)
    for path, items in rows.items():
        rng.shuffle(items)
        path.write_text("".join(json.dumps(item) + "\n" for item in items), encoding="utf-8")
    return train, test


def fine_tune_teacher(work: Path, train: Path, epochs: float, seed: int = 0) -> Path:
    """MiniLM with a classification head fine-tuned on ``train``: the teacher, written once to ``work/teacher``."""
    folder = work / "teacher"
    if (folder / "config.json").is_file():
        return folder
    classes = sorted({json.loads(line)["label"] for line in train.read_text(encoding="utf-8").splitlines()})
    label2id = {name: i for i, name in enumerate(classes)}
    base = default_teacher_path()
    tokenizer = AutoTokenizer.from_pretrained(base)
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=len(classes), label2id=label2id, id2label={i: name for name, i in label2id.items()}
    )
    examples = tokenize_labelled(load_labelled(train, "label", label2id), tokenizer, MAX_LENGTH)
    batch = 32
    args = TrainingArguments(
        output_dir=str(work / "teacher.checkpoints"), num_train_epochs=epochs, per_device_train_batch_size=batch,
        learning_rate=1e-4, warmup_steps=round(0.1 * epochs * len(examples) / batch), logging_steps=50,
        save_strategy="no", report_to="none", seed=seed,
        use_cpu=not torch.cuda.is_available(),
    )
    Trainer(model=model, args=args, train_dataset=examples, data_collator=DataCollatorWithPadding(tokenizer)).train()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_accuracy(folder: Path, test: Path) -> float:
    """Accuracy on ``test`` of the classifier saved in ``folder``, loaded back as any user would load it."""
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    rows = load_labelled(test, "label", model.config.label2id)
    return classification_accuracy(model, tokenizer, rows["text"], rows["labels"], MAX_LENGTH)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for the task files, the teacher and the students")
    parser.add_argument("--recipe", default="bert-l0", help="bert-l0, bert-wid, bert-magnitude, ...")
    parser.add_argument("--sparsity", type=float, default=0.5, help="fraction of encoder parameters removed")
    parser.add_argument("--steps", type=int, default=400, help="pruning steps (the dense student then trains half as many)")
    parser.add_argument("--batch", type=int, default=16, help="examples per step of both stages")
    parser.add_argument("--teacher-epochs", type=float, default=3.0)
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier student of this recipe and sparsity")
    args = parser.parse_args()

    train, test = write_task(args.work)
    teacher = fine_tune_teacher(args.work, train, args.teacher_epochs)
    out = args.work / f"{args.recipe}-{round(args.sparsity * 100)}"
    # the recipe at this budget: its pruning schedule scaled with the steps
    recipe = compress.load_recipe(args.recipe).with_steps(args.steps, args.steps // 2)
    compress.run(
        recipe,
        teacher=teacher,
        data=train,
        out=out,
        overwrite=args.overwrite,
        overrides={
            "data.label": "label",  # the class column: trains on labelled examples, scored by accuracy retention
            "distill.task": 1.0,  # cross-entropy on the labels
            "distill.logits_kl": 1.0,  # KL to the teacher's class distribution
            # a classifier serves its logits, not a sentence embedding: no pooled-embedding terms
            "distill.pooled_cos": 0.0,
            "distill.pooled_similarity": 0.0,
            "prune.target_sparsity": args.sparsity,
            "train.batch_size": args.batch,
        },
    )
    record = json.loads((out / "compression.json").read_text(encoding="utf-8"))
    teacher_accuracy, student_accuracy = test_accuracy(teacher, test), test_accuracy(out, test)
    result = {
        "recipe": args.recipe,
        "target_sparsity": args.sparsity,
        "steps": [args.steps, args.steps // 2],
        "encoder_sparsity": record["metrics"]["encoder_sparsity"],
        "minutes": record["metrics"]["minutes"],
        "teacher_accuracy": teacher_accuracy,
        "student_accuracy": student_accuracy,
        "retention": student_accuracy / teacher_accuracy,
        "test_examples": sum(1 for _ in test.open(encoding="utf-8")),
    }
    (out / "task_accuracy.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(
        f"{args.recipe} at {args.sparsity:.0%}: test accuracy teacher {teacher_accuracy:.3f}, "
        f"student {student_accuracy:.3f} (retention {result['retention']:.3f}), {result['minutes']:.1f} min"
    )


if __name__ == "__main__":
    main()
