"""One multi-size run against separate runs: MiniLM compressed to several sizes with ``bert-l0``, on CPU.

Three ways to get a student at each of ``--sizes`` (encoder sparsities):

- ``separate``: one ``compress.run`` per size, each with ``--steps`` stage-1 and ``--finetune`` stage-2 steps;
- ``multi, same total``: one run with ``prune.target_sparsity`` as the list, stage 1 of ``--steps`` steps
  shared by all students (a part each, the target rising through the sizes), ``--finetune`` steps each;
- ``multi, same per student``: the same with ``--steps`` stage-1 steps per student (``n x --steps`` in all).

For every student: fidelity to the teacher (Spearman of pairwise cosine similarities, nearest-10
overlap) on held-out documents of the training corpus and on the other-domain sets of
``benchmarks/domains.py``, and the CPU minutes each way took. Prints a table, writes JSON
(``results/multi_size.json``).

    python benchmarks/multi_size.py [--sizes 0.5 0.6 0.75] [--steps 200] [--finetune 100] [--skip-per-student]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import compress
from domains import Reference, student_row, teacher_reference

RESULTS = Path(__file__).parent / "results"


def _timed_run(overrides: dict, out: Path) -> tuple[float, float]:
    """Wall-clock and CPU minutes (this process, all its threads) of one ``compress.run``."""
    wall, cpu = time.perf_counter(), time.process_time()
    compress.run("bert-l0", out=out, overrides=overrides, progress=False)
    return (time.perf_counter() - wall) / 60, (time.process_time() - cpu) / 60


def _score_students(folders: dict[float, Path], reference: Reference) -> dict[float, dict]:
    return {size: student_row(reference, folder) for size, folder in folders.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[0.5, 0.6, 0.75])
    parser.add_argument("--steps", type=int, default=200, help="stage-1 steps of one separate run")
    parser.add_argument("--finetune", type=int, default=100, help="stage-2 steps of every student")
    parser.add_argument("--skip-per-student", action="store_true", help="leave out the multi-size run of n x --steps")
    parser.add_argument("--out", type=Path, default=RESULTS / "multi_size.json")
    args = parser.parse_args()

    reference = teacher_reference()
    sizes = sorted(args.sizes)
    work = Path(tempfile.mkdtemp(prefix="multi-size-"))
    base = {"finetune.max_steps": args.finetune}

    ways: dict[str, dict] = {}
    times = [
        _timed_run({**base, "train.max_steps": args.steps, "prune.target_sparsity": s}, work / f"separate-{s:.2f}")
        for s in sizes
    ]
    ways["separate"] = {
        "minutes": sum(t[0] for t in times), "cpu_minutes": sum(t[1] for t in times), "stage1_steps": args.steps * len(sizes),
        "folders": {s: work / f"separate-{s:.2f}" for s in sizes},
    }
    plans = {"multi, same total": args.steps}
    if not args.skip_per_student:
        plans["multi, same per student"] = args.steps * len(sizes)
    for way, steps in plans.items():
        out = work / way.replace(", ", "-").replace(" ", "-")
        minutes, cpu = _timed_run({**base, "train.max_steps": steps, "prune.target_sparsity": sizes}, out)
        ways[way] = {"minutes": minutes, "cpu_minutes": cpu, "stage1_steps": steps,
                     "folders": {s: out / f"sparsity-{s:.2f}" for s in sizes}}

    for way in ways.values():
        way["students"] = _score_students(way.pop("folders"), reference)
    text_sets = reference.sets

    print(f"MiniLM-L6, bert-l0 at {sizes}: separate runs of {args.steps} + {args.finetune} steps vs one multi-size run")
    print(f"{'way':26s} {'wall/CPU min':>12s} {'size':>5s} {'removed':>8s} " + " ".join(f"{n[:18]:>18s}" for n in text_sets))
    for name, way in ways.items():
        for i, (size, row) in enumerate(way["students"].items()):
            shown = f"{way['minutes']:5.1f} / {way['cpu_minutes']:4.1f}" if i == 0 else " " * 12
            cells = " ".join(f"{row['scores'][n]['fidelity']:8.3f} / {row['scores'][n]['nearest10']:5.2f}   " for n in text_sets)
            print(f"{name if i == 0 else '':26s} {shown} {size:5.2f} {row['encoder_sparsity']:8.3f} {cells}")
    print("cells: fidelity / nearest-10 overlap, teacher vs student")
    result = {
        "benchmark": "multi_size",
        "sizes": sizes,
        "steps": args.steps,
        "finetune": args.finetune,
        "text_sets": {name: len(texts) for name, texts in text_sets.items()},
        "ways": {name: {**way, "students": {f"{s:.2f}": row for s, row in way["students"].items()}} for name, way in ways.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
