"""Speed of one stage-1 training step per pruning method: the real CompressionTrainer step, on CPU.

Each method's run is built as ``compress.run`` builds it (``compress.pipeline.setup`` and
``build_trainer``, MiniLM teacher, the recipe's distillation, data and optimiser); a callback times
each optimiser step from ``on_step_begin`` to ``on_step_end``: forward and backward with the method's
loss terms, gradient clipping, the method's hooks around the optimiser step, the step itself. Every
round each method trains a few steps in turn (``trainer.train``), so machine noise hits them alike;
the first round is warm-up and not counted. Each ``train()`` counts its steps from 0: with fewer
steps than the schedule's ``interval`` (10 in the recipes), no pruning step is among those timed.

Prints steps/s and tokens/s (median step) and each method's step time over L0's: the median over
rounds of the ratio within a round, so a load that comes and goes between rounds cancels (the
target for WID is <= 1.3); writes JSON. ``--compile`` adds each method trained with
``trainer.torch_compile: true`` (rows ``<method> compiled``) to the same rounds, ``--dropout P ...`` each
method trained with ``train.dropout: P`` (rows ``<method> dropout P``); the plain rows use the recipes' own.

    python benchmarks/step_speed.py [--methods l0 wid magnitude] [--batch 16] [--seq 64] [--rounds 6]
        [--steps 2] [--warmup 4] [--compile] [--dropout 0.0 0.1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback

from compress.pipeline import PRUNE, build_trainer, setup
from compress.teachers import load_teacher
from compress.trainer import CompressionTrainer


class StepTimer(TrainerCallback):
    """Seconds of every optimiser step by round, once ``rounds`` has one; the Trainer saves no checkpoint."""

    def __init__(self) -> None:
        self.rounds: list[list[float]] = []
        self._start = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        # Last in the callback list: the method's own step-end hook (MethodHooks) is inside the time.
        if self.rounds:
            self.rounds[-1].append(time.perf_counter() - self._start)
        control.should_save = False
        return control


def method_trainer(
    method: str, variant: dict[str, Any], teacher: Any, tokenizer: Any, args: argparse.Namespace, out: Path
) -> tuple[CompressionTrainer, StepTimer]:
    """The stage-1 trainer of ``bert-<method>`` (``trainer.args.max_steps`` sets the steps of each ``train()``), with its timer.

    ``variant``: ``compiled`` (``trainer.torch_compile: true``) and / or ``dropout`` (``train.dropout``).
    """
    overrides = {"train.batch_size": args.batch, "train.seq_len": args.seq, "train.save_steps": 10**9, "train.logging_steps": 10**9}
    if "dropout" in variant:
        overrides["train.dropout"] = variant["dropout"]
    run = setup(f"bert-{method}", teacher=teacher, processor=tokenizer, out=out, overrides=overrides, progress=False,
                training_args={"torch_compile": True} if variant.get("compiled") else None)
    trainer = build_trainer(run, run.job.model, PRUNE, run.distillation, method=run.job.method)
    trainer.remove_callback(PrinterCallback)  # no log lines between the table's
    timer = StepTimer()
    trainer.add_callback(timer)
    return trainer, timer


def variant_name(method: str, variant: dict[str, Any]) -> str:
    """The table row of a method's variant: ``wid``, ``wid compiled``, ``wid dropout 0.0``."""
    parts = [method, *(["compiled"] if variant.get("compiled") else []), *([f"dropout {variant['dropout']}"] if "dropout" in variant else [])]
    return " ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["l0", "wid", "magnitude"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=6, help="timed rounds (after one warm-up round)")
    parser.add_argument("--steps", type=int, default=2, help="steps per method per round")
    parser.add_argument("--warmup", type=int, default=4, help="steps per method in the warm-up round")
    parser.add_argument("--compile", action="store_true", help="also time each method with trainer.torch_compile: true")
    parser.add_argument("--dropout", type=float, nargs="*", default=[],
                        help="also time each method with train.dropout set to each of these (rows '<method> dropout P')")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "step_speed.json")
    args = parser.parse_args()
    if "l0" not in args.methods:
        parser.error("the ratios are to l0: include it in --methods")

    variants = [(m, {}) for m in args.methods] + [(m, {"compiled": True}) for m in args.methods if args.compile]
    variants += [(m, {"dropout": p}) for p in args.dropout for m in args.methods]
    teacher, tokenizer = load_teacher()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {
            variant_name(m, variant): method_trainer(m, variant, teacher, tokenizer, args, Path(tmp) / f"{m}-{i}")
            for i, (m, variant) in enumerate(variants)
        }
        started = time.perf_counter()
        for trainer, _ in trainers.values():  # warm-up round, not counted
            trainer.args.max_steps = args.warmup
            trainer.train()
        warmup_s = time.perf_counter() - started
        for trainer, _ in trainers.values():
            trainer.args.max_steps = args.steps
        for _ in range(args.rounds):
            for trainer, timer in trainers.values():
                timer.rounds.append([])
                trainer.train()
    timers = {m: timer for m, (_, timer) in trainers.items()}
    tokens = args.batch * args.seq
    rows = {}
    for m, timer in timers.items():
        seconds = statistics.median(t for times in timer.rounds for t in times)
        ratios = [statistics.median(own) / statistics.median(l0) for own, l0 in zip(timer.rounds, timers["l0"].rounds)]
        rows[m] = {"ms_per_step": seconds * 1e3, "steps_per_s": 1 / seconds, "tokens_per_s": tokens / seconds,
                   "ratio_to_l0": statistics.median(ratios), "seconds_by_round": timer.rounds}
    print(f"stage-1 training step, MiniLM-L6, batch {args.batch} x seq {args.seq}, {torch.get_num_threads()} threads, "
          f"median of {args.rounds} x {args.steps} steps each (interleaved; warm-up {warmup_s:.0f} s; load average {load:.1f} at start)")
    print(f"{'method':22s} {'ms/step':>9s} {'steps/s':>8s} {'tokens/s':>9s} {'x L0':>6s}")
    for m, row in rows.items():
        print(f"{m:22s} {row['ms_per_step']:>9.1f} {row['steps_per_s']:>8.3f} {row['tokens_per_s']:>9.0f} {row['ratio_to_l0']:>6.2f}")
    if "wid" in rows:
        print(f"WID / L0: {rows['wid']['ratio_to_l0']:.3f} (target <= 1.3)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in vars(args).items() if k != "out"}
    result = {"benchmark": "step_speed", "settings": {**settings, "threads": torch.get_num_threads(), "torch": torch.__version__,
              "load_average_at_start": load},
              "warmup_s": warmup_s, "methods": rows}
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
