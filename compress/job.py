"""attach: a gated copy of the teacher; fold: the smaller dense student it stands for."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path

import torch
from transformers import PreTrainedModel

from compress.adapters import FamilyAdapter, adapter_for
from compress.errors import RecipeError, TargetError
from compress.methods import PruningMethod, method_class
from compress.recipe import Recipe, load_recipe
from compress.structure import Structure
from pruners import FixedGate, GateSet, HardConcreteGate, count_parameters, magnitude_importance
from pruners.allocation import uniform_sizes
from reparam import Axis, fold_state_dict, install_gates, kept_indices

GATES_ATTR = "compress_gates"
#: Modules the library attaches to a model (gates, distillation heads, the Lagrangian) start with this.
ATTACHED_PREFIX = "compress_"


def model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's own tensors, without the modules the library attached to it."""
    return {k: v for k, v in model.state_dict().items() if not k.startswith(ATTACHED_PREFIX)}


class CompressionJob:
    """A teacher copy with gates (``model``), the axes they sit on, and the fold into a student.

    ``method`` is the recipe's pruning method: the training driver calls its hooks in stage 1.
    """

    def __init__(self, teacher: PreTrainedModel, recipe: Recipe, adapter: type[FamilyAdapter] | None = None) -> None:
        # An explicit adapter (the generic one of ``compress.attach_generic``) serves any family.
        adapter_cls = adapter or adapter_for(teacher)
        if adapter is None and adapter_cls.family != recipe.family:
            raise RecipeError(
                f"recipe {recipe.name!r} is for family {recipe.family!r} but the teacher "
                f"{type(teacher).__name__} is {adapter_cls.family!r}; use a {adapter_cls.family} recipe or a {recipe.family} teacher"
            )
        self.recipe = recipe
        self.teacher_name = str(getattr(teacher.config, "name_or_path", "") or type(teacher).__name__)
        self.model = copy.deepcopy(teacher)
        self.adapter: FamilyAdapter = adapter_cls(self.model)
        gated_kinds = recipe.prune["axes"]
        self.axes: list[Axis] = self.adapter.axes(head_width="head_width" in gated_kinds)
        self._shapes = {name: tuple(p.shape) for name, p in self.model.named_parameters()}
        # Axes missing from a size mapping keep all their units, so {} counts the teacher.
        self._teacher_total = self.count({})
        self._teacher_encoder = self.count({}, encoder_only=True)
        self._check_target()
        method = method_class(recipe.prune["method"])
        self.gates = GateSet({a.name: method.initial_gate(a) for a in self.axes if a.kind in gated_kinds})
        self.model.add_module(GATES_ATTR, self.gates)
        install_gates(self.model, self.axes, self.gates)
        self.method: PruningMethod = method(self)
        for name, module in self.method.modules().items():
            self.model.add_module(name, module)

    # -- size accounting -------------------------------------------------------------------
    def _check_target(self) -> None:
        target = self.recipe.prune["target"] or {}
        limits = self.adapter.kind_limits()
        for kind, size in target.items():
            if size > limits[kind]:
                raise TargetError(
                    f"prune.target.{kind} = {size} is larger than the teacher's {limits[kind]} "
                    f"({kind}); choose a size <= {limits[kind]}"
                )
            if size == 0 and kind == "hidden":
                raise TargetError("prune.target.hidden = 0 would remove the whole residual stream; choose >= 1")

    def count(self, sizes: Mapping[str, int], encoder_only: bool = False) -> int:
        """Parameters of the student whose axes keep ``sizes`` (axis name -> units; absent axes keep all)."""
        include = self.adapter.is_encoder if encoder_only else None
        return int(count_parameters(self._shapes, self.axes, sizes, include=include))

    def target_sparsity(self) -> float:
        """The recipe's target as a fraction of encoder parameters (explicit sizes are converted)."""
        prune = self.recipe.prune
        if prune["target"] is None:
            return prune["target_sparsity"]
        kept = self.count(self._sizes_by_kind(prune["target"]), encoder_only=True)
        return 1.0 - kept / self._teacher_encoder

    def expected_sparsity(self) -> torch.Tensor:
        """Expected fraction of encoder parameters removed, differentiable in the gate parameters.

        Each gated axis contributes its expected number of kept units; the count multiplies them
        exactly as the fold removes tensors (heads x hidden, sublayer ownership), so it converges to
        the folded student's sparsity as the gates harden.
        """
        sizes = {name: self.gates[name].expected_kept() for name in self.gates.names()}
        expected = count_parameters(self._shapes, self.axes, sizes, include=self.adapter.is_encoder)
        return 1.0 - expected / self._teacher_encoder

    @torch.no_grad()
    def snap_to(self, target_sparsity: float, tolerance: float = 0.005) -> float:
        """Shift how many units the learned gates keep so the structure meets the target exactly.

        The Lagrangian brings the expected size near the target; rounding and a short run can leave
        the deterministic structure off by more. A ``count_shift`` shared by every HardConcrete gate
        (binary search) moves the kept counts, keeping the highest-``log_alpha`` units and their
        values; if whole hidden units or heads are too coarse a step, a second shift on the FFN gates
        alone refines it. Returns the shared shift (0 when already within ``tolerance``).
        """
        learned = [a for a in self.axes if a.name in self.gates.names() and isinstance(self.gates[a.name], HardConcreteGate)]
        if not learned or abs(self.structure().encoder_sparsity - target_sparsity) <= tolerance:
            return 0.0
        shift = self._search_shift([self.gates[a.name] for a in learned], 0.0, target_sparsity)
        fine = [self.gates[a.name] for a in learned if a.kind == "ffn"]
        if fine and abs(self.structure().encoder_sparsity - target_sparsity) > tolerance:
            self._search_shift(fine, shift, target_sparsity)
        return shift

    def _search_shift(self, gates: list[HardConcreteGate], base: float, target: float) -> float:
        """Binary search of the extra count shift on ``gates`` whose structure is closest to ``target``."""

        def sparsity_at(extra: float) -> float:
            for gate in gates:
                gate.count_shift.fill_(base + extra)
            return self.structure().encoder_sparsity

        low, high = -30.0, 30.0
        for _ in range(40):
            middle = (low + high) / 2
            low, high = (middle, high) if sparsity_at(middle) < target else (low, middle)
        best = min((low, high), key=lambda extra: abs(sparsity_at(extra) - target))
        sparsity_at(best)
        return base + best

    def _sizes_by_kind(self, by_kind: Mapping[str, int]) -> dict[str, int]:
        """Per-axis sizes from sizes by kind; a one-unit (sublayer) kind's size is how many layers keep it."""
        sizes, seen = {}, dict.fromkeys(by_kind, 0)
        for axis in self.axes:
            if axis.kind not in by_kind:
                continue
            if axis.size == 1:
                sizes[axis.name] = int(seen[axis.kind] < by_kind[axis.kind])
                seen[axis.kind] += 1
            else:  # conv widths may differ per layer: a narrower conv keeps all its channels
                sizes[axis.name] = min(by_kind[axis.kind], axis.size)
        return sizes

    def structure(self) -> Structure:
        """Kept units per axis under the deterministic gates, and the parameter counts they give."""
        kept = kept_indices(self.axes, self.gates.deterministic())
        sizes = {name: int(idx.numel()) for name, idx in kept.items()}
        return Structure(
            sizes=sizes,
            parameters=self.count(sizes),
            encoder_parameters=self.count(sizes, encoder_only=True),
            teacher_parameters=self._teacher_total,
            teacher_encoder_parameters=self._teacher_encoder,
        )

    # -- one-shot selection ----------------------------------------------------------------
    def _head_dim(self) -> int:
        """The teacher's head width, read off the attention axis the job built (heads or head_width)."""
        axis = next((a for a in self.axes if a.kind in ("heads", "head_width")), None)
        if axis is None:  # no attention axis (generic FFN-only jobs): nothing ties hidden to heads
            return 1
        return axis.group if axis.kind == "heads" else axis.size

    def _target_kind_sizes(self, target: float | Mapping[str, int]) -> dict[str, int]:
        if not isinstance(target, (int, float)):
            ungated = sorted(set(target) - set(self.recipe.prune["axes"]))
            if ungated:
                raise TargetError(
                    f"sizes given for {ungated}, which the recipe does not gate (prune.axes = "
                    f"{self.recipe.prune['axes']}); add them to prune.axes or leave them out"
                )
            return dict(target)
        if not 0.0 <= target < 1.0:
            raise TargetError(f"target sparsity {target} must be in [0, 1)")
        budget = (1.0 - target) * self._teacher_encoder
        try:
            return uniform_sizes(
                self.adapter.kind_limits(),
                self.recipe.prune["axes"],
                budget,
                lambda by_kind: self.count(self._sizes_by_kind(by_kind), encoder_only=True),
                head_dim=self._head_dim(),
            )
        except ValueError as err:
            raise TargetError(f"cannot meet target sparsity {target}: {err}") from err

    def final_sizes(self) -> dict[str, int]:
        """Units each axis kind keeps in the end: the recipe's explicit sizes, or a uniform structure at its sparsity."""
        return self._target_kind_sizes(self.recipe.prune["target"] or self.recipe.prune["target_sparsity"])

    def gated_axes(self) -> list[Axis]:
        return [a for a in self.axes if a.name in self.gates.names()]

    def weights(self) -> dict[str, torch.Tensor]:
        """The gated model's own tensors (without the gates and other attached modules)."""
        return model_state(self.model)

    def magnitude_scores(self) -> dict[str, torch.Tensor]:
        """Weight-magnitude importance of every unit of every gated axis (see ``magnitude_importance``)."""
        state = self.weights()
        return {axis.name: magnitude_importance(state, axis) for axis in self.gated_axes()}

    @torch.no_grad()
    def prune_to(self, target: float | Mapping[str, int] | None = None) -> Structure:
        """Fix the gates to a one-shot structure chosen by weight magnitude, and return it.

        ``target`` is a fraction of encoder parameters to remove or explicit sizes by axis kind
        (``heads`` / ``head_width`` and ``ffn`` per layer, ``attention`` / ``mlp`` as the number of
        layers that keep the sublayer); by default the recipe's target. Kinds without a size keep
        every unit; a size for a kind the recipe does not gate is an error.
        """
        sizes = self.final_sizes() if target is None else self._target_kind_sizes(target)
        return self.keep_top(sizes, self.magnitude_scores())

    @torch.no_grad()
    def keep_top(self, sizes: Mapping[str, int], scores: Mapping[str, torch.Tensor]) -> Structure:
        """Fix every gated axis to its highest-scoring units and return the structure.

        ``sizes`` are by axis kind: units per axis for hidden / heads / head_width / ffn, and for the
        one-unit sublayer kinds (attention / mlp) the number of layers that keep theirs, ranked across layers.
        Kinds without a size keep every unit. Units scored ``-inf`` go first (iterative pruning).
        Existing fixed gates are updated in place, so the modules a checkpoint holds stay the same.
        """
        unit_axes: dict[str, list[Axis]] = {}
        for axis in self.gated_axes():
            if axis.size == 1:
                unit_axes.setdefault(axis.kind, []).append(axis)
                continue
            keep = min(sizes.get(axis.kind, axis.size), axis.size)
            self._fix_gate(axis, torch.argsort(scores[axis.name], descending=True, stable=True)[:keep])
        for kind, axes in unit_axes.items():
            ranked = torch.argsort(torch.cat([scores[a.name] for a in axes]), descending=True, stable=True)
            kept = set(ranked[: sizes.get(kind, len(axes))].tolist())
            for i, axis in enumerate(axes):
                self._fix_gate(axis, torch.tensor([0] if i in kept else [], dtype=torch.long))
        self.gates.refresh()
        return self.structure()

    def _fix_gate(self, axis: Axis, indices: torch.Tensor) -> None:
        gate = self.gates[axis.name]
        if isinstance(gate, FixedGate):
            gate.keep_only(indices)
        else:
            self.gates[axis.name] = FixedGate.keeping(axis.size, indices)

    # -- fold ------------------------------------------------------------------------------
    @torch.no_grad()
    def kept(self) -> dict[str, torch.Tensor]:
        """Indices of the teacher units each axis keeps under the deterministic gates."""
        return kept_indices(self.axes, self.gates.deterministic())

    def fold(self) -> PreTrainedModel:
        """The dense student the method's structure stands for (see ``fold_axes``; layer drop truncates)."""
        return self.method.fold()

    @torch.no_grad()
    def fold_axes(self) -> PreTrainedModel:
        """The dense student over the axes: gates multiplied into weights, pruned units sliced away.

        In eval mode its outputs equal ``model``'s on the kept hidden units. Stock class when a
        stock config can express it (unless the recipe asks otherwise), else the heterogeneous twin.
        """
        values = self.gates.deterministic()
        weights = self.weights()
        state = self.method.student_state(weights)
        folded = fold_state_dict(state, self.axes, values)
        sizes = {name: int(idx.numel()) for name, idx in folded.kept.items()}
        if sizes.get("hidden", 1) == 0:
            raise TargetError("the hidden gate keeps no unit; nothing of the residual stream is left to fold")
        stock = self._export_stock(sizes)
        config = self.adapter.student_config(sizes, stock=stock)
        if _untied(weights, state):
            # Compactors mixed the input embeddings and the output decoder differently: keep both.
            config.tie_word_embeddings = False
        student = self.adapter.student_class(stock)(config, **self.adapter.student_init_kwargs())
        student.load_state_dict(folded.state_dict, strict=True)
        student.to(next(self.model.parameters()).dtype).eval()
        student.compression_record = {
            "teacher": self.teacher_name,
            "teacher_class": type(self.model).__name__,
            "recipe": self.recipe.to_dict(),
            "structure": self.structure().to_dict(),
            "kept_indices": {name: idx.tolist() for name, idx in folded.kept.items() if idx.numel() < self._axis_size(name)},
        }
        return student

    def _axis_size(self, name: str) -> int:
        return next(a.size for a in self.axes if a.name == name)

    def _export_stock(self, sizes: Mapping[str, int]) -> bool:
        fmt = self.recipe.export["format"]
        expressible = self.adapter.is_stock_shape(sizes)
        if fmt == "stock" and not expressible:
            raise TargetError(
                "export.format is 'stock' but the student is not uniform (per-layer sizes differ, a "
                "sublayer was removed, or heads x head size != hidden); use export.format=auto"
            )
        return expressible and fmt != "heterogeneous"


def _untied(before: Mapping[str, torch.Tensor], after: Mapping[str, torch.Tensor]) -> bool:
    """Whether tensors that shared storage (tied weights) in ``before`` differ in ``after``."""
    by_storage: dict[tuple[int, tuple], str] = {}
    for name, tensor in before.items():
        key = (tensor.data_ptr(), tuple(tensor.shape))
        first = by_storage.setdefault(key, name)
        if first != name and not torch.equal(after[first], after[name]):
            return True
    return False


def attach(teacher: PreTrainedModel, recipe: Recipe | str | Path) -> CompressionJob:
    """Attach the recipe's gates to a copy of ``teacher`` (the teacher itself is never modified)."""
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    return CompressionJob(teacher, recipe)
