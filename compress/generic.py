"""``attach_generic``: prune a transformers model that has no family adapter, through torch-pruning's groups."""

from __future__ import annotations

from pathlib import Path

from transformers import PreTrainedModel

from compress.adapters.generic import GenericAdapter
from compress.errors import RecipeError
from compress.job import CompressionJob
from compress.methods import method_entry, method_names
from compress.methods.scheduled.method import ScheduledTopK
from compress.recipe import Recipe, load_recipe

GENERIC_KINDS = ("ffn",)


def attach_generic(model: PreTrainedModel, recipe: Recipe | str | Path) -> CompressionJob:
    """Attach a torch-pruning method's gates to the FFN units of any transformers encoder (a copy of it).

    For models no family adapter supports (DistilBERT, ViT, ...): ``compress.attach`` refuses them, this
    finds each layer's FFN from torch-pruning's dependency groups (``compress.adapters.generic``). The
    recipe's method must score units with torch-pruning (magnitude, taylor, random); its family is not
    checked and its axes are reduced to ``ffn``. The job then works as any other: ``prune_to`` /
    ``keep_top`` / the method's hooks, ``structure()``, and ``fold()`` into the teacher's own class with
    its stock config (the FFN width key set to the kept width), which ``save_student`` exports.
    """
    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    prune = recipe.prune
    if method_entry(prune["method"]).load() is not ScheduledTopK:
        usable = [name for name in method_names() if method_entry(name).load() is ScheduledTopK]
        raise RecipeError(
            f"method {prune['method']!r} needs a family adapter; the generic path runs the scheduled top-k methods "
            f"{', '.join(usable)}: set prune.method to one of them"
        )
    if "ffn" not in prune["axes"]:
        raise RecipeError(f"the generic path prunes only FFN units, but prune.axes is {prune['axes']}; add ffn")
    other = sorted(set(prune["target"] or {}) - set(GENERIC_KINDS))
    if other:
        raise RecipeError(f"the generic path prunes only FFN units; prune.target gives sizes for {other}: give only ffn")
    return CompressionJob(model, recipe.override({"prune.axes": list(GENERIC_KINDS)}), adapter=GenericAdapter)
