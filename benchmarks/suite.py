"""Compression methods side by side: one teacher, one corpus, one training budget, two sizes.

Runs ``wid``, ``l0``, ``magnitude`` (each distilling in stage 1 and again after the fold) and
``layer-drop`` (+ distillation) at 50% and 75% of the encoder parameters removed, on the MiniLM
teacher and the built-in corpus, reports every run with ``compress.report`` and writes
``results/suite.md`` (table), ``results/suite.json`` (rows) and the runs' structure and training PNGs.

Equal budget: every run takes ``--steps`` optimiser steps in total (default 360, batch 16 x 64
tokens). Methods with a stage 1 split them 2 : 1 between stage 1 and stage 2 (the bundled recipes'
400 + 200), with their schedules (ramps, pruning intervals) scaled to the shorter stage 1; layer
drop chooses its layers without training, so it distils for all of them in stage 2. MiniLM has 6
layers, so layer drop keeps the number of layers whose sparsity is closest to the target (ties keep
more layers): 3 at 50% (exactly 50%), 2 at 75% (66.7%); the rows record the actual ratio.

Held-out fidelity is ``compress.run``'s: the Spearman correlation of the teacher's and the student's
pairwise cosine similarities on snippets of held-out documents, the same documents for every run,
never trained on. Latency is teacher / student on CPU (see the table's header for batch and length).

    python benchmarks/suite.py [--steps 360] [--sizes 0.5 0.75] [--methods wid l0 magnitude layer-drop]
                               [--runs-dir DIR] [--out-dir benchmarks/results]
    python benchmarks/suite.py --quick      # a tiny random teacher and 12 steps: the machinery in seconds

The full suite took 38 minutes on a 2-core CPU. With ``--runs-dir``, a run folder that
already holds a finished run of the same recipe and teacher is reported again instead of retrained.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel

import compress
from compress.errors import CompressError
from compress.adapters import modality_of
from compress.objective import with_layer_map, with_objective
from compress.recipe import Recipe
from compress.report import RunReport, build_report, load_run
from compress.teachers import default_teacher_path, load_teacher, small_random_bert

METHODS = {"wid": "bert-wid", "l0": "bert-l0", "magnitude": "bert-magnitude", "layer-drop": "bert-layer-drop"}
RESULTS = Path(__file__).parent / "results"


def split_budget(method: str, steps: int) -> tuple[int, int]:
    """Stage 1 and stage 2 steps of ``steps`` in all: 2 : 1, or all in stage 2 for layer drop."""
    if method == "layer-drop":
        return 0, steps
    stage1 = round(steps * 2 / 3)
    return stage1, steps - stage1


def layers_to_keep(total: int, sparsity: float) -> int:
    """Teacher layers to keep so the encoder sparsity (1 - kept / total) is closest to ``sparsity``; ties keep more."""
    return min(range(1, total + 1), key=lambda keep: (round(abs(1 - keep / total - sparsity), 9), -keep))


def suite_recipe(method: str, sparsity: float, steps: int, teacher_layers: int, batch: int, seq: int) -> Recipe:
    """The bundled recipe of ``method`` set to ``sparsity`` and the suite's budget (``steps``, ``batch`` x ``seq``)."""
    stage1, stage2 = split_budget(method, steps)
    recipe = compress.load_recipe(METHODS[method]).with_steps(stage1, stage2)
    overrides: dict[str, Any] = {
        "train.batch_size": batch,
        "train.seq_len": seq,
        "train.save_steps": steps + 1,  # no checkpoints: the suite does not resume half-trained runs
    }
    if method == "layer-drop":
        keep = layers_to_keep(teacher_layers, sparsity)
        overrides["prune.target"] = {"attention": keep, "mlp": keep}
    else:
        overrides["prune.target_sparsity"] = sparsity
    return recipe.override(overrides)


def tiny_teacher(folder: Path) -> Path:
    """A 4-layer random BERT with the MiniLM tokenizer, saved as a model folder (for ``--quick``)."""
    _, tokenizer = load_teacher()
    small_random_bert(tokenizer.vocab_size, layers=4).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def finished_run(run_dir: Path, recipe: Recipe, teacher: Path, teacher_model: PreTrainedModel) -> bool:
    """Whether ``run_dir`` already holds a finished run of exactly ``recipe`` on ``teacher``.

    The record holds the recipe as the run resolved it (``train.objective`` and ``distill.layers: auto``
    made concrete) and the teacher's absolute path (``teacher_path`` beside a hub id).
    """
    try:
        record, _ = load_run(run_dir)
    except CompressError:
        return False
    objective = with_objective(recipe, teacher_model, modality_of(teacher_model))
    resolved = with_layer_map(objective, teacher_model.config.num_hidden_layers).to_dict()
    recorded = record.get("teacher_path") or record.get("teacher")  # teacher_path when the teacher has a hub id
    return record.get("recipe") == resolved and recorded == str(Path(teacher).resolve())


