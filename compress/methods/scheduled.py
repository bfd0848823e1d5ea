"""Scheduled top-k pruning: each axis shrinks toward its target on a schedule, keeping its most important units.

Between pruning steps the weights keep training (with distillation), so each removal is absorbed
before the next one; the kept counts follow the recipe's schedule per axis kind and reach the exact
target at the schedule's end. Subclasses differ only in the importance score: torch-pruning's magnitude,
Taylor and random criteria over its dependency groups here, compactor norms in the WID method.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

from compress.adapters.generic import example_inputs
from compress.errors import RecipeError, TargetError
from compress.methods.base import PruningMethod
from pruners.schedules import resolve_axis_schedules
from pruners.tp_importance import AxisScorer, criterion

#: the Taylor method's running scores, attached to the model so checkpoints carry them
TAYLOR_ATTR = "compress_taylor"

if TYPE_CHECKING:
    from compress.job import CompressionJob


class ScheduledTopK(PruningMethod):
    """Fixed 0/1 gates updated whenever the schedule's kept counts change; removed units never return."""

    def __init__(self, job: CompressionJob) -> None:
        super().__init__(job)
        self.final = job.final_sizes()
        self.limits = job.adapter.kind_limits()
        kinds = sorted({axis.kind for axis in job.gated_axes()})
        try:
            self.schedules = resolve_axis_schedules(job.recipe.prune["schedule"], kinds)
        except ValueError as err:
            raise RecipeError(f"prune.schedule: {err}") from err

    def importance(self) -> dict[str, torch.Tensor]:
        """Score of every unit of every gated axis (higher is kept first)."""
        raise NotImplementedError

    def sizes_at(self, step: int) -> dict[str, int]:
        """Kept units per axis kind at ``step``: the teacher's size minus the scheduled part of the removal."""
        return {
            kind: self.limits[kind] - round((self.limits[kind] - size) * self.schedules[kind](step))
            for kind, size in self.final.items()
        }

    def current_sizes(self) -> dict[str, int]:
        """Kept units per axis kind under the gates now (sublayer kinds: how many layers keep theirs)."""
        sizes: dict[str, int] = {}
        for axis in self.job.gated_axes():
            kept = int(self.job.gates[axis.name].deterministic().count_nonzero())
            sizes[axis.kind] = sizes.get(axis.kind, 0) + kept if axis.size == 1 else max(sizes.get(axis.kind, 0), kept)
        return {kind: sizes[kind] for kind in self.final}

    @torch.no_grad()
    def prune(self, sizes: dict[str, int]) -> None:
        """Keep the top units by importance among those still kept, ``sizes`` per kind."""
        scores = self.importance()
        for name, score in scores.items():
            removed = self.job.gates[name].deterministic() == 0
            scores[name] = score.float().masked_fill(removed.to(score.device), float("-inf"))
        self.job.keep_top(sizes, scores)

    def loss_terms(self, step: int) -> dict[str, torch.Tensor]:
        """Nothing to add to the loss; logs the encoder sparsity of the structure in force."""
        return {"sparsity": torch.tensor(self.job.structure().encoder_sparsity)}

    def after_step(self, step: int) -> None:
        sizes = self.sizes_at(step)
        if sizes != self.current_sizes():
            self.prune(sizes)

    def finish(self) -> dict[str, float]:
        if self.current_sizes() != self.final:
            self.prune(self.final)
        return {}

    def one_shot(self) -> dict[str, float]:
        self.prune(self.final)
        return {}


class TorchPruningTopK(ScheduledTopK):
    """Scheduled top-k whose importance is a torch-pruning criterion over its dependency groups.

    The groups are traced once, on a twin of the gated model that shares its weights, and mapped
    onto the job's axes (``pruners.tp_importance.AxisScorer``); pruning goes through the job's gates,
    so the fold and export are those of every other method.
    """

    criterion: ClassVar[str]

    def __init__(self, job: CompressionJob) -> None:
        super().__init__(job)
        self.scorer = AxisScorer(job.model, job.axes, example_inputs(job.model))

    def scores(self) -> dict[str, torch.Tensor]:
        """The criterion's score of every unit of every gated axis, on the current weights (and gradients)."""
        scores = self.scorer.scores(criterion(self.criterion))
        return {axis.name: scores[axis.name] for axis in self.job.gated_axes()}

    def importance(self) -> dict[str, torch.Tensor]:
        return self.scores()


class MagnitudeMethod(TorchPruningTopK):
    """Importance = torch-pruning's group magnitude: squared L2 norm of every weight slice coupled to a unit."""

    name = "magnitude"
    criterion = "magnitude"


class RandomMethod(TorchPruningTopK):
    """Importance drawn at random (torch-pruning's random criterion): the floor any criterion must beat."""

    name = "random"
    criterion = "random"


class TaylorMethod(TorchPruningTopK):
    """Importance = first-order Taylor |w * dL/dw| (torch-pruning's group Taylor), averaged over steps.

    The trainer calls ``before_optimizer_step`` with each step's synced gradients; the scores are an
    exponential moving average over steps (``decay``), held in a buffer the checkpoints carry. In your
    own loop, call it after ``loss.backward()``: a few such calibration batches let ``one_shot`` work.
    """

    name = "taylor"
    criterion = "taylor"
    decay = 0.9

    def __init__(self, job: CompressionJob) -> None:
        super().__init__(job)
        self.average = TaylorAverage({axis.name: axis.size for axis in job.gated_axes()})

    def modules(self) -> dict[str, nn.Module]:
        return {TAYLOR_ATTR: self.average}

    def before_optimizer_step(self, step: int) -> None:
        self.average.update(self.scores(), self.decay)

    def importance(self) -> dict[str, torch.Tensor]:
        if not self.average.seen:
            raise TargetError(
                "taylor importance needs gradients: train with train.max_steps > 0 (scores accumulate during "
                "distillation), or in your own loop call job.method.before_optimizer_step(step) after "
                "loss.backward() on a few calibration batches before pruning"
            )
        return self.average.values()


class TaylorAverage(nn.Module):
    """Exponential moving average of per-unit Taylor scores by axis, as buffers (so checkpoints carry it)."""

    def __init__(self, axis_sizes: dict[str, int]) -> None:
        super().__init__()
        self.names = list(axis_sizes)
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))
        for i, size in enumerate(axis_sizes.values()):
            self.register_buffer(f"score_{i}", torch.zeros(size))

    @property
    def seen(self) -> bool:
        return bool(self.updates)

    @torch.no_grad()
    def update(self, scores: dict[str, torch.Tensor], decay: float) -> None:
        """Blend in one step's scores (the first step's scores are taken as they are)."""
        keep = decay if self.seen else 0.0
        for i, name in enumerate(self.names):
            average = getattr(self, f"score_{i}")
            average.mul_(keep).add_(scores[name].to(average.device), alpha=1.0 - keep)
        self.updates += 1

    def values(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, f"score_{i}").clone() for i, name in enumerate(self.names)}
