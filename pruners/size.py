"""Size accounting: parameter counts of the student a set of kept sizes will fold into.

Counts come from the teacher's tensor shapes and the axes alone, so they work with integers
(exact structure) and with differentiable expected sizes (tensors) alike.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

from reparam.axes import Axis

Number = int | float | torch.Tensor


def tensor_axis_map(axes: list[Axis]) -> tuple[dict[tuple[str, int], Axis], dict[str, list[str]]]:
    """(tensor, dim) -> axis for every sliced dimension, and tensor -> the unit axes owning it."""
    dim_axis: dict[tuple[str, int], Axis] = {}
    owners: dict[str, list[str]] = {}
    for axis in axes:
        for target in axis.sliced_dims():
            key = (target.tensor, target.dim)
            if key in dim_axis:
                raise ValueError(f"{target.tensor} dim {target.dim} lies on both {dim_axis[key].name} and {axis.name}")
            dim_axis[key] = axis
        for tensor in axis.owns:
            owners.setdefault(tensor, []).append(axis.name)
    return dim_axis, owners


def count_parameters(
    shapes: Mapping[str, Sequence[int]],
    axes: list[Axis],
    sizes: Mapping[str, Number],
    include: Callable[[str], bool] | None = None,
) -> Number:
    """Parameters left when each axis keeps ``sizes[axis]`` units (axes not named keep all).

    ``shapes`` maps each unique parameter to its teacher shape; ``include`` filters names (e.g.
    encoder parameters only). A tensor owned by a sublayer axis counts only while it keeps a unit.
    """
    dim_axis, owners = tensor_axis_map(axes)
    total: Number = 0
    for name, shape in shapes.items():
        if include is not None and not include(name):
            continue
        count: Number = 1
        for dim, length in enumerate(shape):
            axis = dim_axis.get((name, dim))
            count = count * (sizes.get(axis.name, axis.size) * axis.group * axis.copies if axis is not None else length)
        for owner in owners.get(name, []):
            count = count * sizes.get(owner, 1)
        total = total + count
    return total
