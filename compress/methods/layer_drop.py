"""Layer drop: the teacher-free truncation baseline ("Large Language Model Distillation Doesn't Need a Teacher").

Keep every other teacher layer with its weights and distil the truncated student (stage 2). The kept
layers are evenly spaced starting at layer 0 (MiniLM 6 -> 3 keeps 0, 2, 4): on held-out Python-docs
snippets the untrained truncation keeping 0, 2, 4 scores a fidelity of 0.566 against 0.533 for 1, 3, 5,
since the first layer is the only one trained on the raw embeddings.

A dropped layer leaves the model entirely, LayerNorms included, so the student is a stock model
with fewer ``num_hidden_layers``. Gating a layer's two sublayers off is not the same function (its
LayerNorms would still run), so this method has its own fold and chooses its layers without training.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch
from transformers import PreTrainedModel

from compress.errors import RecipeError
from compress.methods.base import PruningMethod
from compress.structure import Structure

if TYPE_CHECKING:
    from compress.distill import DistillationLoss
    from compress.job import CompressionJob

SUBLAYERS = ("attention", "mlp")


def spaced_layers(total: int, keep: int) -> list[int]:
    """``keep`` of ``total`` layers, evenly spaced from layer 0 (every other one when keeping half)."""
    return sorted({int(k * total / keep) for k in range(keep)})


class LayerDropMethod(PruningMethod):
    """Keep ``prune.target.attention`` (= ``mlp``) evenly spaced teacher layers; fold into a shallower stock model."""

    name = "layer-drop"

    def __init__(self, job: CompressionJob) -> None:
        super().__init__(job)
        prune = job.recipe.prune
        target = prune["target"] or {}
        keep = target.get("attention")
        if sorted(prune["axes"]) != list(SUBLAYERS) or keep is None or target.get("mlp") != keep or keep < 1:
            raise RecipeError(
                "layer-drop keeps whole layers: set prune.axes=[attention, mlp], prune.target_sparsity=null and "
                "prune.target={attention: N, mlp: N} with N >= 1 the number of teacher layers to keep"
            )
        if job.recipe.train["max_steps"] > 0:
            raise RecipeError(
                "layer-drop chooses its layers without training: set train.max_steps=0 and distil the truncated "
                "student in stage 2 (finetune.max_steps)"
            )
        self.total = job.adapter.kind_limits()["attention"]
        self.kept_layers = spaced_layers(self.total, min(keep, self.total))

    def one_shot(self) -> dict[str, float]:
        """Switch the dropped layers' sublayer gates off (so ``job.structure()`` shows them gone)."""
        scores = {
            f"layers.{i}.{kind}": torch.tensor([float(i in self.kept_layers)]) for i in range(self.total) for kind in SUBLAYERS
        }
        self.job.keep_top(dict.fromkeys(SUBLAYERS, len(self.kept_layers)), scores)
        return {"layers_kept": float(len(self.kept_layers))}

    def _layer_prefix(self, index: int) -> str:
        """State-dict prefix of teacher layer ``index`` (e.g. ``encoder.layer.3.``), from its attention axis."""
        owned = next(a for a in self.job.axes if a.name == f"layers.{index}.attention").owns[0]
        marker = f".{index}."
        return owned[: owned.index(marker) + len(marker)]

    def _student_state(self) -> dict[str, torch.Tensor]:
        """The model's tensors with dropped layers removed and kept ones renumbered 0, 1, ..."""
        prefixes = {self._layer_prefix(i): i for i in range(self.total)}
        new_prefix = {i: self._layer_prefix(i).removesuffix(f"{i}.") + f"{n}." for n, i in enumerate(self.kept_layers)}
        state = {}
        for key, value in self.job.weights().items():
            layer = next((i for prefix, i in prefixes.items() if key.startswith(prefix)), None)
            if layer is None:
                state[key] = value
            elif layer in new_prefix:
                state[new_prefix[layer] + key[len(self._layer_prefix(layer)):]] = value
        return state

    @torch.no_grad()
    def fold(self) -> PreTrainedModel:
        """The truncated student: the teacher's own class and stock config with ``num_hidden_layers`` kept layers."""
        job = self.job
        config = copy.deepcopy(job.model.config)
        config.num_hidden_layers = len(self.kept_layers)
        student = job.adapter.student_class(stock=True)(config, **job.adapter.student_init_kwargs())
        student.load_state_dict(self._student_state(), strict=True)
        student.to(next(job.model.parameters()).dtype).eval()
        structure = Structure(
            sizes=job.structure().sizes,
            parameters=sum(p.numel() for p in student.parameters()),
            encoder_parameters=sum(p.numel() for n, p in student.named_parameters() if job.adapter.is_encoder(n)),
            teacher_parameters=job.count({}),
            teacher_encoder_parameters=job.count({}, encoder_only=True),
        )
        student.compression_record = {
            "teacher": job.teacher_name,
            "teacher_class": type(job.model).__name__,
            "recipe": job.recipe.to_dict(),
            "structure": structure.to_dict(),
            "kept_layers": self.kept_layers,
        }
        return student

    def student_layer_for(self) -> dict[int, int]:
        """Hidden-state index in the student of each teacher hidden-state index (0 = embeddings).

        Teacher state ``s`` (after layer ``s - 1``) maps to the student state after the last kept layer
        before it: the number of kept layers below ``s``.
        """
        return {s: sum(1 for i in self.kept_layers if i < s) for s in range(self.total + 1)}

    def student_distillation(self, distillation: DistillationLoss) -> DistillationLoss:
        return super().student_distillation(distillation).remap_layers(self.student_layer_for())
