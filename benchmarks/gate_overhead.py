"""Training-step overhead of the gates: the same distillation step with and without gates, on CPU.

Both students are copies of the MiniLM teacher trained with the recipe's hidden-state distillation
and AdamW; the gated one also samples HardConcrete gates, uses masked LayerNorm and adds the
Lagrangian size penalty. Steps alternate between the two in rounds so machine noise hits both.
The target is a ratio <= 1.15.

    python benchmarks/gate_overhead.py [--batch 16] [--seq 64] [--rounds 6] [--steps 4]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch

import compress
from compress.distill import DistillationLoss
from compress.objective import with_layer_map
from compress.teachers import load_teacher


def make_step(student, teacher, distillation, job=None):
    params = [*student.parameters(), *distillation.parameters()]  # a job's model holds its method's multipliers
    optimizer = torch.optim.AdamW(params, lr=1e-4)

    def step(batch: dict[str, torch.Tensor], index: int) -> None:
        with torch.no_grad():
            teacher_out = teacher(**batch, output_hidden_states=True)
        out = student(**batch, output_hidden_states=True)
        loss = distillation(out, teacher_out, attention_mask=batch["attention_mask"])["loss"]
        if job is not None:
            loss = loss + job.method.loss_terms(index)["penalty"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=4, help="steps per model per round")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "gate_overhead.json")
    args = parser.parse_args()

    torch.manual_seed(0)
    teacher, tokenizer = load_teacher()
    recipe = with_layer_map(compress.load_recipe("bert-l0"), teacher.config.num_hidden_layers)
    width = teacher.config.hidden_size
    job = compress.attach(teacher, recipe)
    plain = copy.deepcopy(teacher)
    steps = {
        "with gates": make_step(job.model.train(), teacher, DistillationLoss(recipe.distill, width, width), job),
        "without gates": make_step(plain.train(), teacher, DistillationLoss(recipe.distill, width, width)),
    }
    generator = torch.Generator().manual_seed(0)
    batch = {
        "input_ids": torch.randint(1000, tokenizer.vocab_size, (args.batch, args.seq), generator=generator),
        "attention_mask": torch.ones(args.batch, args.seq, dtype=torch.long),
    }
    times: dict[str, list[float]] = {name: [] for name in steps}
    for step in steps.values():
        step(batch, 0)  # warm-up
    for r in range(args.rounds):
        for name, step in steps.items():
            for i in range(args.steps):
                start = time.perf_counter()
                step(batch, r * args.steps + i)
                times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(values) for name, values in times.items()}
    ratio = median["with gates"] / median["without gates"]
    print(f"distillation step, MiniLM-L6, batch {args.batch} x seq {args.seq}, {torch.get_num_threads()} threads, "
          f"median of {args.rounds * args.steps} steps each (interleaved)")
    print(f"{'student':16s} {'ms/step':>9s}")
    for name, value in median.items():
        print(f"{name:16s} {value * 1e3:>9.1f}")
    print(f"overhead ratio: {ratio:.3f} (target <= 1.15)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {"benchmark": "gate_overhead", "settings": {**{k: v for k, v in vars(args).items() if k != "out"},
              "threads": torch.get_num_threads(), "torch": torch.__version__},
              "ms_per_step": {k: v * 1e3 for k, v in median.items()}, "ratio": ratio}
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
