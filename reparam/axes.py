"""Axes: the dimensions of a model that can shrink, described by the tensors that live on them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class TensorDim:
    """One dimension of one named parameter (a ``state_dict`` key) that lies on an axis."""

    tensor: str
    dim: int


@dataclass(frozen=True)
class GateSite:
    """A place in the forward pass where an axis's gate multiplies the activations.

    ``on="output"`` multiplies a module's output, ``on="input"`` its first positional input,
    along dimension ``dim`` (the last by default; 1 for the channels of a ``(batch, channels,
    time)`` convolution activation). A ``binary`` site multiplies by the keep-mask (0/1) instead
    of the gate value: used where the gate cannot be folded into weights (after a nonlinearity)
    and the unit only has to vanish. A binary site that is ``soft_in_training`` multiplies by the
    gate value while its module trains (so the gate learns from the loss) and by the mask in
    eval; it folds nothing, so the fold is exact only where what reads the axis ignores the
    scale of kept units (a LayerNorm over the axis, masked to the kept units).
    """

    module: str
    on: Literal["input", "output"] = "output"
    binary: bool = False
    dim: int = -1
    soft_in_training: bool = False

    def fold_targets(self) -> list[TensorDim]:
        """The tensor dimensions the fold multiplies the gate into, so the site disappears.

        For a Linear, a Conv1d or a LayerNorm / GroupNorm, scaling the output (along any ``dim``)
        equals scaling ``weight`` rows (dim 0) and ``bias``; scaling a Linear's or a Conv1d's
        input equals scaling ``weight`` columns / input channels (dim 1).
        """
        if self.binary:
            return []
        if self.on == "output":
            return [TensorDim(f"{self.module}.weight", 0), TensorDim(f"{self.module}.bias", 0)]
        return [TensorDim(f"{self.module}.weight", 1)]


@dataclass
class Axis:
    """A prunable dimension of ``size`` units, each unit ``group`` tensor rows wide.

    ``writers`` hold the dimensions whose outputs lie on the axis, ``readers`` the input columns
    that read it, ``normalisers`` the LayerNorm modules whose statistics run over it. ``sites``
    say where the gate acts in the forward pass. A unit axis (a whole sublayer) ``owns`` tensors
    that disappear when it keeps nothing; ``parent`` names such an axis when this axis lives
    inside it (heads inside an attention sublayer).

    Rows are laid out as ``(copies, size, group)``: unit ``u`` covers the ``group`` contiguous
    rows starting at ``u * group``, repeated ``copies`` times every ``stride = size * group`` rows.
    One copy is a plain axis; the width of attention heads has one copy per head (unit ``j`` is
    row ``h * head_dim + j`` of every head ``h``).

    ``dot_scaled`` names tensors (scaled whole) that feed a dot product over this axis which the
    model scales by ``1 / sqrt(units)``, as attention scales ``q . k`` by ``1 / sqrt(head width)``.
    A student keeping ``k`` units scales by ``1 / sqrt(k)``, so the fold multiplies these tensors
    by ``sqrt(k / size)`` to keep the product unchanged.

    ``layer`` is the index of the encoder layer a per-layer axis belongs to (None for global
    axes such as ``hidden``); per-layer axes are named ``layers.{layer}.{kind}`` (``layer_axis_name``).
    """

    name: str
    kind: str
    size: int
    group: int = 1
    writers: list[TensorDim] = field(default_factory=list)
    readers: list[TensorDim] = field(default_factory=list)
    normalisers: list[str] = field(default_factory=list)
    sites: list[GateSite] = field(default_factory=list)
    owns: list[str] = field(default_factory=list)
    parent: str | None = None
    copies: int = 1
    dot_scaled: list[str] = field(default_factory=list)
    layer: int | None = None

    @classmethod
    def in_layer(cls, layer: int, kind: str, size: int, **fields) -> Axis:
        """The ``kind`` axis of encoder layer ``layer``."""
        return cls(layer_axis_name(layer, kind), kind, size, layer=layer, **fields)

    @property
    def stride(self) -> int:
        """Rows between two copies of a unit."""
        return self.size * self.group

    @property
    def rows(self) -> int:
        """Length of every tensor dimension on the axis."""
        return self.copies * self.stride

    def sliced_dims(self) -> list[TensorDim]:
        """Every tensor dimension the fold slices to the kept units of this axis."""
        norm_dims = [TensorDim(f"{m}.{p}", 0) for m in self.normalisers for p in ("weight", "bias")]
        return [*self.writers, *self.readers, *norm_dims]


def layer_axis_name(layer: int, kind: str) -> str:
    """The name of the ``kind`` axis of encoder layer ``layer`` (``layers.3.ffn``)."""
    return f"layers.{layer}.{kind}"
