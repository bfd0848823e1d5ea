"""What a method shrinks the model to: a fraction of encoder parameters, or explicit sizes by axis kind."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from compress.errors import TargetError
from compress.gated import GatedModel


@dataclass(frozen=True)
class Target:
    """``sparsity`` (fraction of encoder parameters removed) or ``sizes`` (units by axis kind), not both.

    Sizes are per layer for hidden / heads / head_width / ffn / conv, and for the one-unit sublayer
    kinds (attention / mlp) the number of layers that keep theirs.
    """

    sparsity: float | None = None
    sizes: Mapping[str, int] | None = None

    @classmethod
    def from_prune(cls, prune: Mapping[str, Any]) -> Target:
        """The target of a recipe's ``prune`` section."""
        return cls(sparsity=prune["target_sparsity"], sizes=prune["target"])

    @classmethod
    def of(cls, target: float | Mapping[str, int]) -> Target:
        """A target from a fraction or a mapping of sizes by kind."""
        return cls(sizes=dict(target)) if isinstance(target, Mapping) else cls(sparsity=float(target))

    def check(self, gated: GatedModel) -> None:
        """Refuse sizes for kinds that are not gated, larger than the teacher's, or a hidden size of 0."""
        if self.sizes is None:
            if self.sparsity is None or not 0.0 <= self.sparsity < 1.0:
                raise TargetError(f"target sparsity {self.sparsity} must be in [0, 1)")
            return
        ungated = sorted(set(self.sizes) - set(gated.kinds))
        if ungated:
            raise TargetError(
                f"sizes given for {ungated}, which the recipe does not gate (prune.axes = "
                f"{list(gated.kinds)}); add them to prune.axes or leave them out"
            )
        limits = gated.adapter.kind_limits()
        for kind, size in self.sizes.items():
            if size > limits[kind]:
                raise TargetError(
                    f"prune.target.{kind} = {size} is larger than the teacher's {limits[kind]} "
                    f"({kind}); choose a size <= {limits[kind]}"
                )
            if size == 0 and kind == "hidden":
                raise TargetError("prune.target.hidden = 0 would remove the whole residual stream; choose >= 1")

    def kind_sizes(self, gated: GatedModel) -> dict[str, int]:
        """Units each axis kind keeps in the end: the explicit sizes, or a uniform structure at the sparsity."""
        self.check(gated)
        if self.sizes is not None:
            return dict(self.sizes)
        return gated.uniform_kind_sizes(self.sparsity)

    def encoder_sparsity(self, gated: GatedModel) -> float:
        """The target as a fraction of encoder parameters removed (explicit sizes are counted)."""
        if self.sizes is None:
            return self.sparsity
        kept = gated.count(gated.axis_sizes(self.kind_sizes(gated)), encoder_only=True)
        return 1.0 - kept / gated.teacher_encoder_parameters
