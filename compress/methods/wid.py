"""WID (weight-inherited distillation): compactors mix teacher units into the kept ones while axes shrink.

Each gated axis gets learnable compactors (identity at start) on the sides the recipe names; the axes
shrink toward the target on the schedule like scheduled top-k, but the importance of a unit is the
magnitude of the *compacted* weights over every writer and reader of its axis, and a group-lasso
shrink penalty pulls the compactor rows / columns of the units due to go toward zero, so what they
carry moves into the kept units before they are removed. The fold composes the compactors into the
weights, so the student inherits ``R[S, :] W`` and ``W C[:, S]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from compress.methods.scheduled import ScheduledTopK
from pruners import magnitude_importance
from reparam.compactors import CompactorSet, compactor_sites, compose_compactors

if TYPE_CHECKING:
    from compress.job import CompressionJob

COMPACTORS_ATTR = "compress_compactors"


class WIDMethod(ScheduledTopK):
    """Scheduled shrinking with compactors, compacted-weight importance and a shrink penalty."""

    name = "wid"

    def __init__(self, job: CompressionJob) -> None:
        super().__init__(job)
        prune = job.recipe.prune
        sites = compactor_sites(job.gated_axes(), prune["compactor_sides"], prune["compactor_layout"])
        self.compactors = CompactorSet(job.axes, sites)
        self.compactors.install(job.model)
        self.penalty_weight = prune["shrink_penalty"]
        self.doomed: dict[str, torch.Tensor] | None = None

    def modules(self) -> dict[str, nn.Module]:
        return {COMPACTORS_ATTR: self.compactors}

    def compactor_parameters(self) -> int:
        return sum(p.numel() for p in self.compactors.parameters())

    def student_state(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        self._remove_pruned()  # the gates may have been set directly (job.prune_to, job.keep_top)
        return compose_compactors(state, self.job.axes, self.compactors, self.job.kept())

    @torch.no_grad()
    def _remove_pruned(self) -> None:
        """Zero, in every compactor, the units the gates have removed."""
        kept = self.job.kept()
        for axis in self.job.gated_axes():
            for _, compactor in self.compactors.for_axis(axis.name):
                compactor.remove(axis, kept[axis.name])

    def importance(self) -> dict[str, torch.Tensor]:
        composed = compose_compactors(self.job.weights(), self.job.axes, self.compactors, self.job.kept())
        return {axis.name: magnitude_importance(composed, axis) for axis in self.job.gated_axes()}

    @torch.no_grad()
    def prune(self, sizes: dict[str, int]) -> None:
        super().prune(sizes)
        self._remove_pruned()
        self.doomed = None

    @torch.no_grad()
    def _doomed(self) -> dict[str, torch.Tensor]:
        """Units still kept that rank below the final size by importance: the shrink penalty's targets."""
        scores, doomed = self.importance(), {}
        for axis in self.job.gated_axes():
            if axis.kind not in self.final or not self.compactors.for_axis(axis.name):
                continue
            removed = (self.job.gates[axis.name].deterministic() == 0).cpu()
            order = torch.argsort(scores[axis.name].masked_fill(removed, float("-inf")), descending=True, stable=True)
            kept_now = int((~removed).sum())
            doomed[axis.name] = order[self.final[axis.kind] : kept_now]
        return doomed

    def loss_terms(self, step: int) -> dict[str, torch.Tensor]:
        terms = super().loss_terms(step)
        if self.penalty_weight == 0:
            return terms
        if self.doomed is None:
            self.doomed = self._doomed()
        norms = []
        for axis in self.job.gated_axes():
            units = self.doomed.get(axis.name)
            if units is None or not units.numel():
                continue
            for _, compactor in self.compactors.for_axis(axis.name):
                norms.append(compactor.unit_norms(axis)[units.to(compactor.weight.device)].sum())
        if norms:
            penalty = self.penalty_weight * torch.stack(norms).sum()
            terms.update(penalty=penalty, shrink_penalty=penalty.detach())
        return terms

    def after_step(self, step: int) -> None:
        # Removed units first go back to exactly zero (optimiser momentum moves them), then the schedule acts.
        for compactor in self.compactors.compactors.values():
            compactor.enforce()
        super().after_step(step)

    def finish(self) -> dict[str, float]:
        metrics = super().finish()
        metrics["compactor_parameters"] = self.compactor_parameters()
        return metrics
