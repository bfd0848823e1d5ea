"""What a recipe distils, resolved for a teacher: ``train.objective`` (distil, or WID's teacher-free
masked-LM loss) and ``distill.layers: auto`` (a layer map for the teacher's depth)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from compress.errors import RecipeError
from compress.recipe import Recipe

if TYPE_CHECKING:
    from transformers import PreTrainedModel

#: the distill section of the teacher-free masked-LM objective: the student's own MLM loss alone
MLM_ONLY = {
    "distill.layers": [],
    "distill.hidden_l1": 0.0,
    "distill.hidden_cos": 0.0,
    "distill.hidden_mse": 0.0,
    "distill.pooled_cos": 0.0,
    "distill.pooled_similarity": 0.0,
    "distill.logits_kl": 0.0,
    "distill.attention_relation": 0.0,
    "distill.task": 1.0,
}


def with_objective(recipe: Recipe, teacher: PreTrainedModel, modality: str) -> Recipe:
    """The recipe with ``train.objective`` resolved to ``distill`` or ``mlm``.

    ``mlm`` (WID's teacher-free setting) trains on the masked-LM loss alone, so its distill section is
    replaced by the task loss; it needs a text teacher with an MLM head. ``auto`` picks ``mlm`` when
    the teacher has one and ``distill`` otherwise (e.g. the MiniLM sentence encoder).
    """
    objective = recipe.train["objective"]
    has_mlm_head = modality == "text" and teacher.get_output_embeddings() is not None
    if objective == "auto":
        objective = "mlm" if has_mlm_head else "distill"
    if objective == "distill":
        return recipe.override({"train.objective": "distill"})
    if not has_mlm_head:
        raise RecipeError(
            f"train.objective=mlm needs a text teacher with a masked-LM head (e.g. BertForMaskedLM), but the "
            f"teacher is {type(teacher).__name__}; use train.objective=distill (or auto)"
        )
    return recipe.override({"train.objective": "mlm", **MLM_ONLY})


#: intervals between mapped hidden states for ``distill.layers: auto`` (MiniLM's 6 layers: states 0, 2, 4, 6)
AUTO_INTERVALS = 3


def auto_layer_map(depth: int) -> list[list[int]]:
    """Evenly spaced hidden states of a ``depth``-layer teacher, each mapped onto the same state of the student.

    The embeddings (0) and the last layer (``depth``) are always included, so every layer gets a signal:
    3 intervals where the depth allows (12 layers: 0, 4, 8, 12), else every state (2 layers: 0, 1, 2).
    """
    if depth < 1:
        raise RecipeError(f"distill.layers: auto needs a teacher with at least one layer, got {depth}")
    intervals = min(depth, AUTO_INTERVALS)
    states = sorted({round(i * depth / intervals) for i in range(intervals + 1)})
    return [[state, state] for state in states]


def with_layer_map(recipe: Recipe, depth: int) -> Recipe:
    """The recipe with ``distill.layers: auto`` replaced by ``auto_layer_map(depth)`` (explicit maps stay)."""
    if recipe.distill["layers"] != "auto":
        return recipe
    return recipe.override({"distill.layers": auto_layer_map(depth)})
