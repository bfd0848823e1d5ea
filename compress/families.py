"""The model families the library knows, as a small table: modality and the axis kinds each can prune.

Light on purpose (no torch, no transformers): recipes are checked against it when they load, and
each family adapter (``compress.adapters``) declares its family by name in this table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Modality = Literal["text", "speech"]

#: every axis kind an adapter can build (see DESIGN.md, "axes")
AXIS_KINDS = ("hidden", "heads", "head_width", "ffn", "attention", "mlp", "conv")


@dataclass(frozen=True)
class Family:
    """A family's modality, the axis kinds its adapter builds gates for, and its group.

    ``group`` is the family whose recipes apply unchanged to this one (``bert`` for every BERT-like
    text family, ``hubert`` for the speech families): a ``family: bert`` recipe compresses a RoBERTa teacher.
    """

    name: str
    modality: Modality
    axis_kinds: tuple[str, ...]
    group: str

    @property
    def default_axes(self) -> list[str]:
        """``prune.axes`` when a recipe gives none: every kind it can prune, whole heads rather than head width."""
        return [kind for kind in self.axis_kinds if kind != "head_width"]


_TEXT = ("hidden", "heads", "head_width", "ffn", "attention", "mlp")
# Speech: the residual stream cannot be gated (the grouped positional conv; compress/adapters/speech.py).
_SPEECH = ("conv", "heads", "ffn", "attention", "mlp")

FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        *(Family(name, "text", _TEXT, "bert") for name in ("bert", "roberta", "xlm-roberta", "camembert", "electra", "distilbert", "mpnet")),
        *(Family(name, "speech", _SPEECH, "hubert") for name in ("hubert", "wav2vec2", "data2vec-audio", "wavlm")),
    )
}

#: ``family: auto`` in a recipe: whatever family the teacher is
AUTO = "auto"


def recipe_fits(recipe_family: str, teacher_family: str) -> bool:
    """Whether a recipe written for ``recipe_family`` applies to a teacher of ``teacher_family``.

    ``auto`` fits every family, a group's name (``bert``, ``hubert``) every family of the group, and any
    other family name only itself.
    """
    if recipe_family in (AUTO, teacher_family):
        return True
    family = FAMILIES.get(teacher_family)
    return family is not None and family.group == recipe_family
