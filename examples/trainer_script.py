"""L0 or scheduled (magnitude / Taylor) pruning with distillation inside your own Hugging Face Trainer script.

The same pieces `compress run` uses: attach gates to a copy of the teacher, train with
`CompressionTrainer` (distillation + the method: Lagrangian size control for L0, or top-k pruning
on a schedule for magnitude / Taylor), settle the exact target, fold, save.
Works as is under `torchrun --nproc_per_node 2 examples/trainer_script.py ...` (DDP).

    python examples/trainer_script.py --out runs/mine --steps 200
    python examples/trainer_script.py --out runs/taylor --method taylor --schedule schedules:thirds
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import TrainingArguments

import compress
from compress.data import text_datasets
from compress.distill import DistillationLoss
from compress.teachers import load_teacher, small_random_bert
from compress.trainer import CompressionTrainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--tiny", action="store_true", help="a small random BERT teacher (quick checks)")
    parser.add_argument("--method", choices=["l0", "magnitude", "taylor"], default="l0")
    parser.add_argument(
        "--schedule", default="schedules:thirds",
        help="scheduled methods: a module:function (step -> fraction of the removal done), see examples/schedules.py",
    )
    parser.add_argument("--dump-gates", action="store_true", help="l0: write each rank's gates to OUT/gates-rank<r>.safetensors")
    args = parser.parse_args()
    if args.dump_gates and args.method != "l0":
        parser.error("--dump-gates writes learned log_alpha, which only --method l0 has")

    teacher, tokenizer = load_teacher()
    if args.tiny:
        teacher = small_random_bert(tokenizer.vocab_size, hidden=32, ffn=64)
    layers = teacher.config.num_hidden_layers
    # A recipe can name a Python callable as its schedule; this script's folder is on sys.path.
    schedule = {"kind": "linear", "start_step": 0, "ramp_steps": args.steps // 2} if args.method == "l0" else args.schedule
    recipe = compress.load_recipe(f"bert-{args.method}").override(
        {
            "prune.target_sparsity": args.sparsity,
            "prune.schedule": schedule,
            "distill.layers": [[i, i] for i in range(0, layers + 1, 2)],
        }
    )
    job = compress.attach(teacher, recipe)
    train_blocks, _, _ = text_datasets("python-docs", tokenizer, seq_len=32)
    width = teacher.config.hidden_size
    trainer = CompressionTrainer(
        model=job.model,
        args=TrainingArguments(
            output_dir=str(args.out / "checkpoints"),
            max_steps=args.steps,
            per_device_train_batch_size=8,
            learning_rate=2e-4,
            logging_steps=max(1, args.steps // 10),
            save_steps=max(1, args.steps // 2),
            report_to="none",
            disable_tqdm=True,
            use_cpu=not torch.cuda.is_available(),  # lets torchrun start DDP (gloo) on CPU
            ddp_find_unused_parameters=False,
        ),
        train_dataset=train_blocks,
        teacher=teacher,
        distillation=DistillationLoss(recipe.distill, width, width),
        # the method (L0: Lagrangian size control; magnitude / Taylor: top-k on the schedule) runs inside,
        # its gates and multipliers with the learning rates of the recipe (train.gate_lr, train.lambda_lr)
        method=job.method,
        trainable=job.adapter.is_backbone,  # the pooler gets no gradient from hidden-state distillation
    )
    trainer.train()
    job.method.finish()  # L0: snap the learned structure to the exact target; scheduled: the final top-k
    if args.dump_gates:
        rank = int(os.environ.get("RANK", "0"))
        gates = {name: job.gates[name].log_alpha.detach().contiguous() for name in job.gates.names()}
        save_file(gates, args.out / f"gates-rank{rank}.safetensors")
    if trainer.is_world_process_zero():
        student, record = compress.fold(job)
        compress.save_student(student, args.out / "student", processor=tokenizer, overwrite=True, record=record)
        print(job.structure().summary())


if __name__ == "__main__":
    main()
