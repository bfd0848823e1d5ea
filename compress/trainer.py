"""Hugging Face Trainer pieces for pruning with distillation; usable from a user's own Trainer script.

``CompressionTrainer`` distils a student (a gated copy of the teacher, or the folded dense student)
from the frozen teacher; with a pruning ``method`` (``job.method``) it also runs the method's loss
terms and its mask updates around each optimiser step, and trains the method's parameter groups
(gates, multipliers, compactors) with the method's own learning rates. ``StopOnSignal`` turns SIGINT / SIGTERM into a
checkpoint and a clean stop.
"""

from __future__ import annotations

import signal
import threading
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from transformers import Trainer, TrainerCallback

from compress.distill import DistillationLoss
from compress.gated import ATTACHED_PREFIX
from compress.guards import FiniteGuard
from compress.methods.base import PruningMethod
from compress.schema import probability

DISTILL_ATTR = "compress_distill"


class QKVCapture:
    """Records the query / key / value projections of chosen layers during one forward pass."""

    def __init__(self, model: nn.Module, layers: list[tuple[str, str, str]]) -> None:
        self.model = model
        self.layers = layers
        self.outputs: list[list[torch.Tensor | None]] = [[None, None, None] for _ in layers]
        self.handles: list = []

    def attach(self) -> None:
        for i, names in enumerate(self.layers):
            for j, name in enumerate(names):
                self.handles.append(self.model.get_submodule(name).register_forward_hook(self._store(i, j)))

    def detach(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def _store(self, i: int, j: int):
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            self.outputs[i][j] = output

        return hook

    def take(self) -> list[tuple[torch.Tensor, ...]]:
        taken = [tuple(qkv) for qkv in self.outputs]
        self.outputs = [[None, None, None] for _ in self.outputs]
        return taken


def dropout_sites(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """Every dropout probability of ``model``: each ``nn.Dropout``'s ``p`` and each float attribute with
    ``dropout`` in its name (Hugging Face attention modules and ours keep their probability that way)."""
    sites = []
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            sites.append((module, "p"))
            continue
        sites += [(module, name) for name, value in vars(module).items() if "dropout" in name and type(value) is float]
    return sites


class TrainingDropout(TrainerCallback):
    """Trains the model with dropout probability ``p`` everywhere, the model's own restored when training ends.

    Only the modules change, never the config, so checkpoints and the exported student keep the
    teacher's dropout for whoever trains them next. A student distilled to match a teacher that runs
    without dropout learns more per step without it (README: Benchmarks, ``train.dropout``).
    """

    def __init__(self, p: float) -> None:
        problem = probability(p)
        if problem:
            raise ValueError(f"dropout {problem}, got {p}")
        self.p = p
        self._saved: list[tuple[nn.Module, str, float]] = []

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._saved = [(module, name, getattr(module, name)) for module, name in dropout_sites(model)]
        for module, name, _ in self._saved:
            setattr(module, name, self.p)

    def on_train_end(self, args, state, control, **kwargs):
        for module, name, value in self._saved:
            setattr(module, name, value)
        self._saved = []


class MethodHooks(TrainerCallback):
    """Calls a pruning method's hooks around each optimiser step (gradients present, then weights updated)."""

    def __init__(self, method: PruningMethod) -> None:
        self.method = method

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.method.before_optimizer_step(state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        self.method.after_step(state.global_step)


class CompressionTrainer(Trainer):
    """Distil ``model`` from ``teacher``; with ``method`` (``job.method``, ``model`` is ``job.model``), prune it too.

    ``guard`` (a ``compress.guards.FiniteGuard``) stops training at the first non-finite loss or
    gradient. ``dropout`` (a probability) replaces the model's dropout while it trains (``TrainingDropout``);
    None keeps the model's own. ``distillation`` is attached to the model as a submodule, as the job attached its method's modules
    (multipliers, compactors), so checkpoints and resume carry them and their optimiser state like any
    weight. They are used outside the model's forward, so under DDP pass
    ``ddp_find_unused_parameters=False`` and ``trainable`` to freeze what the loss does not reach.
    """

    def __init__(
        self,
        *args: Any,
        teacher: nn.Module,
        distillation: DistillationLoss,
        method: PruningMethod | None = None,
        relation_layers: tuple[list[tuple[str, str, str]], list[tuple[str, str, str]]] | None = None,
        trainable: Callable[[str], bool] | None = None,
        guard: FiniteGuard | None = None,
        dropout: float | None = None,
        **kwargs: Any,
    ) -> None:
        model = kwargs.get("model") or args[0]
        if trainable is not None:
            # Weights the loss never reaches (a pooler or head under hidden-state distillation) are
            # frozen: DDP needs every trainable parameter to get a gradient each step.
            for name, param in model.named_parameters():
                if not name.startswith(ATTACHED_PREFIX) and not trainable(name):
                    param.requires_grad_(False)
        for param in model.parameters():
            # An emptied tensor (the Q/K/V of a layer that kept no head) has nothing to learn and gets no
            # gradient, which DDP refuses for a trainable parameter.
            if param.numel() == 0:
                param.requires_grad_(False)
        model.add_module(DISTILL_ATTR, distillation)
        if guard is not None:
            # First in line: a non-finite step stops before a method's hooks or the optimiser use it.
            kwargs["callbacks"] = [guard, *(kwargs.get("callbacks") or [])]
        self.guard = guard
        super().__init__(*args, **kwargs)
        self.teacher = teacher.to(self.args.device).eval()
        self.distillation = distillation
        self.method = method
        if method is not None:
            self.add_callback(MethodHooks(method))
        if dropout is not None:
            self.add_callback(TrainingDropout(dropout))
        self._logged: dict[str, list[float]] = defaultdict(list)
        self._captures = None
        if relation_layers is not None:
            self._captures = (QKVCapture(model, relation_layers[0]), QKVCapture(self.teacher, relation_layers[1]))

    def train(self, *args: Any, **kwargs: Any) -> Any:
        """``Trainer.train`` with the Q/K/V capture hooks in place only while it runs."""
        captures = self._captures or ()
        for capture in captures:
            capture.attach()
        try:
            return super().train(*args, **kwargs)
        finally:
            for capture in captures:
                capture.detach()

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        """AdamW (or ``args.optim``): the method's parameter groups, then the weights with and without decay."""
        if self.optimizer is not None:
            return self.optimizer
        opt_model = self.model if model is None else model
        decay = set(self.get_decay_parameter_names(opt_model))
        groups = []
        claimed: set[int] = set()
        for group in self.method.param_groups() if self.method is not None else []:
            params = [p for p in group.params if p.requires_grad]
            claimed.update(id(p) for p in group.params)
            groups.append({"params": params, "weight_decay": group.weight_decay, "lr": group.lr})
        weights = {"decay": [], "no_decay": []}
        for name, param in opt_model.named_parameters():
            if param.requires_grad and id(param) not in claimed:
                weights["decay" if name in decay else "no_decay"].append(param)
        groups = [
            {"params": weights["decay"], "weight_decay": self.args.weight_decay},
            {"params": weights["no_decay"], "weight_decay": 0.0},
            *groups,
        ]
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        self.optimizer = optimizer_cls([g for g in groups if g["params"]], **optimizer_kwargs)
        return self.optimizer

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        teacher_out = None
        if self.distillation.needs_teacher:  # a teacher-free objective (MLM alone) skips its forward
            with torch.no_grad():
                teacher_out = self.teacher(**inputs, output_hidden_states=True)
        student_out = model(**inputs, output_hidden_states=True)
        qkv = {}
        if self._captures is not None:
            qkv = {"student_qkv": self._captures[0].take(), "teacher_qkv": self._captures[1].take()}
        parts = self.distillation(student_out, teacher_out, attention_mask=inputs.get("attention_mask"), **qkv)
        loss = parts["loss"]
        if self.method is not None and model.training:
            terms = self.method.loss_terms(self.state.global_step)
            if "penalty" in terms:
                loss = loss + terms["penalty"]
            parts.update(distill_loss=parts.pop("loss"), **terms)
        if self.guard is not None and model.training:
            self.guard.check_loss(loss)
        if model.training:
            for key, value in parts.items():
                if key != "loss":
                    self._logged[key].append(float(value.detach()))
        return (loss, student_out) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the averaged loss parts (and sparsity, multipliers) since the last log to training logs."""
        if "loss" in logs and self._logged:
            logs.update({k: sum(v) / len(v) for k, v in self._logged.items()})
            self._logged.clear()
        super().log(logs, start_time)


class StopOnSignal(TrainerCallback):
    """On SIGINT / SIGTERM: save a checkpoint at the end of the current step and stop training.

    A second signal stops at once. ``received`` tells the caller the run was interrupted.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def uninstall(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None:
            self.uninstall()
            raise KeyboardInterrupt
        self.received = signum

    def on_step_end(self, args, state, control, **kwargs):
        if self.received is not None:
            control.should_save = True
            control.should_training_stop = True
        return control
