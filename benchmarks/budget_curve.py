"""Quality against training budget: each method at each size for several step budgets, scored off the training domain.

Every run is ``benchmarks/suite.py``'s (the bundled recipe at the size asked, ``--steps`` optimiser steps
split 2 : 1 between stage 1 and stage 2, schedules scaled; layer drop distils for all of them) on the
MiniLM teacher and the built-in corpus. Each student is scored by ``benchmarks/domains.py``: fidelity
in-domain and on every other-domain set, and the topic probe. Each point records the run's wall
minutes on this machine, so a budget reads as "what N minutes buy here".

Writes ``results/budget_curve.json`` after every run, keeping the points of earlier calls that this
call does not repeat (an interrupted call loses nothing, and several calls build one curve; a run
already finished in ``--runs-dir`` is only scored again), and ``results/budget_curve.png``: mean
other-domain fidelity (solid) and in-domain fidelity (dotted) against the step budget, each point
labelled with its wall minutes, one panel per size. ``--variants`` compares distillation objectives
on the same grid.

    python benchmarks/budget_curve.py --runs-dir runs/curve [--methods l0 wid magnitude layer-drop]
        [--sizes 0.5 0.75] [--steps 360 720 1440 2880] [--variants recipe pooled relation hidden blocks python-docs]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import compress
from compress.teachers import default_teacher_path, load_teacher
from domains import IN_DOMAIN, Reference, student_row, teacher_reference
from suite import METHODS, RESULTS, finished_run, suite_recipe

#: distillation objectives to compare, as recipe overrides on top of the bundled recipe
VARIANTS: dict[str, dict[str, Any]] = {
    "recipe": {},
    "hidden": {"distill.pooled_cos": 0.0, "distill.pooled_similarity": 0.0},
    "pooled": {"distill.pooled_cos": 1.0, "distill.pooled_similarity": 30.0},
    # MiniLMv2's Q-Q / K-K / V-V self-attention relations of the mapped layers, on top of the recipe's terms
    "relation": {"distill.attention_relation": 1.0},
    # the training text as full token blocks across paragraphs and documents (the default before paragraphs)
    "blocks": {"data.examples": "blocks"},
    # bert-l0's defaults before paragraphs, the corpus mix and the pooled terms
    "python-docs": {
        "data.text": "python-docs", "data.examples": "blocks", "distill.pooled_cos": 0.0, "distill.pooled_similarity": 0.0,
    },
}


def curve_row(reference: Reference, run_dir: Path, method: str, size: float, steps: int, variant: str) -> dict[str, Any]:
    """One point of the curve: the run's settings, its minutes and every score of its student."""
    row = student_row(reference, run_dir)
    others = [row["scores"][name]["fidelity"] for name in reference.other_domains()]
    return {
        "method": method, "target_sparsity": size, "steps": steps, "variant": variant, **row,
        "in_domain_fidelity": row["scores"][IN_DOMAIN]["fidelity"],
        "other_domain_fidelity": sum(others) / len(others),
        "worst_other_domain_fidelity": min(others),
    }


def _key(row: dict[str, Any]) -> tuple:
    return row["method"], row["target_sparsity"], row["steps"], row["variant"]


