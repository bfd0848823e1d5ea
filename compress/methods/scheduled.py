"""Scheduled top-k pruning: each axis shrinks toward its target on a schedule, keeping its most important units.

Between pruning steps the weights keep training (with distillation), so each removal is absorbed
before the next one; the kept counts follow the recipe's schedule per axis kind and reach the exact
target at the schedule's end. Subclasses differ only in the importance score.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from compress.errors import RecipeError
from compress.methods.base import PruningMethod
from pruners.schedules import resolve_axis_schedules

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


class MagnitudeMethod(ScheduledTopK):
    """Importance = squared weight norm of every tensor slice a unit owns, over all writers and readers."""

    name = "magnitude"

    def importance(self) -> dict[str, torch.Tensor]:
        return self.job.magnitude_scores()
