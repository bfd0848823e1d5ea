"""Task-specific compression measured: accuracy kept by l0, wid and magnitude students of a fine-tuned classifier.

Runs ``examples/task_compression.py`` (WordNet supersense tagging, 19 classes; MiniLM fine-tuned with a
classification head is the teacher) once per recipe and size, each in its own process, one after the
other, and tabulates test accuracy, teacher vs student. The task files, the teacher and the students
stay in ``--work``: a student already there is reused, so the grid can grow across calls. Prints a
table, writes JSON (``results/task_specific.json`` unless ``--out``). Needs the ``wordnet`` extra.

    python benchmarks/task_specific.py --work runs/task [--recipes bert-l0 bert-wid] [--sizes 0.5 0.75] [--steps 400]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "task_compression.py"
RECIPES = ("bert-l0", "bert-wid", "bert-magnitude")


def student_result(work: Path, recipe: str, sparsity: float, steps: int) -> dict:
    """The example's ``task_accuracy.json`` for one recipe and size, running it unless a matching one is there."""
    found = work / f"{recipe}-{round(sparsity * 100)}" / "task_accuracy.json"
    if found.is_file():
        result = json.loads(found.read_text(encoding="utf-8"))
        if result["steps"][0] == steps:
            return result
    command = [sys.executable, str(EXAMPLE), "--work", str(work), "--recipe", recipe, "--sparsity", str(sparsity),
               "--steps", str(steps), "--overwrite"]
    subprocess.run(command, check=True)
    return json.loads(found.read_text(encoding="utf-8"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES))
    parser.add_argument("--sizes", nargs="+", type=float, default=[0.5, 0.75])
    parser.add_argument("--steps", type=int, default=400, help="pruning steps per student (then half as many dense)")
    parser.add_argument("--out", type=Path, default=RESULTS / "task_specific.json")
    args = parser.parse_args()

    rows = []
    for sparsity in args.sizes:
        for recipe in args.recipes:
            rows.append(student_result(args.work, recipe, sparsity, args.steps))
            print(json.dumps(rows[-1]), flush=True)
    print(f"\n{'recipe':16s} {'removed':>8s} {'teacher acc':>12s} {'student acc':>12s} {'retention':>10s} {'minutes':>8s}")
    for row in rows:
        print(f"{row['recipe']:16s} {row['encoder_sparsity']:8.3f} {row['teacher_accuracy']:12.3f} "
              f"{row['student_accuracy']:12.3f} {row['retention']:10.3f} {row['minutes']:8.1f}")
    print(f"test set: {rows[0]['test_examples']} definitions, WordNet noun supersenses; retention = student / teacher accuracy")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"task": "wordnet noun supersenses", "rows": rows}, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
