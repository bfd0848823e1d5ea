"""Finite-training checks: stop a diverged run at the step it diverges, and never write non-finite weights.

The Trainer hides divergence: with ``logging_nan_inf_filter`` (on by default) a NaN loss is logged as
the mean of earlier ones (``loss 0`` when every step was NaN) while the gradients are NaN, and the
optimiser keeps applying them. ``FiniteGuard`` checks the gradients before every optimiser step (so
NaN gradients are never applied), each loss the trainer hands to ``check_loss``, and every log, and
raises ``NonFiniteError`` naming the stage, the step and the learning-rate setting to lower.
``check_finite_state`` is the last line before export.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from compress.errors import CompressError
from pruners.schedules import resolve_axis_schedules

#: how many non-finite tensors (or parameters) a message names before "..."
_NAMED = 3
#: under fp16 the loss scaler skips steps whose gradients overflow; this many in a row means divergence
FP16_OVERFLOW_STEPS = 10


class NonFiniteError(CompressError, FloatingPointError):
    """Training or weights that went NaN / inf; the message names where and the setting to change.

    ``stage``, ``step`` and ``learning_rate`` (the scheduled rate at that step) are set when raised
    by ``FiniteGuard``.
    """

    def __init__(
        self, message: str, stage: str | None = None, step: int | None = None, learning_rate: float | None = None
    ) -> None:
        super().__init__(message)
        self.stage = stage
        self.step = step
        self.learning_rate = learning_rate


def _names(names: list[str]) -> str:
    return ", ".join(names[:_NAMED]) + (", ..." if len(names) > _NAMED else "")


def check_gradients(model: nn.Module) -> float:
    """The total L2 norm of ``model``'s gradients; raise ``NonFiniteError`` naming parameters whose gradients are not finite.

    One host sync per call. After the Trainer's clipping a NaN total norm makes every gradient NaN,
    so call it before clipping (e.g. at the end of ``training_step``) to see where NaN started.
    """
    named = [(name, p.grad) for name, p in model.named_parameters() if p.grad is not None]
    if not named:
        return 0.0
    norms = torch.stack([torch.linalg.vector_norm(grad.detach(), dtype=torch.float32) for _, grad in named])
    total = torch.linalg.vector_norm(norms).item()
    if math.isfinite(total):
        return total
    bad = [name for (name, _), finite in zip(named, torch.isfinite(norms).tolist()) if not finite]
    raise NonFiniteError(
        f"gradient norm {total}: non-finite gradients in {len(bad)} of {len(named)} parameters ({_names(bad)})"
    )


def check_finite_state(state: Mapping[str, torch.Tensor] | nn.Module, fix: str = "lower the learning rate and train again") -> None:
    """Raise ``NonFiniteError`` naming the first non-finite tensors of a state dict or module; run it before writing weights.

    Integer tensors (ids, counters) are skipped. ``fix`` ends the message (e.g. the recipe key to lower).
    """
    tensors = state.state_dict() if isinstance(state, nn.Module) else state
    floating = {name: t for name, t in tensors.items() if torch.is_floating_point(t) or torch.is_complex(t)}
    bad = [name for name, t in floating.items() if not bool(torch.isfinite(t.detach()).all())]
    if bad:
        raise NonFiniteError(
            f"non-finite values (NaN / inf) in {len(bad)} of {len(floating)} tensors ({_names(bad)}); "
            f"no weights were written: {fix}"
        )


def fidelity_collapse(previous: float, current: float, stage: str = "finetune", lr_key: str = "finetune.lr") -> str | None:
    """A warning when fidelity is not finite or fell below half of ``previous`` during ``stage``; else None.

    Only a positive ``previous`` is compared (fidelity is a correlation in [-1, 1]).
    """
    if not (math.isfinite(previous) and math.isfinite(current)):
        return (
            f"held-out fidelity is not finite ({previous} before {stage}, {current} after): "
            f"the student diverged; lower {lr_key} and run again"
        )
    if previous > 0 and current < previous / 2:
        return (
            f"held-out fidelity collapsed during {stage}, from {previous:.3f} to {current:.3f} (less than half); "
            f"the student may have diverged: lower {lr_key} and run again"
        )
    return None


def fidelity_at_chance(fidelity: float, chance: float | None) -> str | None:
    """A warning when a task student's accuracy retention is under a tenth of the way from ``chance`` to the teacher's (1.0)."""
    if chance is None or not chance < 1 or fidelity >= chance + 0.1 * (1 - chance):
        return None
    return (
        f"the student is at chance: its accuracy retention is {fidelity:.3f}, and a model that always predicts the most common "
        f"held-out label gets {chance:.3f}; it did not learn the task. Look at the task loss in training_log.json; "
        "lower train.lr (and train.compactor_lr for wid) or try the bert-l0 recipe"
    )


def schedule_outlasts_stage(spec: Any, axes: list[str], steps: int) -> str | None:
    """A warning when the pruning schedule ``spec`` has not reached its target by the last of stage 1's ``steps``.

    The fold then removes the rest at once, untrained (a shorter ``train.max_steps`` than the recipe's
    keeps its schedule's step counts unless ``Recipe.with_steps`` scales them).
    """
    if steps <= 0:
        return None
    reached = min(float(schedule(steps)) for schedule in resolve_axis_schedules(spec, axes).values())
    if reached >= 1:
        return None
    return (
        f"prune.schedule has gone {reached:.0%} of the way to the target at the end of stage 1 (train.max_steps={steps}); "
        "the fold removes the rest at once, untrained: end the schedule within stage 1 (prune.schedule.ramp_steps or "
        "end_step), or in Python scale it with the steps (recipe.with_steps)"
    )


class FiniteGuard(TrainerCallback):
    """Stops a Trainer at the first non-finite loss or gradient by raising ``NonFiniteError``.

    ``stage`` names the run's stage in the message and ``lr_key`` the setting that holds its learning
    rate (``train.lr``, ``finetune.lr``); its value is read from ``args.learning_rate``. Checks, all
    before the optimiser applies the step: the gradients at ``on_pre_optimizer_step``, every loss
    passed to ``check_loss`` (call it from ``compute_loss`` / ``training_step`` with the training
    loss), and the ``loss`` / ``grad_norm`` / ``*_loss`` values of every log. Pass it in
    ``Trainer(callbacks=[...])`` so it runs before callbacks added later (pruning-method hooks that
    would fail on NaN gradients). Under fp16 the loss scaler skips overflowing steps itself; only
    ``FP16_OVERFLOW_STEPS`` of them in a row count as divergence. The error is also kept in ``failure``.
    """

    def __init__(self, stage: str, lr_key: str) -> None:
        self.stage = stage
        self.lr_key = lr_key
        self.failure: NonFiniteError | None = None
        self._args: TrainingArguments | None = None
        self._state: TrainerState | None = None
        self._scheduler: Any = None
        self._overflows = 0

    def _error(self, args: TrainingArguments | None, step: int, what: str, learning_rate: float | None) -> NonFiniteError:
        """The error to raise, kept in ``failure``; the message names stage, step and the setting to lower."""
        configured = args.learning_rate if args is not None else None
        at = f"; learning rate {learning_rate:g} at that step" if learning_rate is not None else ""
        now = f" (now {configured:g}), e.g. to {configured / 10:g}," if configured else ""
        self.failure = NonFiniteError(
            f"training went non-finite in stage {self.stage} at step {step} ({what}{at}): lower {self.lr_key}{now} and run again",
            stage=self.stage,
            step=step,
            learning_rate=learning_rate,
        )
        return self.failure

    def _scheduled_lr(self) -> float | None:
        return float(self._scheduler.get_last_lr()[0]) if self._scheduler is not None else None

    def on_step_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        self._args, self._state, self._scheduler = args, state, kwargs.get("lr_scheduler")

    def check_loss(self, loss: torch.Tensor) -> None:
        """Raise ``NonFiniteError`` if the training loss of the current step is not finite (one host sync)."""
        if not bool(torch.isfinite(loss.detach()).all()):
            step = self._state.global_step + 1 if self._state is not None else 0
            raise self._error(self._args, step, f"loss {loss.detach().float().sum().item()}", self._scheduled_lr())

    def on_pre_optimizer_step(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        try:
            check_gradients(kwargs["model"])
        except NonFiniteError as err:
            self._overflows += 1
            if args.fp16 and self._overflows < FP16_OVERFLOW_STEPS:
                return
            raise self._error(args, state.global_step + 1, str(err), self._scheduled_lr()) from err
        self._overflows = 0

    def on_log(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, logs: dict[str, float] | None = None, **kwargs: Any
    ) -> None:
        # under fp16 a logged inf grad_norm is an overflow the scaler skipped (counted at each step)
        keys = [k for k in (logs or {}) if k == "loss" or k.endswith("_loss") or (k == "grad_norm" and not args.fp16)]
        for key in keys:
            value = logs[key]
            if isinstance(value, (int, float)) and not math.isfinite(value):
                raise self._error(args, state.global_step, f"logged {key} {value}", logs.get("learning_rate"))
