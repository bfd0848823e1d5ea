"""``train.objective``: distil from the teacher, or WID's teacher-free masked-LM loss, resolved for a teacher."""

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
