"""Compactors (WID): learnable square mixing matrices on an axis, identity at start, folded into weights.

A *writer* compactor R mixes the output rows of the modules that write an axis (before any
nonlinearity or gate): ``y -> R y``. A *reader* compactor C mixes what the modules that read an axis
see: ``x -> C x``. At identity the model is the teacher. The fold composes them into the weights,
``W_w <- R W_w``, ``b_w <- R b_w``, ``W_r <- W_r C``; slicing the kept units S then gives the
student's ``R[S, :] W`` and ``W C[:, S]``: every kept unit is a learned combination of all teacher
units. Removed units are zeroed in the compactors (R's rows, C's columns), which the fold checks.

While training, the forward multiplies each compactor where it is cheaper (``CompactorSet.path``):
into the weight the module multiplies, ``R W`` / ``W C`` computed once per forward (a weight-sized
product), or into the activations, a product per token. A step's cost then no longer grows with
batch x sequence for the modules whose weight is the smaller side; what is learned is the same.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn.utils import parametrize

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


class _SquaredSums(torch.autograd.Function):
    """Sums of squares of a matrix along ``dim``, with a one-pass backward (``2 w g``).

    Autograd's own ``square().sum()`` makes several matrix-sized temporaries in its backward; the
    compactors are the largest matrices the shrink penalty touches every step.
    """

    @staticmethod
    def forward(ctx, weight: torch.Tensor, dim: int) -> torch.Tensor:
        ctx.save_for_backward(weight)
        ctx.dim = dim
        return (weight * weight).sum(dim)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (weight,) = ctx.saved_tensors
        return weight * (2 * grad).unsqueeze(ctx.dim), None


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
        """L2 norm of each unit's rows (writer) or columns (reader): the shrink penalty's groups.

        The root of summed squares (``_SquaredSums``; this runs every step, and torch's norm over
        columns is many times slower); a removed unit's norm is 0 with a zero gradient, as ``norm``'s is.
        """
        per_row = _SquaredSums.apply(self.weight, 1 if self.side == "writer" else 0)
        squares = per_row.reshape(axis.copies, axis.size, axis.group).sum(dim=(0, 2))
        nonzero = squares > 0
        return torch.where(nonzero, torch.where(nonzero, squares, 1.0).sqrt(), 0.0)

    @torch.no_grad()
    def remove(self, axis: Axis, kept_units: torch.Tensor) -> None:
        """Zero every unit not in ``kept_units``, in the mask and in the parameter itself."""
        keep = torch.zeros(axis.size, device=self.keep.device)
        keep[torch.as_tensor(kept_units, dtype=torch.long, device=keep.device)] = 1.0
        self.keep.copy_(expand_units(keep, axis.group, axis.copies))
        self.enforce()

    @torch.no_grad()
    def enforce(self) -> None:
        """Re-zero removed units in the parameter (an optimiser's momentum may have moved them).

        Only the removed rows (writer) or columns (reader) are written: this runs after every step.
        """
        removed = torch.nonzero(self.keep == 0).flatten()
        if removed.numel():
            self.weight.index_fill_(0 if self.side == "writer" else 1, removed, 0.0)


#: Where a compactor multiplies during the forward: ``weights`` composes it into the weight the module
#: multiplies (``R W``, ``W C``, ``R b``: a weight-sized product, whatever the batch), ``activations``
#: multiplies the module's input or output (a product per token), ``auto`` the cheaper of the two for
#: each module and call. Outputs and gradients are the same either way, to float error.
MixPath = Literal["auto", "weights", "activations"]
_COMPOSED = ("weight", "bias")


def _composable(module: nn.Module) -> bool:
    """Whether the module's forward reads its plain ``weight`` / ``bias`` attributes, so composed ones can stand in.

    A parametrised weight is a property (it would hide the composed one); an embedding's padding row
    gets no gradient and a max-norm one is renormalised in place, so their composed tables would differ.
    """
    if not isinstance(module, (nn.Linear, nn.Embedding)) or parametrize.is_parametrized(module):
        return False
    return not isinstance(module, nn.Embedding) or (module.padding_idx is None and module.max_norm is None)


class _ModuleCompactors:
    """The writer and / or reader compactor of one module, put into its forward by a pre-hook and a hook.

    On the weight path the pre-hook composes the compactors into the module's weight and bias and
    sets the results as instance attributes, which the module's forward reads in place of its
    parameters (the parameters themselves, and so the state dict and the optimiser, are untouched);
    the hook removes them again. On the activation path the pre-hook mixes the input (reader) and
    the hook the output (writer). The pre-hook runs after the module's other pre-hooks (a reader
    reads gated inputs), the hook before its other hooks (a gate on the same output sees mixed rows).
    """

    def __init__(self, owner: CompactorSet, writer: Compactor | None, reader: Compactor | None) -> None:
        self.owner = owner
        self.writer = writer
        self.reader = reader

    def _on_weights(self, module: nn.Module, x: torch.Tensor) -> tuple[bool, bool]:
        """(writer, reader): whether each compactor goes into the weight for this call.

        A compactor of width ``m`` costs ``rows * m^2`` multiply-adds on the activations (``rows``:
        tokens of the call) and ``k * m^2`` on the weight, ``k`` the weight's other dimension (a
        Linear's input width for its writer, output width for its reader; an embedding's table rows).
        """
        path = self.owner.path
        if path == "activations" or not _composable(module):
            return False, False
        if isinstance(module, nn.Embedding):
            writer_k, reader_k, rows = module.num_embeddings, 0, x.numel()
        else:
            writer_k, reader_k, rows = module.in_features, module.out_features, x.numel() // x.shape[-1]
        on = (lambda k: True) if path == "weights" else (lambda k: k < rows)
        return self.writer is not None and on(writer_k), self.reader is not None and on(reader_k)

    def before(self, module: nn.Module, args: tuple) -> tuple:
        for name in _COMPOSED:  # a forward that raised may have left them
            module.__dict__.pop(name, None)
        x = args[0]
        writer, reader = self._on_weights(module, x)
        if writer or reader:
            weight, bias = module._parameters["weight"], module._parameters.get("bias")
            if reader:
                weight = weight @ self.reader.matrix().to(weight.dtype)
            if writer:
                mixing = self.writer.matrix().to(weight.dtype)
                # An embedding table holds the axis along its columns, a Linear along its rows.
                weight = weight @ mixing.t() if isinstance(module, nn.Embedding) else mixing @ weight
                if bias is not None:
                    module.__dict__["bias"] = mixing @ bias
            module.__dict__["weight"] = weight
        if self.reader is not None and not reader:
            x = x @ self.reader.matrix().to(x.dtype).t()
        return (x, *args[1:])

    def after(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        for name in _COMPOSED:
            module.__dict__.pop(name, None)
        if self.writer is not None and not self._on_weights(module, args[0])[0]:
            output = output @ self.writer.matrix().to(output.dtype).t()
        return output


class CompactorSet(nn.Module):
    """Every compactor of a model by site key; parameter names contain ``compactor``.

    ``path`` (a ``MixPath``) says where the compactors multiply during the forward; ``auto`` by default.
    """

    def __init__(self, axes: list[Axis], sites: list[CompactorSite]) -> None:
        super().__init__()
        self.sites = {site.key: site for site in sites}
        by_name = {axis.name: axis for axis in axes}
        self.compactors = nn.ModuleDict(
            {site.key: Compactor(by_name[site.axis].rows, site.side) for site in sites}
        )
        self.path: MixPath = "auto"

    def for_axis(self, axis: str) -> list[tuple[CompactorSite, Compactor]]:
        return [(site, self.compactors[key]) for key, site in self.sites.items() if site.axis == axis]

    def install(self, model: nn.Module, hooks: HookSet) -> None:
        """Put every compactor into ``model``'s forward, recording the hooks in ``hooks``.

        Each module gets one pre-hook and one hook for its compactors (``_ModuleCompactors``); the
        hook runs before any other hook on the module's output, the pre-hook after the other pre-hooks.
        """
        by_module: dict[str, dict[Side, Compactor]] = {}
        for key, site in self.sites.items():
            for name in site.modules:
                sides = by_module.setdefault(name, {})
                if site.side in sides:
                    raise ValueError(f"module {name} has two {site.side} compactors")
                sides[site.side] = self.compactors[key]
        for name, sides in by_module.items():
            module = model.get_submodule(name)
            entry = _ModuleCompactors(self, sides.get("writer"), sides.get("reader"))
            hooks.add(module, entry.before, pre=True)
            hooks.add(module, entry.after, prepend=True)


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
