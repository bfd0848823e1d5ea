"""``attach``: a recipe's method on a gated copy of the teacher. ``CompressionJob`` is the handle a user keeps.

The job is where the recipe meets the pieces: it picks the family adapter, builds the gated model
(``compress.gated``) with the gates the method starts with, builds the method with its settings,
and attaches the method's modules. Nothing below it knows the recipe.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from compress.adapters import FamilyAdapter, adapter_for
from compress.fingerprint import teacher_hash
from compress.folding import fold
from compress.gated import GatedModel
from compress.methods import method_entry
from compress.methods.base import MethodSettings, PruningMethod
from compress.methods.criteria import magnitude
from compress.recipe import Recipe, load_recipe
from compress.sentence import is_sentence_transformer, sentence_encoder
from compress.structure import Structure
from compress.targets import Target, targets_of

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer
    from transformers import PreTrainedModel

    from pruners.gates import GateSet
    from reparam import Axis


def method_settings(recipe: Recipe) -> MethodSettings:
    """The settings a recipe gives its method: target, schedule, stage 1's steps and the method's own keys."""
    entry = method_entry(recipe.prune["method"])
    return MethodSettings(
        target=Target.from_prune(recipe.prune, recipe.train["seq_len"]),
        schedule=recipe.prune["schedule"],
        train_steps=recipe.train["max_steps"],
        options={key: recipe[key] for key in entry.settings},
    )


class CompressionJob:
    """A recipe's method attached to a gated copy of the teacher; ``fold`` gives the student.

    ``gated`` is the gated model (``model``, ``axes``, ``gates``, sizes); ``method`` the recipe's
    pruning method, whose hooks the training driver calls in stage 1.
    """

    def __init__(self, teacher: PreTrainedModel, recipe: Recipe, adapter: type[FamilyAdapter] | None = None) -> None:
        # An explicit adapter (the generic one of ``compress.attach_generic``) serves any family.
        adapter_cls = adapter or adapter_for(teacher)
        if adapter is None:  # a group's recipe (bert, hubert) or family: auto resolves to the teacher's family
            recipe = recipe.for_family(adapter_cls.family)
        self.recipe = recipe
        self.teacher_name = str(getattr(teacher.config, "name_or_path", "") or type(teacher).__name__)
        self.teacher_hash = teacher_hash(teacher)  # before the copy is gated: compression.json names the teacher by it
        entry = method_entry(recipe.prune["method"])
        method_cls = entry.load()
        self.gated = GatedModel(teacher, adapter_cls, recipe.prune["axes"], method_cls.initial_gate)
        #: every student's target, largest first: more than one in a multi-size run (a list in the recipe)
        self.targets = targets_of(recipe.prune, recipe.train["seq_len"])
        self.target = self.targets[0]
        for target in self.targets:
            target.check(self.gated)
        self.method: PruningMethod = method_cls(self.gated, method_settings(recipe), **entry.options)
        for name, module in self.method.modules().items():
            self.gated.attach_module(name, module)

    # -- the gated model, as users reach it ---------------------------------------------
    @property
    def model(self) -> PreTrainedModel:
        return self.gated.model

    @property
    def adapter(self) -> FamilyAdapter:
        return self.gated.adapter

    @property
    def axes(self) -> list[Axis]:
        return self.gated.axes

    @property
    def gates(self) -> GateSet:
        return self.gated.gates

    def gated_axes(self) -> list[Axis]:
        return self.gated.gated_axes()

    def kept(self) -> dict[str, torch.Tensor]:
        return self.gated.kept()

    def weights(self) -> dict[str, torch.Tensor]:
        return self.gated.weights()

    def count(self, sizes: Mapping[str, int], encoder_only: bool = False) -> int:
        return self.gated.count(sizes, encoder_only=encoder_only)

    def structure(self) -> Structure:
        """Kept units per axis under the deterministic gates, and the parameter counts they give."""
        return self.gated.structure()

    def keep_top(self, sizes: Mapping[str, int], scores: Mapping[str, torch.Tensor]) -> Structure:
        return self.gated.keep_top(sizes, scores)

    def final_sizes(self) -> dict[str, int]:
        """Units each axis kind keeps in the end: the recipe's explicit sizes, or a uniform structure at its sparsity."""
        return self.target.kind_sizes(self.gated)

    def target_sparsity(self) -> float:
        """The recipe's target as a fraction of encoder parameters (explicit sizes are converted)."""
        return self.target.encoder_sparsity(self.gated)

    @torch.no_grad()
    def prune_to(self, target: float | Mapping[str, int] | None = None) -> Structure:
        """Fix the gates to a one-shot structure chosen by weight magnitude, and return it.

        ``target`` is a fraction of encoder parameters to remove or explicit sizes by axis kind
        (``heads`` / ``head_width`` and ``ffn`` per layer, ``attention`` / ``mlp`` as the number of
        layers that keep the sublayer); by default the recipe's target. Kinds without a size keep
        every unit; a size for a kind the recipe does not gate is an error.
        """
        chosen = self.target if target is None else Target.of(target)
        return self.gated.keep_top(chosen.kind_sizes(self.gated), magnitude(self.gated))

    def fold(self) -> PreTrainedModel:
        """The dense student (see ``compress.fold``, which also gives the compression record)."""
        return fold(self)[0]


def attach(teacher: PreTrainedModel | SentenceTransformer, recipe: Recipe | str | Path) -> CompressionJob:
    """Attach the recipe's gates and method to a copy of ``teacher`` (the teacher itself is never modified).

    A ``SentenceTransformer`` teacher is compressed as its encoder (its first module's ``auto_model``).
    """
    if is_sentence_transformer(teacher):
        teacher = sentence_encoder(teacher)
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    return CompressionJob(teacher, recipe)
