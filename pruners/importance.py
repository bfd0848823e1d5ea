"""Importance scores per unit of an axis, used to choose which units a one-shot structure keeps."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from reparam.axes import Axis


@torch.no_grad()
def magnitude_importance(state: Mapping[str, torch.Tensor], axis: Axis) -> torch.Tensor:
    """Squared L2 norm of every weight a unit touches, over all writers and readers of the axis.

    Aggregating over every tensor of the axis (not one projection) is what makes the score
    meaningful for coupled dimensions such as the residual stream. Unit axes (whole sublayers)
    score the norm of the tensors they own.
    """
    if axis.size == 1 and not (axis.writers or axis.readers):
        return sum(state[name].float().pow(2).sum() for name in axis.owns).reshape(1)
    score = torch.zeros(axis.size)
    for target in [*axis.writers, *axis.readers]:
        tensor = state[target.tensor].float().transpose(0, target.dim)
        # Rows in the axis's (copies, size, group) layout: a unit's score sums all its copies.
        score += tensor.reshape(axis.copies, axis.size, axis.group, -1).pow(2).sum(dim=(0, 2, 3)).cpu()
    return score
