"""What a pruning method contributes to stage 1: its gates, loss terms, mask updates and the final structure.

``attach`` builds the method named by the recipe (``prune.method``) into the job; the training driver
calls its hooks around every optimisation step, so the L0, scheduled top-k and WID methods share one
trainer, one checkpoint format and one fold.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

from pruners import FixedGate, Gate
from reparam import Axis

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from compress.distill import DistillationLoss
    from compress.job import CompressionJob


class PruningMethod:
    """Base class; every hook defaults to doing nothing, so a method overrides only what it uses."""

    name: ClassVar[str]

    def __init__(self, job: CompressionJob) -> None:
        self.job = job

    @classmethod
    def initial_gate(cls, axis: Axis) -> Gate:
        """The gate an axis starts with: all units kept, fixed (methods with learned gates override)."""
        return FixedGate(torch.ones(axis.size))

    def modules(self) -> dict[str, nn.Module]:
        """Modules to attach to the model (names start with ``compress_``) so checkpoints carry them."""
        return {}

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

    def fold(self) -> PreTrainedModel:
        """The dense student after stage 1: the job's fold over the axes (a method that removes whole layers folds itself)."""
        return self.job.fold_axes()

    def student_distillation(self, distillation: DistillationLoss) -> DistillationLoss:
        """Stage 1's distillation loss adapted to the folded student (projections sliced to its kept hidden units)."""
        return distillation.fold(self.job.kept()["hidden"])

    def one_shot(self) -> dict[str, float]:
        """Without training (``train.max_steps = 0``): choose the structure from the teacher's weights."""
        self.job.prune_to()
        return {}