def suite_row(method: str, sparsity: float, recipe: Recipe, report: RunReport) -> dict[str, Any]:
    """One JSON row: size, fidelity, speed and training cost of one run."""
    structure, metrics = report.record["structure"], report.record["metrics"]
    latency = report.latency
    return {
        "method": method,
        "recipe": recipe.name,
        "target_sparsity": sparsity,
        "encoder_sparsity": structure["encoder_sparsity"],
        "encoder_parameter_ratio": structure["encoder_parameters"] / structure["teacher_encoder_parameters"],
        "encoder_parameters": structure["encoder_parameters"],
        "teacher_encoder_parameters": structure["teacher_encoder_parameters"],
        "parameters": structure["parameters"],
        "kept_layers": report.record.get("kept_layers"),
        "sizes": structure["sizes"],
        "fidelity_after_stage1": metrics.get("fidelity_after_prune"),
        "fidelity": metrics.get("fidelity_after_finetune", metrics.get("fidelity_after_prune")),
        "held_out_sentences": metrics.get("held_out_sentences"),
        "latency_ratio": latency.ratio,
        "teacher_latency_ms": latency.teacher_ms,
        "student_latency_ms": latency.student_ms,
        "macs_ratio": report.macs_ratio,
        "stage1_steps": recipe.train["max_steps"],
        "stage2_steps": recipe.finetune["max_steps"],
        "training_minutes": report.training_minutes or 0.0,
        "run_minutes": metrics["minutes"],
        "plots": [path.name for path in report.plots],
    }


def _size_label(row: dict) -> str:
    """How a row's size reads in the table: the ratio, and for layer drop the layers it kept."""
    kept = row["kept_layers"]
    layers = f" ({len(kept)} layer{'s' if len(kept) > 1 else ''})" if kept else ""
    return f"{row['encoder_parameter_ratio']:.3f}{layers}"


def winners(rows: list[dict]) -> list[str]:
    """Per target size: the method with the best held-out fidelity and its margin over the runner-up."""
    lines = []
    for target in sorted({r["target_sparsity"] for r in rows}):
        ranked = sorted((r for r in rows if r["target_sparsity"] == target), key=lambda r: r["fidelity"], reverse=True)
        best = ranked[0]
        line = f"- {target:.0%} removed: **{best['method']}** has the best held-out fidelity, {best['fidelity']:.3f}"
        if len(ranked) > 1:
            second = ranked[1]
            line += (f", {best['fidelity'] - second['fidelity']:.3f} above {second['method']} "
                     f"({second['fidelity']:.3f}, encoder ratio {second['encoder_parameter_ratio']:.3f})")
        lines.append(line + f"; its encoder ratio is {best['encoder_parameter_ratio']:.3f}.")
    return lines


def markdown(settings: dict, rows: list[dict]) -> str:
    """The table and its setup, as committed in ``results/suite.md``."""
    s = settings
    splits = sorted({f"{r['stage1_steps']} + {r['stage2_steps']}" for r in rows}, reverse=True)
    setup = (
        f"Every run trains {s['steps']} optimiser steps of batch {s['batch']} x {s['seq']} tokens in all: stage 1 + "
        f"stage 2 = {' or '.join(splits)} (layer-drop has no stage 1). Fidelity: Spearman correlation of the "
        f"teacher's and the student's pairwise cosine similarities on {rows[0]['held_out_sentences']} snippets of "
        "held-out documents, which no run trained on; stage 1 is before the fold's distillation (for layer-drop: "
        f"the truncated teacher). Latency: teacher / student, CPU, base model, batch {s['latency_batch']} x "
        f"{s['latency_seq']} tokens, torch threads: {s['threads']}, median of {s['latency_rounds']} interleaved "
        "rounds; MACs per token at that length. Training minutes: the optimiser steps of both stages. "
        f"Machine: {s['machine']}, torch {s['torch']}; the runs took {sum(r['run_minutes'] for r in rows):.1f} "
        "minutes in all (training, fidelity and export)."
    )
    table = [
        "| method | target removed | encoder ratio | fidelity, stage 1 | fidelity | latency ratio | MACs ratio | training min |",
        "|---|---|---|---|---|---|---|---|",
        *(
            f"| {r['method']} | {r['target_sparsity']:.0%} | {_size_label(r)} | {r['fidelity_after_stage1']:.3f} | "
            f"{r['fidelity']:.3f} | {r['latency_ratio']:.2f} | {r['macs_ratio']:.2f} | {r['training_minutes']:.2f} |"
            for r in rows
        ),
    ]
    title = f"# Method comparison: {s['teacher_name']}, {s['data']} corpus"
    return "\n".join([title, "", setup, "", *table, "", *winners(rows), ""])


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny random teacher, 12 steps, batch 4 x 32: checks the suite")
    parser.add_argument("--steps", type=int, default=None, help="optimiser steps per run, both stages (default 360; 12 with --quick)")
    parser.add_argument("--sizes", type=float, nargs="+", default=[0.5, 0.75], help="target encoder sparsities")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--runs-dir", type=Path, default=None, help="where the runs go (default: a temporary folder)")
    parser.add_argument("--out-dir", type=Path, default=None, help="table, JSON and PNGs (default: benchmarks/results; "
                        "with --quick: RUNS_DIR/results)")
    parser.add_argument("--latency-batch", type=int, default=8)
    parser.add_argument("--latency-seq", type=int, default=128)
    parser.add_argument("--latency-rounds", type=int, default=None, help="default 10 (3 with --quick)")
    args = parser.parse_args()
    args.steps = args.steps or (12 if args.quick else 360)
    args.latency_rounds = args.latency_rounds or (3 if args.quick else 10)
    if args.steps < 3:
        parser.error("--steps must be at least 3 (stage 1 and stage 2 both need steps)")
    return args


