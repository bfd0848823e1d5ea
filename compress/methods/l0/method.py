"""L0 (CoFi / DPHuBERT): HardConcrete gates learned under a Lagrangian that drives the expected size.

With a fraction target the Lagrangian constrains the expected fraction of what the target counts
(``compress.targets.Target.cost``: encoder parameters, all parameters or MACs per token) removed.
With explicit sizes (``prune.target``) every gated kind gets its own budget: the hidden
size exactly, per-layer kinds (heads, FFN units, ...) as the per-layer size times the number of
layers in total, so L0 still learns how to spread them over layers; kinds without a size keep all
their units. After training, ``snap_to`` shifts how many units the learned gates keep so the
structure meets the target exactly (the budgets to the unit).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from compress.gated import GatedModel
from compress.methods.base import MethodSettings, ParamGroup, PruningMethod
from compress.targets import Target
from pruners.gates import Gate, HardConcreteGate
from pruners.lagrangian import LagrangianController
from pruners.schedules import compressed, resolve_schedule
from reparam import Axis

LAGRANGIAN_ATTR = "compress_lagrangian"
#: the count shift searched by the snap spans this range of log_alpha (beyond it every unit is kept / removed)
_SHIFT_RANGE = (-30.0, 30.0)
#: the kinds a snap refines on alone after the shared shift, finest step first
REFINE_KINDS = (("ffn",), ("heads", "head_width"), ("hidden",))


class L0Method(PruningMethod):
    """Learned gates and their Lagrangian; ``finish`` snaps the structure to the exact target."""

    name = "l0"

    def __init__(self, gated: GatedModel, settings: MethodSettings) -> None:
        super().__init__(gated, settings)
        target = settings.target
        target.check(gated)
        self.target = target.fraction(gated)
        schedule = resolve_schedule(settings.schedule)
        self.kinds = sorted({a.kind for a in gated.gated_axes()})
        #: total kept units per gated kind, when the target gives sizes; None for a fraction target
        self.budgets = None if target.sizes is None else self._budgets(target.sizes)
        if self.budgets is None:
            self.controller = LagrangianController(self.target, schedule)
        else:
            fractions = [1.0 - self.budgets[kind] / self._units(kind) for kind in self.kinds]
            self.controller = LagrangianController(fractions, schedule)
        #: whether training has been aimed at a target before (a multi-size run's later students start from it)
        self.reached = False
        self.gate_lr = settings.options["train.gate_lr"]
        self.lambda_lr = settings.options["train.lambda_lr"]

    @classmethod
    def initial_gate(cls, axis: Axis) -> Gate:
        return HardConcreteGate(axis.size)

    def retarget(self, target: Target, steps: int) -> None:
        """The Lagrangian's target rises from the last one to ``target`` on the recipe's schedule, within ``steps``."""
        reached = self.target if self.reached else 0.0
        super().retarget(target, steps)
        self.target = target.fraction(self.gated)
        rise, base = self.target - reached, compressed(resolve_schedule(self.settings.schedule), self.schedule_scale)
        self.controller.target = self.target
        self.controller.schedule = lambda step: (reached + rise * base(step)) / self.target if self.target else 1.0
        self.reached = True

    def modules(self) -> dict[str, nn.Module]:
        return {LAGRANGIAN_ATTR: self.controller}

    def param_groups(self) -> list[ParamGroup]:
        gates = [p for name, p in self.gated.gates.named_parameters() if name.endswith("log_alpha")]
        return [
            ParamGroup("gates", gates, self.gate_lr),
            ParamGroup("lambdas", list(self.controller.parameters()), self.lambda_lr),
        ]

    # -- budgets --------------------------------------------------------------------------
    def _axes_of(self, kind: str) -> list[Axis]:
        return [a for a in self.gated.gated_axes() if a.kind == kind]

    def _units(self, kind: str) -> int:
        return sum(a.size for a in self._axes_of(kind))

    def _budgets(self, sizes: dict[str, int]) -> dict[str, int]:
        """Total units each gated kind keeps: the explicit sizes over all layers, every unit where none is given."""
        per_axis = self.gated.axis_sizes(sizes)
        return {
            kind: sum(per_axis[a.name] for a in self._axes_of(kind)) if kind in sizes else self._units(kind)
            for kind in self.kinds
        }

    def expected_sparsity(self) -> torch.Tensor:
        """Expected fraction of the target's cost removed, differentiable in the gate parameters.

        Each gated axis contributes its expected number of kept units; the cost multiplies them
        exactly as the fold removes tensors (heads x hidden, sublayer ownership), so it converges to
        the folded student's as the gates harden.
        """
        return self.settings.target.removed(self.gated, self.gated.expected_sizes())

    def _expected_kind_sparsity(self) -> torch.Tensor:
        """Expected fraction of each gated kind's units removed, in ``self.kinds`` order."""
        expected = self.gated.expected_sizes()
        return torch.stack(
            [1.0 - sum(expected[a.name] for a in self._axes_of(kind)) / self._units(kind) for kind in self.kinds]
        )

    def loss_terms(self, step: int) -> dict[str, torch.Tensor]:
        sparsity = self.expected_sparsity()
        constrained = sparsity if self.budgets is None else self._expected_kind_sparsity()
        return {
            "penalty": self.controller(constrained, step),
            "expected_sparsity": sparsity,
            "target_sparsity": torch.tensor(self.target * self.controller.schedule(step)),
            "lambda_1": self.controller.lambda_1.sum(),
            "lambda_2": self.controller.lambda_2.sum(),
        }

    def finish(self) -> dict[str, float]:
        learned = self._achieved()
        return {"sparsity_learned": learned, "snap_shift": self.snap_to(self.target)}

    def _achieved(self) -> float:
        """Fraction of the target's cost the structure under the deterministic gates removes."""
        return self.settings.target.achieved(self.gated)

    # -- snap -----------------------------------------------------------------------------
    def _learned(self, kind: str | None = None) -> list[HardConcreteGate]:
        gates = [self.gated.gates[a.name] for a in self.gated.gated_axes() if kind is None or a.kind == kind]
        return [g for g in gates if isinstance(g, HardConcreteGate)]

    @torch.no_grad()
    def snap_to(self, target_sparsity: float, tolerance: float = 0.002) -> float:
        """Shift how many units the learned gates keep so the structure meets the target exactly.

        The Lagrangian brings the expected size near the target; rounding and a short run can leave
        the deterministic structure off by more. With explicit sizes every kind is snapped to its
        budget to the unit (``snap_kinds``). Otherwise a ``count_shift`` shared by every HardConcrete
        gate (binary search) moves the kept counts, keeping the highest-``log_alpha`` units and their
        values; where that step is too coarse (a whole sublayer flips), a shift on the FFN gates alone
        refines it, then one on the heads, then on the hidden units (FFN units can run out: a layer
        whose MLP is gone, or whose FFN is kept whole). Returns the shared shift (0 when already
        within ``tolerance``).
        """
        if self.budgets is not None:
            self.snap_kinds()
            return 0.0
        learned = self._learned()
        if not learned or abs(self._achieved() - target_sparsity) <= tolerance:
            return 0.0
        shift = self._search_shift(learned, 0.0, target_sparsity)
        for kinds in REFINE_KINDS:
            fine = [gate for kind in kinds for gate in self._learned(kind)]
            if fine and abs(self._achieved() - target_sparsity) > tolerance:
                self._search_shift(fine, shift, target_sparsity)
        return shift

    def _search_shift(self, gates: list[HardConcreteGate], base: float, target: float) -> float:
        """Binary search of the extra count shift on ``gates`` whose structure is closest to ``target``."""

        def sparsity_at(extra: float) -> float:
            for gate in gates:
                gate.snap(base + extra)
            return self._achieved()

        low, high = _SHIFT_RANGE
        for _ in range(40):
            middle = (low + high) / 2
            low, high = (middle, high) if sparsity_at(middle) < target else (low, middle)
        best = min((low, high), key=lambda extra: abs(sparsity_at(extra) - target))
        sparsity_at(best)
        return base + best

    @torch.no_grad()
    def snap_kinds(self) -> None:
        """Make every gated kind keep exactly its budget of units in total over its layers.

        A shift shared by the kind's gates is searched until the kind keeps at most its budget; the
        few units still missing come back in the layers whose next unit needs the smallest shift.
        """
        for kind, budget in self.budgets.items():
            gates = self._learned(kind)
            if not gates:
                continue
            _, shift = _boundary(lambda s: _set_kept(gates, s) > budget)
            _set_kept(gates, shift)
            missing = budget - sum(_kept(g) for g in gates)
            # For each gate, the shift at which it keeps one unit more than now, and how far that is.
            growth = []
            for gate in gates:
                if _kept(gate) < gate.size:
                    wanted = _kept(gate) + 1
                    own, _ = _boundary(lambda s, g=gate, n=wanted: _set_kept([g], s) >= n)
                    _set_kept([gate], shift)
                    growth.append((shift - own, own, gate))
            for _, own, gate in sorted(growth, key=lambda item: item[0])[:missing]:
                _set_kept([gate], own)
        self.gated.gates.refresh()


def _kept(gate: HardConcreteGate) -> int:
    return int(gate.deterministic().count_nonzero())


def _set_kept(gates: list[HardConcreteGate], shift: float) -> int:
    """Set every gate's count shift to ``shift``; returns how many units they keep together."""
    for gate in gates:
        gate.snap(shift)
    return sum(_kept(g) for g in gates)


def _boundary(holds: Callable[[float], bool]) -> tuple[float, float]:
    """Shifts ``(low, high)`` around where ``holds`` turns false (it holds at low shifts: more units kept).

    ``holds(low)`` is true and ``holds(high)`` false, except at the ends of the searched range.
    """
    low, high = _SHIFT_RANGE
    if not holds(low):
        return low, low
    if holds(high):
        return high, high
    for _ in range(50):
        middle = (low + high) / 2
        low, high = (middle, high) if holds(middle) else (low, middle)
    return low, high
