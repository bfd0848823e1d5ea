"""What a method shrinks the model to: a fraction of encoder parameters, or explicit sizes by axis kind."""

from __future__ import annotations

import math
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

    def check_reachable(self, gated: GatedModel) -> None:
        """Refuse a sparsity above what the gated axes can remove (``reachable_sparsity``), naming the largest.

        A run checks it before training; a uniform structure (``kind_sizes``) checks it too, so a
        scheduled or one-shot method refuses the target rather than quietly removing less.
        """
        self.check(gated)
        if self.sizes is None and self.sparsity > (most := reachable_sparsity(gated)):
            raise TargetError(_unreachable(self.sparsity, most, gated))

    def kind_sizes(self, gated: GatedModel) -> dict[str, int]:
        """Units each axis kind keeps in the end: the explicit sizes, or a uniform structure at the sparsity."""
        self.check_reachable(gated)
        if self.sizes is not None:
            return dict(self.sizes)
        return gated.uniform_kind_sizes(self.sparsity)

    def encoder_sparsity(self, gated: GatedModel) -> float:
        """The target as a fraction of encoder parameters removed (explicit sizes are counted)."""
        if self.sizes is None:
            return self.sparsity
        kept = gated.count(gated.axis_sizes(self.kind_sizes(gated)), encoder_only=True)
        return 1.0 - kept / gated.teacher_encoder_parameters


def floor_sizes(gated: GatedModel) -> dict[str, int]:
    """The smallest structure the gated axes allow: one unit left on each width axis, every gated sublayer removed.

    One unit is what a uniform structure keeps at least (``GatedModel.uniform_kind_sizes``) and what the
    fold needs of the residual stream and of the generic path's stock FFNs; sublayers are one-unit axes.
    """
    return {axis.name: 0 if axis.size == 1 else 1 for axis in gated.gated_axes()}


def reachable_sparsity(gated: GatedModel) -> float:
    """The largest fraction of encoder parameters the gated axes can remove (``floor_sizes``)."""
    return 1.0 - gated.count(floor_sizes(gated), encoder_only=True) / gated.teacher_encoder_parameters


def _unreachable(sparsity: float, most: float, gated: GatedModel) -> str:
    """The refusal of a sparsity above ``most``: what is pruned, what stays, and what to change."""
    kept, total = gated.count(floor_sizes(gated), encoder_only=True), gated.teacher_encoder_parameters
    stays = f"{kept:,} of the {total:,} encoder parameters stay"
    if gated.adapter.family == "generic":
        how = "pruning FFN units only"
        detail = f"{most:.2%}: every layer keeps at least one FFN unit, and {stays}"
        fix = "lower the target or use a family adapter"
    else:
        kinds = set(gated.kinds)
        other_attention = "heads" if "head_width" in kinds else "head_width"  # the two prune the same rows
        more = [k for k in gated.adapter.axis_kinds if k not in kinds and k != other_attention]
        how = f"pruning only the axes {list(gated.kinds)} (prune.axes)"
        sublayers = " and every gated sublayer removed" if any(a.size == 1 for a in gated.gated_axes()) else ""
        detail = f"{most:.2%}: even with one unit left on each gated axis{sublayers}, {stays}"
        fix = f"lower the target or add {' / '.join(more)} to prune.axes" if more else "lower the target"
    return (
        f"prune.target_sparsity={sparsity} cannot be reached by {how}: at most {math.floor(most * 100) / 100:.2f} of "
        f"encoder parameters ({detail}); {fix}"
    )
