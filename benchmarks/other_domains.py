"""How close exported students stay to their teacher in-domain and on text of other domains.

Scores each student folder against its teacher (the MiniLM teacher unless ``--teacher``) on held-out
documents of the built-in corpus and on the sets of ``benchmarks/domains.py``: fidelity (Spearman of
pairwise cosine similarities, the teacher's pooling) and nearest-10 overlap, and runs the topic probe
on frozen embeddings (linear and 5-NN accuracy, student / teacher). Prints a table, writes JSON
(``results/other_domains.json`` unless ``--out``). Needs the ``bench`` extra.

    python benchmarks/other_domains.py STUDENT_DIR [STUDENT_DIR ...] [--out results/x.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from domains import student_row, teacher_reference

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("students", type=Path, nargs="+")
    parser.add_argument("--teacher", type=Path, default=None, help="teacher folder (default: the bundled MiniLM)")
    parser.add_argument("--out", type=Path, default=RESULTS / "other_domains.json")
    args = parser.parse_args()

    reference = teacher_reference(args.teacher)
    rows = [student_row(reference, folder) for folder in args.students]
    names = list(reference.sets)
    print(f"{'student':28s} {'removed':>8s} " + " ".join(f"{name[:16]:>16s}" for name in names) + "  probe")
    for row in rows:
        found = row["scores"]
        cells = " ".join(f"{found[n]['fidelity']:8.3f} / {found[n]['nearest10']:4.2f}" for n in names)
        ratio = found["probe"]["ratio"]
        print(f"{Path(row['student']).name[:28]:28s} {row['encoder_sparsity']:8.3f} {cells}"
              f"  {ratio['linear']:.3f} / {ratio['knn']:.3f}")
    print("cells: fidelity / nearest-10 overlap, teacher vs student; probe: linear / 5-NN accuracy, student / teacher")
    result = {
        "benchmark": "other_domains", "text_sets": {n: len(t) for n, t in reference.sets.items()},
        "teacher_probe_accuracy": reference.probe_accuracy, "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
