"""Layer drop: the teacher-free truncation baseline ("Large Language Model Distillation Doesn't Need a Teacher").

Keep every other teacher layer with its weights and distil the truncated student (stage 2). The kept
layers are evenly spaced starting at layer 0 (MiniLM 6 -> 3 keeps 0, 2, 4): on held-out Python-docs
snippets the untrained truncation keeping 0, 2, 4 scores a fidelity of 0.566 against 0.533 for 1, 3, 5,
since the first layer is the only one trained on the raw embeddings.

A dropped layer leaves the model entirely, LayerNorms included, so the student is a stock model
with fewer layers. Gating a layer's two sublayers off is not the same function (its LayerNorms would
still run), so this method has its own fold (the adapter renumbers the kept layers' tensors) and
chooses its layers without training.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from compress.errors import RecipeError
from compress.gated import GatedModel
from compress.methods.base import FoldedStudent, MethodSettings, PruningMethod
from compress.structure import Structure
from reparam import layer_axis_name

if TYPE_CHECKING:
    from compress.distill import DistillationLoss

SUBLAYERS = ("attention", "mlp")


def spaced_layers(total: int, keep: int) -> list[int]:
    """``keep`` of ``total`` layers, evenly spaced from layer 0 (every other one when keeping half)."""
    return sorted({int(k * total / keep) for k in range(keep)})


class LayerDropMethod(PruningMethod):
    """Keep ``prune.target.attention`` (= ``mlp``) evenly spaced teacher layers; fold into a shallower stock model."""

    name = "layer-drop"

    def __init__(self, gated: GatedModel, settings: MethodSettings) -> None:
        super().__init__(gated, settings)
        target = settings.target.sizes or {}
        keep = target.get("attention")
        if sorted(gated.kinds) != list(SUBLAYERS) or keep is None or target.get("mlp") != keep or keep < 1:
            raise RecipeError(
                "layer-drop keeps whole layers: set prune.axes=[attention, mlp], prune.target_sparsity=null and "
                "prune.target={attention: N, mlp: N} with N >= 1 the number of teacher layers to keep"
            )
        if settings.train_steps > 0:
            raise RecipeError(
                "layer-drop chooses its layers without training: set train.max_steps=0 and distil the truncated "
                "student in stage 2 (finetune.max_steps)"
            )
        self.total = gated.adapter.kind_limits()["attention"]
        self.kept_layers = spaced_layers(self.total, min(keep, self.total))

    def one_shot(self) -> dict[str, float]:
        """Switch the dropped layers' sublayer gates off (so the structure shows them gone)."""
        scores = {
            layer_axis_name(i, kind): torch.tensor([float(i in self.kept_layers)])
            for i in range(self.total)
            for kind in SUBLAYERS
        }
        self.gated.keep_top(dict.fromkeys(SUBLAYERS, len(self.kept_layers)), scores)
        return {"layers_kept": float(len(self.kept_layers))}

    @torch.no_grad()
    def fold(self, export_format: str = "auto") -> FoldedStudent:
        """The truncated student: the teacher's own class and stock config with the kept layers only."""
        gated, adapter = self.gated, self.gated.adapter
        config = adapter.truncated_config(len(self.kept_layers))
        student = adapter.student_class(stock=True)(config, **adapter.student_init_kwargs())
        student.load_state_dict(adapter.keep_layers(gated.weights(), self.kept_layers), strict=True)
        student.to(next(gated.model.parameters()).dtype).eval()
        structure = Structure(
            sizes=gated.structure().sizes,
            parameters=sum(p.numel() for p in student.parameters()),
            encoder_parameters=sum(p.numel() for n, p in student.named_parameters() if adapter.is_encoder(n)),
            teacher_parameters=gated.teacher_parameters,
            teacher_encoder_parameters=gated.teacher_encoder_parameters,
        )
        return FoldedStudent(student, structure, kept_layers=self.kept_layers)

    def student_layer_for(self) -> dict[int, int]:
        """Hidden-state index in the student of each teacher hidden-state index (0 = embeddings).

        Teacher state ``s`` (after layer ``s - 1``) maps to the student state after the last kept layer
        before it: the number of kept layers below ``s``.
        """
        return {s: sum(1 for i in self.kept_layers if i < s) for s in range(self.total + 1)}

    def student_distillation(self, distillation: DistillationLoss) -> DistillationLoss:
        return super().student_distillation(distillation).remap_layers(self.student_layer_for())
