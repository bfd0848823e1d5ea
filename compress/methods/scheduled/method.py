"""Scheduled top-k pruning: each axis shrinks toward its target on a schedule, keeping its most important units.

Between pruning steps the weights keep training (with distillation), so each removal is absorbed
before the next one; the kept counts follow the recipe's schedule per axis kind and reach the exact
target at the schedule's end. Which units are most important is the injected criterion's call
(``compress.methods.criteria``): magnitude, Taylor, random, or a user's function.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from compress.errors import RecipeError
from compress.gated import GatedModel
from compress.methods.base import MethodSettings, PruningMethod
from compress.methods.criteria import Criterion, build_criterion
from compress.targets import Target
from pruners.schedules import resolve_axis_schedules


class ScheduledTopK(PruningMethod):
    """Fixed 0/1 gates updated whenever the schedule's kept counts change; removed units never return.

    ``criterion`` is a built-in name, ``module:function`` or a callable ``f(gated) -> scores``; the
    recipe's ``prune.importance`` overrides the method's default.
    """

    def __init__(self, gated: GatedModel, settings: MethodSettings, criterion: str | Callable = "magnitude") -> None:
        super().__init__(gated, settings)
        self.name = criterion if isinstance(criterion, str) else "scheduled"
        self.final = settings.target.kind_sizes(gated)
        self.limits = gated.adapter.kind_limits()
        #: sizes per kind the schedule starts from: the teacher's, or the last student's in a multi-size run
        self.start = {kind: self.limits[kind] for kind in self.final}
        kinds = sorted({axis.kind for axis in gated.gated_axes()})
        try:
            self.schedules = resolve_axis_schedules(settings.schedule, kinds)
        except ValueError as err:
            raise RecipeError(f"prune.schedule: {err}") from err
        self.criterion: Criterion = build_criterion(settings.options.get("prune.importance") or criterion, gated)

    def modules(self) -> dict[str, nn.Module]:
        return self.criterion.modules()

    def importance(self) -> dict[str, torch.Tensor]:
        """Score of every unit of every gated axis (higher is kept first)."""
        return self.criterion(self.gated)

    def before_optimizer_step(self, step: int) -> None:
        self.criterion.observe(self.gated)

    def retarget(self, target: Target, steps: int) -> None:
        """Shrink from the sizes kept now to ``target``'s, on the recipe's schedules compressed into ``steps``."""
        super().retarget(target, steps)
        self.start = self.current_sizes()
        self.final = target.kind_sizes(self.gated)

    def sizes_at(self, step: int) -> dict[str, int]:
        """Kept units per axis kind at ``step``: the start size minus the scheduled part of the removal."""
        at = int(step * self.schedule_scale)
        return {
            kind: self.start[kind] - round((self.start[kind] - size) * self.schedules[kind](at))
            for kind, size in self.final.items()
        }

    def current_sizes(self) -> dict[str, int]:
        """Kept units per axis kind under the gates now (sublayer kinds: how many layers keep theirs)."""
        sizes: dict[str, int] = {}
        for axis in self.gated.gated_axes():
            kept = int(self.gated.gates[axis.name].deterministic().count_nonzero())
            sizes[axis.kind] = sizes.get(axis.kind, 0) + kept if axis.size == 1 else max(sizes.get(axis.kind, 0), kept)
        return {kind: sizes[kind] for kind in self.final}

    @torch.no_grad()
    def prune(self, sizes: dict[str, int]) -> None:
        """Keep the top units by importance among those still kept, ``sizes`` per kind."""
        scores = self.importance()
        for name, score in scores.items():
            removed = self.gated.gates[name].deterministic() == 0
            scores[name] = score.float().masked_fill(removed.to(score.device), float("-inf"))
        self.gated.keep_top(sizes, scores)

    def loss_terms(self, step: int) -> dict[str, torch.Tensor]:
        """Nothing to add to the loss; logs the encoder sparsity of the structure in force."""
        return {"sparsity": torch.tensor(self.gated.structure().encoder_sparsity)}

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
