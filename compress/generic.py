"""The generic path: prune the FFN units of any transformers encoder, found through torch-pruning's groups.

``attach_generic`` builds such a job from Python; ``job_for`` is how a run (``compress.run``,
``compress run``) picks its job: the family adapter's, or the generic path's when asked for
(``generic=True``, ``--generic``) or, with a notice, when no family adapter fits the teacher.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from transformers import PreTrainedModel

from compress.adapters import adapter_for
from compress.adapters.generic import GenericAdapter
from compress.errors import CompressError, RecipeError, UnsupportedModelError
from compress.job import CompressionJob, attach
from compress.methods import method_entry, method_names
from compress.methods.scheduled.method import ScheduledTopK
from compress.recipe import Recipe, load_recipe

logger = logging.getLogger(__name__)
GENERIC_KINDS = ("ffn",)


def generic_recipe(recipe: Recipe, asked_axes: Sequence[str] | None = None) -> Recipe:
    """``recipe`` with ``prune.axes`` narrowed to ``ffn``, or a ``RecipeError`` naming what the generic path cannot run.

    Refused: a method other than scheduled top-k (only it keeps the same FFN width in every layer,
    which the teacher's stock config needs), axes without ``ffn``, ``asked_axes`` (``prune.axes`` set
    for this run, e.g. on the command line) other than ``[ffn]``, sizes for other kinds or an FFN of
    0 units, a heterogeneous export, and attention-relation distillation (it needs the Q/K/V
    projections, which only a family adapter names).
    """
    prune = recipe.prune
    if method_entry(prune["method"]).load() is not ScheduledTopK:
        usable = [name for name in method_names() if method_entry(name).load() is ScheduledTopK]
        raise RecipeError(
            f"method {prune['method']!r} needs a family adapter; the generic path runs the scheduled top-k methods "
            f"{', '.join(usable)}, which keep the same FFN width in every layer as the teacher's stock config needs: "
            "set prune.method to one of them (e.g. the bert-magnitude recipe)"
        )
    if asked_axes is not None and list(asked_axes) != list(GENERIC_KINDS):
        raise RecipeError(
            f"prune.axes={list(asked_axes)} was asked for, but the generic path prunes FFN units only: set "
            "prune.axes=[ffn] (or leave it out), or compress a teacher that has a family adapter"
        )
    if "ffn" not in prune["axes"]:
        raise RecipeError(f"the generic path prunes only FFN units, but prune.axes is {prune['axes']}; add ffn")
    sizes = prune["target"] or {}
    other = sorted(set(sizes) - set(GENERIC_KINDS))
    if other:
        raise RecipeError(f"the generic path prunes only FFN units; prune.target gives sizes for {other}: give only ffn")
    if sizes.get("ffn") == 0:
        raise RecipeError(
            "prune.target.ffn=0 removes every FFN unit, but the generic path saves the teacher's stock config, "
            "which needs at least one per layer; choose prune.target.ffn >= 1"
        )
    if recipe.export["format"] == "heterogeneous":
        raise RecipeError(
            "export.format=heterogeneous needs a family adapter (its student class); the generic path saves the "
            "teacher's own class with its stock config: set export.format=auto"
        )
    if recipe.distill["attention_relation"] > 0:
        raise RecipeError(
            f"distill.attention_relation={recipe.distill['attention_relation']} needs the Q/K/V projections, which "
            "only a family adapter names; set distill.attention_relation=0 on the generic path"
        )
    return recipe.override({"prune.axes": list(GENERIC_KINDS)})


def attach_generic(
    model: PreTrainedModel, recipe: Recipe | str | Path, asked_axes: Sequence[str] | None = None
) -> CompressionJob:
    """Attach a torch-pruning method's gates to the FFN units of any transformers encoder (a copy of it).

    For models no family adapter supports (DistilBERT, ViT, ...): ``compress.attach`` refuses them, this
    finds each layer's FFN from torch-pruning's dependency groups (``compress.adapters.generic``). The
    recipe's method must score units with torch-pruning (magnitude, taylor, random); its family is not
    checked and its axes are reduced to ``ffn`` (``generic_recipe``, which also reads ``asked_axes``). A
    target sparsity above what FFN units alone can remove is refused (``compress.targets``). The job then
    works as any other: ``prune_to`` / ``keep_top`` / the method's hooks, ``structure()``, and ``fold()``
    into the teacher's own class with its stock config (the FFN width key set to the kept width), which
    ``save_student`` exports. A model the generic path cannot take is refused before the recipe is.
    """
    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    try:
        narrowed = generic_recipe(recipe, asked_axes)
    except RecipeError:
        GenericAdapter(model)  # tracing leaves the model as it was; its refusal is the first thing to fix
        raise
    return CompressionJob(model, narrowed, adapter=GenericAdapter)


def job_for(
    teacher: PreTrainedModel, recipe: Recipe, generic: bool = False, asked_axes: Sequence[str] | None = None
) -> CompressionJob:
    """The job of a run: the generic path's when ``generic``, else the family adapter's, else the generic path's.

    ``asked_axes`` is ``prune.axes`` when the run's overrides set it (see ``generic_recipe``). Chosen
    without ``generic`` (no family adapter fits), the generic path logs a one-line notice; when it cannot
    take the teacher or the recipe either, the error is the missing adapter's followed by the generic
    path's reason.
    """
    if generic:
        return attach_generic(teacher, recipe, asked_axes)
    try:
        adapter_for(teacher)
    except UnsupportedModelError as missing:
        try:
            job = attach_generic(teacher, recipe, asked_axes)
        except CompressError as reason:
            raise UnsupportedModelError(
                f"{missing} The generic path (FFN units only) cannot take it either: {reason}"
            ) from reason
        axes = recipe.prune["axes"]
        narrowed = "" if axes == list(GENERIC_KINDS) else f"; prune.axes {axes} narrowed to [ffn]"
        logger.warning(
            "no family adapter fits %s (model_type %r): compressing it on the generic path, which prunes FFN units "
            "only%s. Pass --generic (compress.run(..., generic=True)) to choose the generic path and silence this notice",
            type(teacher).__name__,
            teacher.config.model_type,
            narrowed,
        )
        return job
    return attach(teacher, recipe)
