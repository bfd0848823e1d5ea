"""WID (weight-inherited distillation): compactors mix teacher units into the kept ones while axes shrink.

Each gated axis gets learnable compactors (identity at start) on the sides the recipe names; the axes
shrink toward the target on the schedule like scheduled top-k, but the importance of a unit is the
magnitude of the *compacted* weights over every writer and reader of its axis, and a group-lasso
shrink penalty pulls the compactor rows / columns of the units due to go toward zero, so what they
carry moves into the kept units before they are removed. The fold composes the compactors into the
weights, so the student inherits ``R[S, :] W`` and ``W C[:, S]``.
"""

from __future__ import annotations

import torch
from torch import nn

from compress.gated import GatedModel
from compress.methods.base import MethodSettings, ParamGroup
from compress.methods.criteria import magnitude_of
from compress.methods.scheduled.method import ScheduledTopK
from compress.targets import Target
from reparam.compactors import CompactorSet, compactor_sites, compose_compactors

COMPACTORS_ATTR = "compress_compactors"


class WIDMethod(ScheduledTopK):
    """Scheduled shrinking with compactors, compacted-weight importance and a shrink penalty."""

    def __init__(self, gated: GatedModel, settings: MethodSettings) -> None:
        super().__init__(gated, settings, criterion=self._compacted_magnitude)
        self.name = "wid"
        options = settings.options
        sites = compactor_sites(gated.gated_axes(), options["prune.compactor_sides"], options["prune.compactor_layout"])
        self.compactors = CompactorSet(gated.axes, sites)
        self.compactors.install(gated.model, gated.hooks)
        self.penalty_weight = options["prune.shrink_penalty"]
        self.lr = options["train.compactor_lr"]
        self.doomed: dict[str, torch.Tensor] | None = None

    def retarget(self, target: Target, steps: int) -> None:
        super().retarget(target, steps)
        self.doomed = None  # the shrink penalty's units follow the new final sizes

    def modules(self) -> dict[str, nn.Module]:
        return {COMPACTORS_ATTR: self.compactors}

    def param_groups(self) -> list[ParamGroup]:
        return [ParamGroup("compactors", list(self.compactors.parameters()), self.lr)]

    def compactor_parameters(self) -> int:
        return sum(p.numel() for p in self.compactors.parameters())

    def student_state(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        self._remove_pruned()  # the gates may have been set directly (job.prune_to, keep_top)
        return compose_compactors(state, self.gated.axes, self.compactors, self.gated.kept())

    @torch.no_grad()
    def _remove_pruned(self) -> None:
        """Zero, in every compactor, the units the gates have removed."""
        kept = self.gated.kept()
        for axis in self.gated.gated_axes():
            for _, compactor in self.compactors.for_axis(axis.name):
                compactor.remove(axis, kept[axis.name])

    def _compacted_magnitude(self, gated: GatedModel) -> dict[str, torch.Tensor]:
        """The magnitude criterion on the weights with every compactor composed in (WID's importance)."""
        return magnitude_of(compose_compactors(gated.weights(), gated.axes, self.compactors, gated.kept()), gated)

    @torch.no_grad()
    def prune(self, sizes: dict[str, int]) -> None:
        super().prune(sizes)
        self._remove_pruned()
        self.doomed = None

    @torch.no_grad()
    def _doomed(self) -> dict[str, torch.Tensor]:
        """Units still kept that rank below the final size by importance: the shrink penalty's targets."""
        scores, doomed = self.importance(), {}
        for axis in self.gated.gated_axes():
            if axis.kind not in self.final or not self.compactors.for_axis(axis.name):
                continue
            removed = (self.gated.gates[axis.name].deterministic() == 0).cpu()
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
        for axis in self.gated.gated_axes():
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
