"""Scores per unit of our axes from torch-pruning's importance criteria over its dependency groups.

Each axis is covered by the torch-pruning groups rooted at its tensor dimensions (for BERT the
hidden axis is one group of every residual writer, reader and LayerNorm; a layer's heads are the
Q/K/V-output plus attention-output-input group; its FFN units the group of the two FFN projections).
A criterion scores every channel of a group; a unit sums its rows (a head its ``head_dim`` rows, a
unit of head width its row in every head), and a one-unit sublayer axis sums the scores of the units inside it, so sublayers
compare across layers. Criteria are unnormalised (``normalizer=None``, summed over the group) so the
scores of different groups are comparable.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import torch
import torch_pruning as tp
from torch import nn

from pruners.tp_groups import CoupledDim, dim_of, group_at, shared_twin, trace
from reparam.axes import Axis

CRITERIA = ("magnitude", "taylor", "random")


def criterion(name: str) -> tp.importance.Importance:
    """torch-pruning's importance for ``name``: squared L2 magnitude, first-order Taylor |w * dL/dw|, or random."""
    if name == "magnitude":
        return tp.importance.GroupMagnitudeImportance(p=2, group_reduction="sum", normalizer=None)
    if name == "taylor":
        return tp.importance.GroupTaylorImportance(group_reduction="sum", normalizer=None)
    if name == "random":
        return tp.importance.RandomImportance()
    raise ValueError(f"unknown importance criterion {name!r}; known: {', '.join(CRITERIA)}")


@contextlib.contextmanager
def zero_missing_grads(params: list[nn.Parameter]) -> Iterator[None]:
    """Give parameters without a gradient (frozen or unreached) a zero one while scoring, then none again.

    torch-pruning's Taylor criterion reads every member's gradient; the optimiser must still see None.
    """
    missing = [p for p in params if p.grad is None]
    for param in missing:
        param.grad = torch.zeros_like(param)
    try:
        yield
    finally:
        for param in missing:
            param.grad = None


class AxisScorer:
    """Scores the units of ``axes`` of a (gated) model with torch-pruning criteria, on its live weights.

    The dependency graph is traced once on a parameter-sharing twin of ``model`` (see
    ``pruners.tp_groups.shared_twin``); every call reads the current weights and gradients.
    """

    def __init__(self, model: nn.Module, axes: list[Axis], example_inputs: Mapping[str, torch.Tensor]) -> None:
        # An axis that names no tensors and has no child axes (speech's residual stream) has nothing to score.
        parents = {a.parent for a in axes}
        self.axes = [a for a in axes if a.writers or a.readers or a.name in parents]
        self.twin = shared_twin(model)
        self.graph = trace(self.twin, example_inputs)
        self.groups = {axis.name: self._groups_of(axis) for axis in self.axes if axis.writers or axis.readers}
        self.params = list(self.twin.parameters())

    def _groups_of(self, axis: Axis) -> list[tp.Group]:
        """One group per coupled set of the axis's dimensions (the first dimension of each set is its root)."""
        dims = [dim_of(self.twin, d.tensor, d.dim) for d in [*axis.writers, *axis.readers]]
        dims += [dim_of(self.twin, f"{norm}.weight", 0) for norm in axis.normalisers]
        names = {module: name for name, module in self.twin.named_modules()}
        groups, covered = [], set()
        for dim in dict.fromkeys(d for d in dims if d is not None):
            if dim in covered:
                continue
            group = group_at(self.graph, self.twin, dim)
            if group is None:
                continue
            if len(group[0].idxs) != axis.rows:
                raise ValueError(
                    f"torch-pruning group at {dim.module} ({dim.side}) has {len(group[0].idxs)} channels, "
                    f"axis {axis.name} has {axis.rows}"
                )
            groups.append(group)
            for dep, _ in group:
                if dep.target.module in names:
                    side = "out" if self.graph.is_out_channel_pruning_fn(dep.handler) else "in"
                    covered.add(CoupledDim(names[dep.target.module], side))
        if not groups:
            raise ValueError(f"no torch-pruning group covers axis {axis.name}: the trace never reached its modules")
        return groups

    @torch.no_grad()
    def scores(self, importance: tp.importance.Importance) -> dict[str, torch.Tensor]:
        """Score of every unit of every axis (float32, on CPU); higher means more important."""
        out: dict[str, torch.Tensor] = {}
        uses_grads = isinstance(importance, tp.importance.GroupTaylorImportance)
        with zero_missing_grads(self.params) if uses_grads else contextlib.nullcontext():
            for axis in self.axes:
                if axis.name in self.groups:
                    rows = sum(importance(group).float().cpu() for group in self.groups[axis.name])
                    out[axis.name] = rows.reshape(axis.copies, axis.size, axis.group).sum(dim=(0, 2))
        for axis in self.axes:
            if axis.name not in out:
                children = [out[a.name].sum() for a in self.axes if a.parent == axis.name and a.name in out]
                if not children:
                    raise ValueError(f"axis {axis.name} has neither tensors nor scored child axes to score it by")
                out[axis.name] = torch.stack(children).sum().reshape(1)
        return out
