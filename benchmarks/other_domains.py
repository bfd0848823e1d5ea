"""How close exported students stay to their teacher in-domain and on text of other domains.

Scores each student folder against its teacher (the MiniLM teacher unless ``--teacher``) on held-out
documents of the built-in corpus and on the sets of ``benchmarks/domains.py``: fidelity (Spearman of
pairwise cosine similarities, the teacher's pooling) and nearest-10 overlap. Prints a table, writes
JSON (``results/other_domains.json`` unless ``--out``).

    python benchmarks/other_domains.py STUDENT_DIR [STUDENT_DIR ...] [--out results/x.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import compress
from compress.sentence import MEAN_POOLING, teacher_pipeline
from compress.teachers import default_teacher_path, load_teacher
from domains import evaluation_sets, scores

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("students", type=Path, nargs="+")
    parser.add_argument("--teacher", type=Path, default=None, help="teacher folder (default: the bundled MiniLM)")
    parser.add_argument("--out", type=Path, default=RESULTS / "other_domains.json")
    args = parser.parse_args()

    teacher_dir = args.teacher or default_teacher_path()
    teacher, tokenizer = load_teacher(teacher_dir)
    pipeline = teacher_pipeline(teacher_dir)
    pooling = pipeline.pooling if pipeline else MEAN_POOLING
    sets = evaluation_sets(tokenizer)
    rows = []
    for folder in args.students:
        record = json.loads((folder / "compression.json").read_text(encoding="utf-8"))
        student = compress.load_student(folder)
        rows.append({
            "student": str(folder),
            "encoder_sparsity": record["structure"]["encoder_sparsity"],
            "macs_ratio": record["structure"].get("macs_ratio"),
            "minutes": record.get("metrics", {}).get("minutes"),
            "scores": {name: scores(teacher, student, tokenizer, texts, pooling) for name, texts in sets.items()},
        })
    print(f"{'student':36s} {'removed':>8s} " + " ".join(f"{name[:20]:>20s}" for name in sets))
    for row in rows:
        cells = " ".join(f"{row['scores'][n]['fidelity']:10.3f} / {row['scores'][n]['nearest10']:4.2f}  " for n in sets)
        print(f"{Path(row['student']).name[:36]:36s} {row['encoder_sparsity']:8.3f} {cells}")
    print("cells: fidelity / nearest-10 overlap, teacher vs student")
    result = {"benchmark": "other_domains", "text_sets": {n: len(t) for n, t in sets.items()}, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