def earlier_rows(path: Path) -> list[dict[str, Any]]:
    """The points an earlier call wrote to ``path`` (none when there is no such file)."""
    if not path.is_file():
        return []
    return json.loads(path.read_text(encoding="utf-8"))["rows"]


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Fidelity against step budget, each point labelled with its wall minutes; a panel per size, a colour per method.

    Steps, not minutes, on the x axis: a run that shared the machine takes longer without learning
    more, so minutes would misplace it; the labels still say what each budget cost here.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({row["target_sparsity"] for row in rows})
    figure, axes = plt.subplots(1, len(sizes), figsize=(6.5 * len(sizes), 4.8), squeeze=False)
    colours = dict(zip(METHODS, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    markers = dict(zip(VARIANTS, "os^Dvx"))
    for axis, size in zip(axes[0], sizes):
        for method in METHODS:
            for variant in VARIANTS:
                points = sorted((r["steps"], r["other_domain_fidelity"], r["in_domain_fidelity"], r["minutes"]) for r in rows
                                if r["target_sparsity"] == size and r["method"] == method and r["variant"] == variant)
                if not points:
                    continue
                steps, other, inside, minutes = zip(*points)
                label = method if variant == "recipe" else f"{method} ({variant})"
                axis.plot(steps, other, marker=markers[variant], color=colours[method], label=label)
                axis.plot(steps, inside, marker=markers[variant], color=colours[method], linestyle=":", alpha=0.6)
                for x, y, m in zip(steps, other, minutes):
                    axis.annotate(f"{m:.1f} min", (x, y), textcoords="offset points", xytext=(4, -12), fontsize=7)
        axis.set_xscale("log", base=2)
        axis.set_xticks(sorted({r["steps"] for r in rows}), [str(n) for n in sorted({r["steps"] for r in rows})])
        axis.set_title(f"{size:.0%} of the encoder removed")
        axis.set_xlabel("optimiser steps, both stages (batch 16 x 64); labels: wall minutes of the run")
        axis.set_ylabel("fidelity to the teacher (Spearman)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle("MiniLM students: other-domain mean (solid) and in-domain (dotted) fidelity", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-dir", type=Path, required=True, help="where the runs go; finished runs are reused")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--sizes", type=float, nargs="+", default=[0.5, 0.75])
    parser.add_argument("--steps", type=int, nargs="+", default=[360, 720, 1440, 2880], help="step budgets, both stages")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=["recipe"])
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args()

    teacher = default_teacher_path()
    teacher_model, _ = load_teacher(teacher)
    layers = teacher_model.config.num_hidden_layers
    reference = teacher_reference(teacher)
    json_path, png_path = args.out_dir / "budget_curve.json", args.out_dir / "budget_curve.png"
    plan = [(m, s, n, v) for v in args.variants for s in args.sizes for n in args.steps for m in args.methods]
    started, rows = time.perf_counter(), earlier_rows(json_path)
    for number, (method, size, steps, variant) in enumerate(plan, 1):
        recipe = suite_recipe(method, size, steps, layers, 16, 64).override(VARIANTS[variant])
        run_dir = args.runs_dir / f"{method}_{round(size * 100)}_{steps}_{variant}"
        print(f"[{number}/{len(plan)}] {method} at {size:.0%}, {steps} steps, {variant} "
              f"({(time.perf_counter() - started) / 60:.1f} min so far)", flush=True)
        if not finished_run(run_dir, recipe, teacher, teacher_model):
            compress.run(recipe, teacher=teacher, out=run_dir, overwrite=True, progress=False)
        last = curve_row(reference, run_dir, method, size, steps, variant)
        rows = [row for row in rows if _key(row) != _key(last)] + [last]
        print(f"    {last['minutes']:.1f} min: in-domain {last['in_domain_fidelity']:.3f}, other domains "
              f"{last['other_domain_fidelity']:.3f} (worst {last['worst_other_domain_fidelity']:.3f}), probe "
              f"{last['scores']['probe']['ratio']['linear']:.3f} / {last['scores']['probe']['ratio']['knn']:.3f}", flush=True)
        result = {"benchmark": "budget_curve", "teacher": str(teacher), "text_sets": {n: len(t) for n, t in reference.sets.items()},
                  "teacher_probe_accuracy": reference.probe_accuracy, "rows": rows}
        args.out_dir.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    plot(rows, png_path)
    print(f"{'method':11s} {'size':>5s} {'steps':>6s} {'variant':8s} {'min':>5s} {'in-dom':>7s} {'other':>6s} {'worst':>6s} probe")
    for r in sorted(rows, key=_key):
        ratio = r["scores"]["probe"]["ratio"]
        print(f"{r['method']:11s} {r['target_sparsity']:5.2f} {r['steps']:6d} {r['variant']:8s} {r['minutes']:5.1f} "
              f"{r['in_domain_fidelity']:7.3f} {r['other_domain_fidelity']:6.3f} {r['worst_other_domain_fidelity']:6.3f} "
              f"{ratio['linear']:.3f} / {ratio['knn']:.3f}")
    print(f"wrote {json_path} and {png_path}")


if __name__ == "__main__":
    main()
