"""The gated model: a copy of the teacher with gates on its axes, and everything that counts its size.

``attach`` builds one; a pruning method then trains or fixes its gates. It knows no recipe and no
method: it is told which axis kinds to gate and which gate each axis starts with. Whatever else a
method puts on the model (compactors, its multipliers) goes through ``attach_module`` and
``hooks``, so ``detach`` takes all of it off again.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from compress.errors import TargetError
from compress.structure import Structure
from pruners.allocation import uniform_sizes
from pruners.gates import FixedGate, Gate, GateSet
from pruners.size import Number, count_parameters
from reparam import Axis, HookSet, fold_state_dict, install_gates, kept_indices, remove_masked_norms

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from compress.adapters import FamilyAdapter

GATES_ATTR = "compress_gates"
#: Modules the library attaches to a model (gates, distillation heads, the Lagrangian) start with this.
ATTACHED_PREFIX = "compress_"


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's own tensors, without the modules the library attached to it."""
    return {k: v for k, v in model.state_dict().items() if not k.startswith(ATTACHED_PREFIX)}


class GatedModel:
    """A deep copy of ``teacher`` (``model``) whose axes of ``kinds`` carry gates (``gates``).

    ``gate_for`` gives the gate an axis starts with (a method's choice: learned or fixed).
    """

    def __init__(
        self,
        teacher: PreTrainedModel,
        adapter_cls: type[FamilyAdapter],
        kinds: Sequence[str],
        gate_for: Callable[[Axis], Gate],
    ) -> None:
        self.model = copy.deepcopy(teacher)
        self.adapter = adapter_cls(self.model)
        self.kinds = tuple(kinds)
        self.axes: list[Axis] = self.adapter.axes(head_width="head_width" in self.kinds)
        self._by_name = {axis.name: axis for axis in self.axes}
        self._shapes = {name: tuple(p.shape) for name, p in self.model.named_parameters()}
        # Axes missing from a size mapping keep all their units, so {} counts the teacher.
        self.teacher_parameters = self.count({})
        self.teacher_encoder_parameters = self.count({}, encoder_only=True)
        self._teacher_macs: dict[int, int] = {}
        self.hooks = HookSet()
        self._attached: list[str] = []
        self.gates = GateSet({a.name: gate_for(a) for a in self.axes if a.kind in self.kinds})
        self.attach_module(GATES_ATTR, self.gates)
        install_gates(self.model, self.axes, self.gates, self.hooks)

    # -- what is attached -----------------------------------------------------------------
    def attach_module(self, name: str, module: nn.Module) -> None:
        """Add ``module`` to the model under ``name`` (``compress_*``) so checkpoints and optimisers see it."""
        if not name.startswith(ATTACHED_PREFIX):
            raise ValueError(f"attached module names start with {ATTACHED_PREFIX!r}, got {name!r}")
        self.model.add_module(name, module)
        self._attached.append(name)

    def detach(self) -> nn.Module:
        """Take every hook, masked LayerNorm and attached module off; returns the plain model (weights as trained)."""
        self.hooks.remove()
        remove_masked_norms(self.model)
        for name in self._attached:
            delattr(self.model, name)
        self._attached.clear()
        return self.model

    # -- axes and gates -------------------------------------------------------------------
    def axis(self, name: str) -> Axis:
        return self._by_name[name]

    def gated_axes(self) -> list[Axis]:
        return [a for a in self.axes if a.name in self.gates.names()]

    def weights(self) -> dict[str, torch.Tensor]:
        """The gated model's own tensors (without the gates and other attached modules)."""
        return model_state(self.model)

    @torch.no_grad()
    def kept(self) -> dict[str, torch.Tensor]:
        """Indices of the teacher units each axis keeps under the deterministic gates."""
        return kept_indices(self.axes, self.gates.deterministic())

    @property
    def head_dim(self) -> int:
        """The teacher's head width, read off the attention axis (heads or head_width); 1 without one."""
        axis = next((a for a in self.axes if a.kind in ("heads", "head_width")), None)
        if axis is None:  # no attention axis (generic FFN-only models): nothing ties hidden to heads
            return 1
        return axis.group if axis.kind == "heads" else axis.size

    # -- size accounting ------------------------------------------------------------------
    def count(self, sizes: Mapping[str, int | torch.Tensor], encoder_only: bool = False) -> int | torch.Tensor:
        """Parameters of the student whose axes keep ``sizes`` (axis name -> units; absent axes keep all).

        Integer sizes give an int; expected (tensor) sizes a differentiable count.
        """
        include = self.adapter.is_encoder if encoder_only else None
        total = count_parameters(self._shapes, self.axes, sizes, include=include)
        return total if isinstance(total, torch.Tensor) else int(total)

    def macs_per_token(self, sizes: Mapping[str, Number], seq_len: int) -> Number:
        """Multiply-accumulates of the base model per token of one ``seq_len``-token sequence, keeping ``sizes``.

        As ``compress.measure.forward_flops`` counts a forward: one MAC per weight of every Linear of
        the base model and token (the pooler's once per sequence), plus the two attention products
        (``Q K^T`` and the weighted sum of ``V``), ``seq_len`` MACs per kept query row each. Integer sizes
        give the folded student's count exactly; expected sizes a differentiable one.
        """
        per_token, per_sequence = self._linear_weights
        linear = count_parameters(self._shapes, self.axes, sizes, include=per_token.__contains__)
        pooled = count_parameters(self._shapes, self.axes, sizes, include=per_sequence.__contains__)
        # the query's output rows: kept heads x head width, zero where the attention sublayer is removed
        queries = {q: self._shapes[q][:1] for q in self._query_weights}
        attention = count_parameters(queries, self.axes, sizes)
        total = linear + pooled / seq_len + 2 * seq_len * attention
        return total if isinstance(total, torch.Tensor) else int(round(total))

    def teacher_macs_per_token(self, seq_len: int) -> int:
        """The teacher's ``macs_per_token`` at ``seq_len``, counted once per length (targets divide by it every step)."""
        if seq_len not in self._teacher_macs:
            self._teacher_macs[seq_len] = self.macs_per_token({}, seq_len)
        return self._teacher_macs[seq_len]

    @functools.cached_property
    def _linear_weights(self) -> tuple[set[str], set[str]]:
        """Weights of the base model's Linear layers applied to every token, and to one token a sequence (pooler)."""
        base = self.model.base_model
        prefix = "" if base is self.model else f"{self.model.base_model_prefix}."
        every, once = set(), set()
        for name, module in base.named_modules():
            weight = f"{prefix}{name}.weight"
            if isinstance(module, nn.Linear) and weight in self._shapes:
                (once if name.split(".")[0] == "pooler" else every).add(weight)
        return every, once

    @functools.cached_property
    def _query_weights(self) -> list[str]:
        layers = self.model.config.num_hidden_layers
        return [f"{self.adapter.attention_projections(i)[0]}.weight" for i in range(layers)]

    def expected_sizes(self) -> dict[str, torch.Tensor]:
        """Expected kept units of every gated axis (differentiable in learned gate parameters)."""
        return {name: self.gates[name].expected_kept() for name in self.gates.names()}

    def axis_sizes(self, by_kind: Mapping[str, int]) -> dict[str, int]:
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

    def uniform_kind_sizes(self, sparsity: float, cost: Callable[[Mapping[str, int]], Number] | None = None) -> dict[str, int]:
        """Sizes by kind, the same in every layer, that remove ``sparsity`` of ``cost`` (default: encoder parameters).

        ``cost`` maps per-axis sizes to the counted cost (``compress.targets.Target.cost``).
        """
        if not 0.0 <= sparsity < 1.0:
            raise TargetError(f"target sparsity {sparsity} must be in [0, 1)")
        cost = cost or (lambda sizes: self.count(sizes, encoder_only=True))
        budget = (1.0 - sparsity) * cost({})
        try:
            return uniform_sizes(
                self.adapter.kind_limits(),
                list(self.kinds),
                budget,
                lambda by_kind: cost(self.axis_sizes(by_kind)),
                head_dim=self.head_dim,
            )
        except ValueError as err:
            raise TargetError(f"cannot meet target sparsity {sparsity}: {err}") from err

    def structure(self) -> Structure:
        """Kept units per axis under the deterministic gates, and the parameter counts they give."""
        sizes = {name: int(idx.numel()) for name, idx in self.kept().items()}
        return Structure(
            sizes=sizes,
            parameters=self.count(sizes),
            encoder_parameters=self.count(sizes, encoder_only=True),
            teacher_parameters=self.teacher_parameters,
            teacher_encoder_parameters=self.teacher_encoder_parameters,
        )

    # -- fixing a structure ---------------------------------------------------------------
    @torch.no_grad()
    def keep_top(self, sizes: Mapping[str, int], scores: Mapping[str, torch.Tensor]) -> Structure:
        """Fix every gated axis to its highest-scoring units and return the structure.

        ``sizes`` are by axis kind: units per axis for hidden / heads / head_width / ffn / conv, and for
        the one-unit sublayer kinds (attention / mlp) the number of layers that keep theirs, ranked
        across layers. Kinds without a size keep every unit. Units scored ``-inf`` go first
        (iterative pruning). Existing fixed gates are updated in place, so the modules a checkpoint
        holds stay the same.
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

    # -- fold -----------------------------------------------------------------------------
    @torch.no_grad()
    def fold(self, state: Mapping[str, torch.Tensor], export_format: str = "auto") -> tuple[PreTrainedModel, dict[str, torch.Tensor]]:
        """The dense student of ``state`` (the model's tensors as the method sees them) over the axes.

        Gates are multiplied into weights and pruned units sliced away; in eval mode the student's
        outputs equal ``model``'s on the kept hidden units. It is the family's stock class when a
        stock config can express it and ``export_format`` allows (``auto`` | ``stock`` |
        ``heterogeneous``), else the heterogeneous twin. Returns it with the kept indices per axis.
        """
        folded = fold_state_dict(dict(state), self.axes, self.gates.deterministic())
        sizes = {name: int(idx.numel()) for name, idx in folded.kept.items()}
        if sizes.get("hidden", 1) == 0:
            raise TargetError("the hidden gate keeps no unit; nothing of the residual stream is left to fold")
        stock = self._stock(sizes, export_format)
        config = self.adapter.student_config(sizes, stock, folded.kept)
        if _untied(self.weights(), state):
            # Compactors mixed the input embeddings and the output decoder differently: keep both.
            config.tie_word_embeddings = False
        student = self.adapter.student_class(stock)(config, **self.adapter.student_init_kwargs())
        student.load_state_dict(folded.state_dict, strict=True)
        student.to(next(self.model.parameters()).dtype).eval()
        return student, folded.kept

    def _stock(self, sizes: Mapping[str, int], export_format: str) -> bool:
        expressible = self.adapter.is_stock_shape(sizes)
        if export_format == "stock" and not expressible:
            raise TargetError(
                "export.format is 'stock' but the student is not uniform (per-layer sizes differ, a "
                "sublayer was removed, or heads x head size != hidden); use export.format=auto"
            )
        return expressible and export_format != "heterogeneous"


def _untied(before: Mapping[str, torch.Tensor], after: Mapping[str, torch.Tensor]) -> bool:
    """Whether tensors that shared storage (tied weights) in ``before`` differ in ``after``."""
    by_storage: dict[tuple[int, tuple], str] = {}
    for name, tensor in before.items():
        key = (tensor.data_ptr(), tuple(tensor.shape))
        first = by_storage.setdefault(key, name)
        if first != name and not torch.equal(after[first], after[name]):
            return True
    return False
