"""Is the folded student really smaller and faster? Teacher vs 50%-encoder-parameter student on CPU.

Prints a table and writes JSON: parameters, forward FLOPs (torch's FlopCounterMode) and median
forward latency, each as a teacher/student ratio measured in this one run (models interleaved, so
machine noise hits both alike). The target is latency speedup >= 0.8 x FLOP ratio.

    python benchmarks/fold_speed.py [--batch 32] [--seq 128] [--rounds 10] [--out benchmarks/results/fold_speed.json]
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

import compress
from compress.measure import forward_flops, timed_rounds, token_batch
from compress.teachers import load_teacher


def encoder_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for name, p in model.named_parameters() if name.startswith("encoder."))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "fold_speed.json")
    args = parser.parse_args()

    teacher, tokenizer = load_teacher()
    recipe = compress.load_recipe("bert-l0")
    students = {}
    for fmt in ("stock", "heterogeneous"):
        job = compress.attach(teacher, recipe.override({"export.format": fmt}))
        structure = job.prune_to(args.sparsity)
        students[f"student ({fmt} class)"] = job.fold().eval()
    models = {"teacher": teacher.eval(), **students}

    batch = token_batch(tokenizer.vocab_size, args.batch, args.seq)
    latency = timed_rounds(models, batch, args.rounds)
    rows = []
    for name, model in models.items():
        flops = forward_flops(model, batch)
        rows.append(
            {
                "model": name,
                "parameters": sum(p.numel() for p in model.parameters()),
                "encoder_parameters": encoder_parameters(model),
                "forward_gflops": flops / 1e9,
                "latency_ms": latency[name] * 1e3,
            }
        )
    teacher_row = rows[0]
    for row in rows:
        row["flop_ratio"] = teacher_row["forward_gflops"] / row["forward_gflops"]
        row["speedup"] = teacher_row["latency_ms"] / row["latency_ms"]
        row["speedup_over_flop_ratio"] = row["speedup"] / row["flop_ratio"]

    header = f"{'model':28s} {'params':>11s} {'encoder':>11s} {'GFLOPs':>8s} {'ms':>8s} {'FLOP x':>7s} {'speed x':>8s} {'speed/FLOP':>10s}"
    print(f"MiniLM-L6 teacher vs {args.sparsity:.0%}-encoder-parameter student, batch {args.batch} x seq {args.seq}, "
          f"{torch.get_num_threads()} threads, median of {args.rounds} interleaved rounds")
    print(structure.summary())
    print(header)
    for r in rows:
        print(f"{r['model']:28s} {r['parameters']:>11,} {r['encoder_parameters']:>11,} {r['forward_gflops']:>8.1f} "
              f"{r['latency_ms']:>8.1f} {r['flop_ratio']:>7.2f} {r['speedup']:>8.2f} {r['speedup_over_flop_ratio']:>10.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": "fold_speed",
        "settings": {**{k: v for k, v in vars(args).items() if k != "out"}, "threads": torch.get_num_threads(),
                     "torch": torch.__version__, "machine": platform.machine(), "processor": platform.processor()},
        "structure": structure.to_dict(),
        "rows": rows,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
