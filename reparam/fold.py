"""The fold: absorb gate values into weights, then slice every tensor to the kept units.

Generic over axes: a family adapter lists which tensor dimensions lie on which axis and where
each gate acts; this module never needs to know module types or names.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from reparam.axes import Axis
from reparam.gating import expand_units


@dataclass
class FoldResult:
    """The student's tensors (teacher key names) and the kept unit indices of every axis."""

    state_dict: dict[str, torch.Tensor]
    kept: dict[str, torch.Tensor]


def kept_indices(axes: list[Axis], values: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Indices of the units each axis keeps: non-zero gate values; all units for ungated axes.

    An axis whose ``parent`` keeps nothing keeps nothing either (heads of a removed sublayer).
    """
    kept: dict[str, torch.Tensor] = {}
    for axis in axes:
        value = values.get(axis.name)
        if value is None:
            kept[axis.name] = torch.arange(axis.size)
        else:
            if value.numel() != axis.size:
                raise ValueError(f"gate of axis {axis.name} has {value.numel()} values, axis has {axis.size} units")
            kept[axis.name] = torch.nonzero(value.detach().cpu() != 0).flatten()
    for axis in axes:
        if axis.parent is not None and kept[axis.parent].numel() == 0:
            kept[axis.name] = kept[axis.name][:0]
    return kept


def unit_rows(axis: Axis, units: torch.Tensor) -> torch.Tensor:
    """Indices of the tensor rows that ``units`` cover, in the axis's ``(copies, size, group)`` layout."""
    return torch.arange(axis.rows).reshape(axis.copies, axis.size, axis.group)[:, units].flatten()


def dot_scale_correction(axis: Axis, kept: int) -> float:
    """Factor for an axis's ``dot_scaled`` tensors when it keeps ``kept`` units: ``sqrt(kept / size)``.

    The model scales its dot product over the axis by ``1 / sqrt(size)``, the student by
    ``1 / sqrt(kept)``; the factor in one operand makes the two products equal.
    """
    return math.sqrt(kept / axis.size)


def _scale_along(tensor: torch.Tensor, dim: int, factor: torch.Tensor) -> torch.Tensor:
    shape = [1] * tensor.dim()
    shape[dim] = -1
    return tensor * factor.to(tensor.dtype).reshape(shape)


@torch.no_grad()
def fold_state_dict(
    state: Mapping[str, torch.Tensor], axes: list[Axis], values: Mapping[str, torch.Tensor]
) -> FoldResult:
    """Fold gate ``values`` (axis name -> vector, deterministic) into ``state`` and slice it.

    1. each gate is multiplied into the tensors at its sites (so the hooks become redundant);
    2. tensors owned by a sublayer that keeps nothing are dropped;
    3. every tensor dimension on an axis is sliced to that axis's kept units;
    4. tensors in a shrunk axis's ``dot_scaled`` get the attention-scale correction.
    """
    kept = kept_indices(axes, values)
    out = dict(state)
    dropped = {name for axis in axes if kept[axis.name].numel() == 0 for name in axis.owns}
    for axis in axes:
        value = values.get(axis.name)
        if value is None:
            continue
        factor = expand_units(value.detach().to(torch.float32).cpu(), axis.group, axis.copies)
        for site in axis.sites:
            for target in site.fold_targets():
                if target.tensor in out and target.tensor not in dropped:
                    tensor = out[target.tensor]
                    out[target.tensor] = _scale_along(tensor, target.dim, factor.to(tensor.device))
    for name in dropped:
        out.pop(name, None)
    for axis in axes:
        if kept[axis.name].numel() == axis.size:
            continue
        rows = unit_rows(axis, kept[axis.name])
        for target in axis.sliced_dims():
            if target.tensor in dropped:
                continue
            tensor = _named(out, axis, target.tensor)
            if tensor.shape[target.dim] != axis.rows:
                raise ValueError(
                    f"axis {axis.name} spans {axis.rows} rows (copies x size x group) but {target.tensor} "
                    f"dim {target.dim} has {tensor.shape[target.dim]}; fix the axis's size, group or copies"
                )
            out[target.tensor] = tensor.index_select(target.dim, rows.to(tensor.device))
        correction = dot_scale_correction(axis, kept[axis.name].numel())
        for name in axis.dot_scaled:
            if name not in dropped:
                tensor = _named(out, axis, name)
                # In float64, so the irrational factor rounds once, to the tensor's own precision.
                out[name] = (tensor.double() * correction).to(tensor.dtype)
    return FoldResult(state_dict=out, kept=kept)


def _named(state: Mapping[str, torch.Tensor], axis: Axis, name: str) -> torch.Tensor:
    """``state[name]``, or an error naming the axis that refers to a tensor the model lacks."""
    if name not in state:
        raise KeyError(f"axis {axis.name} names tensor {name}, which the model does not have")
    return state[name]
