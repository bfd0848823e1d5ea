"""Compactors (WID): learnable square mixing matrices on an axis, identity at start, folded into weights.

A *writer* compactor R mixes the output rows of the modules that write an axis (before any
nonlinearity or gate): ``y -> R y``. A *reader* compactor C mixes what the modules that read an axis
see: ``x -> C x``. At identity the model is the teacher. The fold composes them into the weights,
``W_w <- R W_w``, ``b_w <- R b_w``, ``W_r <- W_r C``; slicing the kept units S then gives the
student's ``R[S, :] W`` and ``W C[:, S]``: every kept unit is a learned combination of all teacher
units. Removed units are zeroed in the compactors (R's rows, C's columns), which the fold checks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from reparam.axes import Axis, TensorDim
from reparam.fold import unit_rows
from reparam.gating import expand_units
from reparam.hooks import HookSet

Side = Literal["writer", "reader"]
SIDES: tuple[Side, ...] = ("writer", "reader")


@dataclass(frozen=True)
class CompactorSite:
    """One compactor: the axis and side it mixes, and the modules whose outputs (writer) or inputs (reader) it mixes."""

    axis: str
    side: Side
    modules: tuple[str, ...]

    @property
    def key(self) -> str:
        module = f"/{self.modules[0]}" if len(self.modules) == 1 else ""
        return f"{self.axis}/{self.side}{module}".replace(".", "/")


def _modules(dims: Iterable[TensorDim], dim: int) -> list[str]:
    """Modules of the weights in ``dims`` lying on the axis along ``dim`` (biases follow their weight)."""
    names = [d.tensor.rpartition(".")[0] for d in dims if d.tensor.endswith(".weight") and d.dim == dim]
    return list(dict.fromkeys(names))


def compactor_sites(axes: list[Axis], sides: Mapping[str, Iterable[Side]], layout: str = "shared") -> list[CompactorSite]:
    """Where compactors go: for each axis whose kind ``sides`` names, on the sides it names.

    ``layout="shared"``: one compactor per axis side, shared by all its writers (or readers);
    ``"per-tensor"``: one per module, WID's own layout. Embedding tables write along their dim 1
    (``vocab x width``), Linear weights along dim 0, and Linear weights read along dim 1.
    """
    if layout not in ("shared", "per-tensor"):
        raise ValueError(f"compactor layout must be 'shared' or 'per-tensor', got {layout!r}")
    sites = []
    for axis in axes:
        for side in sides.get(axis.kind, ()):
            if side not in SIDES:
                raise ValueError(f"compactor side must be 'writer' or 'reader', got {side!r}")
            dims = axis.writers if side == "writer" else axis.readers
            modules = _modules(dims, 0) + _modules(dims, 1) if side == "writer" else _modules(dims, 1)
            if not modules or axis.size == 1:
                continue
            groups = [tuple(modules)] if layout == "shared" else [(m,) for m in modules]
            sites += [CompactorSite(axis.name, side, group) for group in groups]
    return sites


class Compactor(nn.Module):
    """A square matrix over ``rows`` axis rows, identity at start, with a mask of the rows (units) still kept.

    ``matrix()`` is the effective compactor: for a writer, removed units' rows are zero (they write
    nothing); for a reader, removed units' columns are zero (nothing is read from them).
    """

    def __init__(self, rows: int, side: Side) -> None:
        super().__init__()
        self.side = side
        self.weight = nn.Parameter(torch.eye(rows))
        self.register_buffer("keep", torch.ones(rows))

    def matrix(self) -> torch.Tensor:
        keep = self.keep.to(self.weight.dtype)
        return self.weight * (keep[:, None] if self.side == "writer" else keep[None, :])

    def unit_norms(self, axis: Axis) -> torch.Tensor:
        """L2 norm of each unit's rows (writer) or columns (reader): the shrink penalty's groups."""
        weight = self.weight if self.side == "writer" else self.weight.t()
        by_unit = weight.reshape(axis.copies, axis.size, axis.group, -1).transpose(0, 1)
        return by_unit.reshape(axis.size, -1).norm(dim=1)

    @torch.no_grad()
    def remove(self, axis: Axis, kept_units: torch.Tensor) -> None:
        """Zero every unit not in ``kept_units``, in the mask and in the parameter itself."""
        keep = torch.zeros(axis.size, device=self.keep.device)
        keep[torch.as_tensor(kept_units, dtype=torch.long, device=keep.device)] = 1.0
        self.keep.copy_(expand_units(keep, axis.group, axis.copies))
        self.enforce()

    @torch.no_grad()
    def enforce(self) -> None:
        """Re-zero removed units in the parameter (an optimiser's momentum may have moved them)."""
        self.weight.copy_(self.matrix())


class _MixOutput:
    def __init__(self, compactor: Compactor) -> None:
        self.compactor = compactor

    def __call__(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return output @ self.compactor.matrix().to(output.dtype).t()


class _MixInput:
    def __init__(self, compactor: Compactor) -> None:
        self.compactor = compactor

    def __call__(self, module: nn.Module, args: tuple) -> tuple:
        return (args[0] @ self.compactor.matrix().to(args[0].dtype).t(), *args[1:])


class CompactorSet(nn.Module):
    """Every compactor of a model by site key; parameter names contain ``compactor``."""

    def __init__(self, axes: list[Axis], sites: list[CompactorSite]) -> None:
        super().__init__()
        self.sites = {site.key: site for site in sites}
        by_name = {axis.name: axis for axis in axes}
        self.compactors = nn.ModuleDict(
            {site.key: Compactor(by_name[site.axis].rows, site.side) for site in sites}
        )

    def for_axis(self, axis: str) -> list[tuple[CompactorSite, Compactor]]:
        return [(site, self.compactors[key]) for key, site in self.sites.items() if site.axis == axis]

    def install(self, model: nn.Module, hooks: HookSet) -> None:
        """Hook every compactor into ``model``'s forward, recording the hooks in ``hooks``.

        Writer compactors run before any other output hook (a gate on the same output must see
        the mixed rows); reader compactors run after other input hooks (they read gated inputs).
        """
        for key, site in self.sites.items():
            compactor = self.compactors[key]
            for name in site.modules:
                module = model.get_submodule(name)
                if site.side == "writer":
                    hooks.add(module, _MixOutput(compactor), prepend=True)
                else:
                    hooks.add(module, _MixInput(compactor), pre=True)


def _mix(tensor: torch.Tensor, dim: int, matrix: torch.Tensor) -> torch.Tensor:
    """``tensor`` with its dimension ``dim`` replaced by ``matrix @`` that dimension."""
    moved = tensor.movedim(dim, 0)
    mixed = (matrix.to(tensor.dtype) @ moved.reshape(moved.shape[0], -1)).reshape(moved.shape)
    return mixed.movedim(0, dim)


@torch.no_grad()
def compose_compactors(
    state: Mapping[str, torch.Tensor], axes: list[Axis], compactors: CompactorSet, kept: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Fold every compactor into the weights it mixes; the compacted model's tensors, same names.

    Raises if a compactor still carries a removed unit (``kept``: kept unit indices per axis): the
    student would silently lose what that unit wrote or read.
    """
    out = dict(state)
    by_name = {axis.name: axis for axis in axes}
    for key, site in compactors.sites.items():
        axis, compactor = by_name[site.axis], compactors.compactors[key]
        # The parameter itself, not the masked matrix: a removed unit must really be zero.
        matrix = compactor.weight.detach().float().cpu()
        removed = torch.ones(axis.size, dtype=torch.bool)
        removed[kept[axis.name]] = False
        rows = unit_rows(axis, torch.nonzero(removed).flatten())
        leftover = matrix[rows, :] if site.side == "writer" else matrix[:, rows]
        if leftover.numel() and leftover.abs().max() > 0:
            raise ValueError(
                f"compactor {key} is non-zero on removed units of {axis.name}; remove them with "
                "Compactor.remove before folding"
            )
        dims = axis.writers if site.side == "writer" else axis.readers
        for target in dims:
            if target.tensor.rpartition(".")[0] not in site.modules:
                continue
            tensor = out[target.tensor]
            # Writers: rows become R @ rows. Readers: W C, i.e. columns mixed by C transposed.
            mixing = matrix if site.side == "writer" else matrix.t()
            out[target.tensor] = _mix(tensor.float(), target.dim, mixing.to(tensor.device)).to(tensor.dtype)
    return out
