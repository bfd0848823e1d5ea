"""What a pruning method contributes to stage 1: its gates, parameter groups, loss terms, mask updates, fold.

A method receives the gated model and its settings (never a job or a recipe): the target, the
schedule and the recipe keys it registered (``compress.methods.registry``). The training driver
calls its hooks around every optimisation step, so every method shares one trainer, one checkpoint
format and one fold.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from compress.gated import GatedModel
from compress.methods.criteria import magnitude
from compress.structure import Structure
from compress.targets import Target
from pruners.gates import FixedGate, Gate
from reparam import Axis

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from compress.distill import DistillationLoss


@dataclass(frozen=True)
class MethodSettings:
    """What a method is told: its target and schedule, stage 1's steps, and the recipe keys it owns (dotted)."""

    target: Target
    schedule: Any = None
    train_steps: int = 0
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ParamGroup:
    """Parameters a method trains with its own learning rate (gates, multipliers, compactors)."""

    name: str
    params: list[nn.Parameter]
    lr: float
    weight_decay: float = 0.0


@dataclass
class FoldedStudent:
    """The dense student a method folds into, its structure, and what it kept of the teacher."""

    student: PreTrainedModel
    structure: Structure
    kept_indices: dict[str, list[int]] = field(default_factory=dict)
    kept_layers: list[int] | None = None


class PruningMethod:
    """Base class; every hook defaults to doing nothing, so a method overrides only what it uses."""

    name: str = "fixed"

    def __init__(self, gated: GatedModel, settings: MethodSettings) -> None:
        self.gated = gated
        self.settings = settings
        #: how much faster than written the recipe's schedule runs (a multi-size run's parts are shorter)
        self.schedule_scale = 1.0

    @classmethod
    def initial_gate(cls, axis: Axis) -> Gate:
        """The gate an axis starts with: all units kept, fixed (methods with learned gates override)."""
        return FixedGate(torch.ones(axis.size))

    def retarget(self, target: Target, steps: int) -> None:
        """Aim the next ``steps`` training steps at ``target``, from the structure reached so far.

        A multi-size run calls it before each student's part of stage 1 (the recipe's schedule is
        compressed into those steps) and again before that student's ``finish``. Methods whose target
        drives training override it; the base method only records the target.
        """
        self.settings = replace(self.settings, target=target)
        self.schedule_scale = self.settings.train_steps / steps if steps > 0 else 1.0

    def modules(self) -> dict[str, nn.Module]:
        """Modules to attach to the model (names start with ``compress_``) so checkpoints carry them."""
        return {}

    def param_groups(self) -> list[ParamGroup]:
        """Parameters the optimiser takes with the method's own learning rates (the rest train as weights)."""
        return []

    def loss_terms(self, step: int) -> dict[str, torch.Tensor]:
        """Extra terms at ``step``: ``penalty`` is added to the loss; every term is logged."""
        return {}

    def before_optimizer_step(self, step: int) -> None:
        """Called with the step's gradients in place, before the optimiser uses them."""

    def after_step(self, step: int) -> None:
        """Called once the optimiser has updated the weights for ``step`` (``step`` counts from 1)."""

    def student_state(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The model's tensors as the fold should see them (a method that re-parameterises weights composes here)."""
        return state

    def finish(self) -> dict[str, float]:
        """After training: settle the exact structure the fold keeps; returns metrics to record."""
        return {}

    def one_shot(self) -> dict[str, float]:
        """Without training (``train.max_steps = 0``): choose the structure from the teacher's weights."""
        self.gated.keep_top(self.settings.target.kind_sizes(self.gated), magnitude(self.gated))
        return {}

    @torch.no_grad()
    def fold(self, export_format: str = "auto") -> FoldedStudent:
        """The dense student after stage 1: the fold over the axes (a method that removes whole layers folds itself)."""
        gated = self.gated
        student, kept = gated.fold(self.student_state(gated.weights()), export_format)
        sizes = {a.name: a.size for a in gated.axes}
        partial = {name: idx.tolist() for name, idx in kept.items() if idx.numel() < sizes[name]}
        return FoldedStudent(student, gated.structure(), partial)

    def student_distillation(self, distillation: DistillationLoss) -> DistillationLoss:
        """Stage 1's distillation loss adapted to the folded student (projections sliced to its kept hidden units).

        On the generic path there is no hidden axis: the residual stream is never pruned, so nothing changes.
        """
        kept = self.gated.kept()
        return distillation.fold(kept["hidden"]) if "hidden" in kept else distillation
