"""Iterative structured pruning inside your own plain PyTorch training loop, on your own schedule.

Attach a magnitude or Taylor recipe, distil from the frozen teacher, and every few steps shrink the
kept counts with the method's importance (torch-pruning's criterion over its dependency groups);
then fold the gated model into a smaller dense BERT and save it for `AutoModel.from_pretrained`.

    python examples/custom_loop.py --out runs/loop --method taylor --steps 200
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import compress
from compress.data import text_datasets
from compress.distill import DistillationLoss
from compress.teachers import load_teacher, small_random_bert


def kept_fraction(step: int, steps: int, bursts: int) -> float:
    """Our own schedule: the removal in ``bursts`` equal parts over the first half of training."""
    return min(step * 2 * bursts // steps, bursts) / bursts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--method", choices=["magnitude", "taylor", "random"], default="magnitude")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--bursts", type=int, default=4)
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--tiny", action="store_true", help="a small random BERT teacher (quick checks)")
    args = parser.parse_args()

    teacher, tokenizer = load_teacher()
    if args.tiny:
        teacher = small_random_bert(tokenizer.vocab_size, hidden=32, ffn=64)
    layers = teacher.config.num_hidden_layers
    recipe = compress.load_recipe(f"bert-{'taylor' if args.method == 'taylor' else 'magnitude'}").override(
        {"prune.method": args.method, "prune.target_sparsity": args.sparsity,
         "distill.layers": [[i, i] for i in range(0, layers + 1, 2)]}
    )
    job = compress.attach(teacher, recipe)
    method = job.method
    width = teacher.config.hidden_size
    distill = DistillationLoss(recipe.distill, width, width)
    blocks, _, _ = text_datasets("python-docs", tokenizer, seq_len=32)
    loader = torch.utils.data.DataLoader(blocks.with_format("torch"), batch_size=8, shuffle=True)
    trainable = [p for n, p in job.model.named_parameters() if job.adapter.is_backbone(n)]
    optimizer = torch.optim.AdamW([*trainable, *distill.parameters()], lr=2e-4)
    teacher_sizes, final = job.adapter.kind_limits(), job.final_sizes()

    job.model.train()
    step, batches = 0, iter(loader)
    while step < args.steps:
        batch = next(batches, None)
        if batch is None:
            batches = iter(loader)
            continue
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
        with torch.no_grad():
            target = teacher(**inputs, output_hidden_states=True)
        loss = distill(job.model(**inputs, output_hidden_states=True), target, attention_mask=inputs["attention_mask"])["loss"]
        optimizer.zero_grad()
        loss.backward()
        method.before_optimizer_step(step)  # Taylor: averages |w * grad| per unit; a no-op for magnitude
        optimizer.step()
        step += 1
        fraction = kept_fraction(step, args.steps, args.bursts)
        sizes = {kind: teacher_sizes[kind] - round((teacher_sizes[kind] - n) * fraction) for kind, n in final.items()}
        if sizes != method.current_sizes():
            method.prune(sizes)  # top units by importance among those still kept
            print(f"step {step}: loss {loss.item():.4f}, kept {sizes}, encoder sparsity {job.structure().encoder_sparsity:.3f}")

    job.model.eval()
    student, record = compress.fold(job)
    compress.save_student(student, args.out / "student", processor=tokenizer, overwrite=True, record=record)
    print(job.structure().summary())


if __name__ == "__main__":
    main()
