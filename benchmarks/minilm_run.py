"""Real run of a recipe: the MiniLM teacher compressed on the built-in corpus, on CPU.

Runs `compress.run(RECIPE)` (stage 1: the recipe's method with distillation; fold; stage 2:
distillation of the dense student) and reports held-out fidelity (Spearman correlation of pairwise
cosine similarities of mean-pooled embeddings, teacher vs student, on held-out documents) before
and after stage 2, next to the same-size student taken one-shot by weight magnitude without
training. Prints a table and writes JSON (``results/<recipe>_minilm.json``).

    python benchmarks/minilm_run.py [--recipe bert-l0] [--run-dir runs/x] [key=value recipe overrides ...]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import yaml

import compress
from compress.data import text_datasets
from compress.evaluate import embedding_fidelity, held_out_sentences
from compress.report import load_run
from compress.teachers import load_teacher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=None, help="where the run writes (default: a temp folder)")
    parser.add_argument("--recipe", default="bert-l0", help="bundled recipe name or YAML path")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default: results/<recipe>_minilm.json)")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args()

    overrides = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in args.overrides)}
    recipe = compress.load_recipe(args.recipe).override(overrides)
    out = args.out or Path(__file__).parent / "results" / f"{recipe.name}_minilm.json"
    run_dir = args.run_dir or Path(tempfile.mkdtemp()) / f"{recipe.name}-minilm"
    started = time.perf_counter()
    compress.run(recipe, out=run_dir, overwrite=True)
    minutes = (time.perf_counter() - started) / 60
    record, _ = load_run(run_dir)

    teacher, tokenizer = load_teacher()
    data, seed = recipe.data, recipe.train["seed"]
    _, _, held_texts = text_datasets(data["text"], tokenizer, recipe.train["seq_len"], data["held_out"], seed, data["column"])
    sentences = held_out_sentences(held_texts)
    job = compress.attach(teacher, recipe)
    job.method.one_shot()  # the same-size structure by weight magnitude, no training
    baseline = embedding_fidelity(teacher, job.fold(), tokenizer, sentences)

    metrics, method = record["metrics"], recipe.prune["method"]
    rows = [
        {"student": "top-k by magnitude, no training", "encoder_sparsity": job.structure().encoder_sparsity,
         "fidelity": baseline},
        {"student": f"{method} after stage 1 (prune + distill)", "encoder_sparsity": metrics["encoder_sparsity"],
         "fidelity": metrics["fidelity_after_prune"]},
        {"student": f"{method} after stage 2 (distil dense)", "encoder_sparsity": record["structure"]["encoder_sparsity"],
         "fidelity": metrics.get("fidelity_after_finetune")},
    ]
    print(f"MiniLM-L6 -> {recipe.name}, encoder sparsity {metrics['target_sparsity']:.2f}, built-in corpus, "
          f"{recipe.train['max_steps']} + {recipe.finetune['max_steps']} steps, {minutes:.1f} min for the whole run")
    print(f"held-out fidelity on {len(sentences)} snippets of documents no step trained on")
    print(f"{'student':38s} {'encoder sparsity':>16s} {'fidelity':>9s}")
    for row in rows:
        fidelity = "-" if row["fidelity"] is None else f"{row['fidelity']:.4f}"
        print(f"{row['student']:38s} {row['encoder_sparsity']:>16.4f} {fidelity:>9s}")
    result = {
        "benchmark": "minilm_run",
        "recipe": recipe.to_dict(),
        "run_minutes": minutes,
        "structure": record["structure"],
        "metrics": metrics,
        "rows": rows,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
