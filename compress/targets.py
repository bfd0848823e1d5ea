"""What a method shrinks the model to: a fraction of a cost (parameters or MACs) removed, or explicit sizes by axis kind.

A fraction target counts one of three costs (``Target.measure``): the encoder's parameters (the default),
every parameter of the model, embeddings included (``prune.count: all``), or the multiply-accumulates of
one token (``prune.target_macs``, the fraction of the teacher's MACs the student keeps). Every cost is a
function of the kept sizes, exact for integer sizes and differentiable for expected ones, so L0 constrains
it and the snap and the uniform structures meet it alike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from compress.errors import TargetError
from compress.gated import GatedModel, Number

#: tokens per sequence MACs are counted at when no recipe says (``train.seq_len`` does in a run)
DEFAULT_SEQ_LEN = 128


@dataclass(frozen=True)
class Target:
    """``sparsity`` (fraction of ``count``'s parameters removed), ``macs`` (fraction of MACs kept) or ``sizes``.

    Sizes are per layer for hidden / heads / head_width / ffn / conv, and for the one-unit sublayer
    kinds (attention / mlp) the number of layers that keep theirs. MACs are per token of one
    ``seq_len``-token sequence, counted as ``compress report`` counts them.
    """

    sparsity: float | None = None
    sizes: Mapping[str, int] | None = None
    macs: float | None = None
    count: str = "encoder"
    seq_len: int = DEFAULT_SEQ_LEN

    @classmethod
    def from_prune(cls, prune: Mapping[str, Any], seq_len: int = DEFAULT_SEQ_LEN) -> Target:
        """The target of a recipe's ``prune`` section (of a multi-size recipe: its first, largest student)."""
        return targets_of(prune, seq_len)[0]

    @classmethod
    def of(cls, target: float | Mapping[str, int]) -> Target:
        """A target from a fraction or a mapping of sizes by kind."""
        return cls(sizes=dict(target)) if isinstance(target, Mapping) else cls(sparsity=float(target))

    # -- the cost the target counts ---------------------------------------------------------
    @property
    def measure(self) -> str:
        """What a fraction target counts, in words (messages and records)."""
        if self.macs is not None:
            return "MACs per token"
        return "parameters" if self.count == "all" else "encoder parameters"

    @property
    def label(self) -> str:
        """A short name of this target (the folder of its student in a multi-size run): ``sparsity-0.50``."""
        if self.macs is not None:
            return f"macs-{self.macs:.2f}"
        return f"sparsity-{self.sparsity:.2f}"

    def cost(self, gated: GatedModel, sizes: Mapping[str, Number]) -> Number:
        """The counted cost of the student keeping ``sizes`` (axis name -> units; absent axes keep all)."""
        if self.macs is not None:
            return gated.macs_per_token(sizes, self.seq_len)
        return gated.count(sizes, encoder_only=self.count == "encoder")

    def teacher_cost(self, gated: GatedModel) -> int:
        """The teacher's cost, as the gated model counted it once (L0 divides by it every step)."""
        if self.macs is not None:
            return gated.teacher_macs_per_token(self.seq_len)
        return gated.teacher_encoder_parameters if self.count == "encoder" else gated.teacher_parameters

    def removed(self, gated: GatedModel, sizes: Mapping[str, Number]) -> Number:
        """Fraction of the teacher's cost the student keeping ``sizes`` removes (tensor sizes: differentiable)."""
        return 1.0 - self.cost(gated, sizes) / self.teacher_cost(gated)

    def fraction(self, gated: GatedModel) -> float:
        """The target as a fraction of the cost removed (explicit sizes count encoder parameters)."""
        if self.macs is not None:
            return 1.0 - self.macs
        return self.sparsity if self.sizes is None else self.encoder_sparsity(gated)

    def achieved(self, gated: GatedModel) -> float:
        """Fraction of the cost the structure under the gates removes now."""
        return float(self.removed(gated, gated.structure().sizes))

    # -- checks -------------------------------------------------------------------------------
    def check(self, gated: GatedModel) -> None:
        """Refuse sizes for kinds that are not gated, larger than the teacher's, or a hidden size of 0."""
        if self.macs is not None:
            if not 0.0 < self.macs <= 1.0:
                raise TargetError(f"target MACs fraction {self.macs} must be in (0, 1]")
            if gated.adapter.modality != "text" or gated.adapter.family == "generic":
                raise TargetError(
                    "prune.target_macs counts MACs per token through a family adapter's attention and FFN; "
                    f"the {gated.adapter.family} adapter has no such count: set prune.target_sparsity instead"
                )
            return
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
        """Refuse a fraction above what the gated axes can remove (``floor_sizes``), naming the largest.

        A run checks it before training; a uniform structure (``kind_sizes``) checks it too, so a
        scheduled or one-shot method refuses the target rather than quietly removing less.
        """
        self.check(gated)
        if self.sizes is not None:
            return
        most = float(self.removed(gated, floor_sizes(gated)))
        if self.fraction(gated) > most:
            raise TargetError(_unreachable(self, most, gated))

    def kind_sizes(self, gated: GatedModel) -> dict[str, int]:
        """Units each axis kind keeps in the end: the explicit sizes, or a uniform structure at the fraction."""
        self.check_reachable(gated)
        if self.sizes is not None:
            return dict(self.sizes)
        return gated.uniform_kind_sizes(self.fraction(gated), lambda sizes: self.cost(gated, sizes))

    def encoder_sparsity(self, gated: GatedModel) -> float:
        """The target as a fraction of encoder parameters removed (explicit sizes are counted)."""
        if self.sizes is None and self.macs is None and self.count == "encoder":
            return self.sparsity
        kept = gated.count(gated.axis_sizes(self.kind_sizes(gated)), encoder_only=True)
        return 1.0 - kept / gated.teacher_encoder_parameters

    def to_dict(self) -> dict[str, Any]:
        """What compression.json records of the target (``metrics``)."""
        if self.macs is not None:
            return {"target_macs": self.macs, "macs_seq_len": self.seq_len}
        if self.sizes is not None:
            return {"target_sizes": dict(self.sizes)}
        return {"target_sparsity": self.sparsity, "target_count": self.count}


def targets_of(prune: Mapping[str, Any], seq_len: int = DEFAULT_SEQ_LEN) -> list[Target]:
    """Every student's target of a recipe's ``prune`` section, largest student first (one unless a list is given)."""
    count = prune.get("count", "encoder")
    if prune.get("target_macs") is not None:
        return [Target(macs=float(m), count=count, seq_len=seq_len) for m in _as_list(prune["target_macs"])]
    if prune["target"] is not None:
        return [Target(sizes=prune["target"], count=count, seq_len=seq_len)]
    return [Target(sparsity=float(s), count=count, seq_len=seq_len) for s in _as_list(prune["target_sparsity"])]


def _as_list(value: float | list[float]) -> list[float]:
    return list(value) if isinstance(value, list) else [value]


def floor_sizes(gated: GatedModel) -> dict[str, int]:
    """The smallest structure the gated axes allow: one unit left on each width axis, every gated sublayer removed.

    One unit is what a uniform structure keeps at least (``GatedModel.uniform_kind_sizes``) and what the
    fold needs of the residual stream and of the generic path's stock FFNs; sublayers are one-unit axes.
    """
    return {axis.name: 0 if axis.size == 1 else 1 for axis in gated.gated_axes()}


def reachable_sparsity(gated: GatedModel) -> float:
    """The largest fraction of encoder parameters the gated axes can remove (``floor_sizes``)."""
    return float(Target(sparsity=0.0).removed(gated, floor_sizes(gated)))


def _unreachable(target: Target, most: float, gated: GatedModel) -> str:
    """The refusal of a fraction above ``most``: what is pruned, what stays, and what to change."""
    floor = floor_sizes(gated)
    kept, total = int(target.cost(gated, floor)), target.teacher_cost(gated)
    stays = f"{kept:,} of the {total:,} {target.measure} stay"
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
    if target.macs is not None:
        asked = f"prune.target_macs={target.macs} cannot be reached by {how}: at least {math.ceil((1 - most) * 100) / 100:.2f} of MACs stay"
    else:
        asked = f"prune.target_sparsity={target.sparsity} cannot be reached by {how}: at most {math.floor(most * 100) / 100:.2f} of {target.measure}"
    return f"{asked} ({detail}); {fix}"