def main() -> None:
    args = parse_args()
    runs_dir = args.runs_dir or Path(tempfile.mkdtemp(prefix="suite-"))
    out_dir = args.out_dir or (runs_dir / "results" if args.quick else RESULTS)
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.quick:
        teacher = tiny_teacher(runs_dir / "tiny-teacher")
        batch, seq, teacher_name = 4, 32, "tiny random BERT (4 layers, hidden 48) with the MiniLM tokenizer"
    else:
        teacher, batch, seq, teacher_name = default_teacher_path(), 16, 64, "all-MiniLM-L6-v2 teacher"
    teacher_model, _ = load_teacher(teacher)
    layers = teacher_model.config.num_hidden_layers
    plan = [(m, s) for s in args.sizes for m in args.methods]
    print(f"{len(plan)} runs of {args.steps} optimiser steps each (batch {batch} x {seq}) on {teacher}; runs in {runs_dir}")
    started, rows = time.perf_counter(), []
    for number, (method, sparsity) in enumerate(plan, 1):
        recipe = suite_recipe(method, sparsity, args.steps, layers, batch, seq)
        name = f"{method}_{round(sparsity * 100)}"
        run_dir = runs_dir / name
        print(f"[{number}/{len(plan)}] {method} at {sparsity:.0%} removed: {recipe.train['max_steps']} + "
              f"{recipe.finetune['max_steps']} steps ({(time.perf_counter() - started) / 60:.1f} min so far)", flush=True)
        if finished_run(run_dir, recipe, teacher, teacher_model):
            print(f"    reusing the finished run in {run_dir}")
        else:
            compress.run(recipe, teacher=teacher, out=run_dir, overwrite=True, progress=not args.quick)
        report = build_report(run_dir, teacher=teacher, plot_dir=out_dir, plot_prefix=f"suite_{name}",
                              batch=args.latency_batch, seq=args.latency_seq, rounds=args.latency_rounds)
        row = suite_row(method, sparsity, recipe, report)
        rows.append(row)
        print(f"    encoder ratio {row['encoder_parameter_ratio']:.3f}, fidelity {row['fidelity']:.3f}, latency ratio "
              f"{row['latency_ratio']:.2f}, {row['training_minutes']:.1f} min training", flush=True)
    settings = {
        "quick": args.quick, "teacher": str(teacher), "teacher_name": teacher_name, "data": "python-docs",
        "steps": args.steps, "batch": batch, "seq": seq, "latency_batch": args.latency_batch,
        "latency_seq": args.latency_seq, "latency_rounds": args.latency_rounds, "threads": torch.get_num_threads(),
        "torch": torch.__version__, "machine": f"{platform.machine()} {platform.processor()}".strip(),
        "total_minutes": (time.perf_counter() - started) / 60,
    }
    (out_dir / "suite.json").write_text(json.dumps({"benchmark": "suite", "settings": settings, "rows": rows}, indent=2) + "\n",
                                        encoding="utf-8")
    (out_dir / "suite.md").write_text(markdown(settings, rows), encoding="utf-8")
    print(markdown(settings, rows))
    print(f"wrote {out_dir / 'suite.md'}, {out_dir / 'suite.json'} and {len(plan)} runs' PNGs in "
          f"{settings['total_minutes']:.1f} min")


if __name__ == "__main__":
    main()
