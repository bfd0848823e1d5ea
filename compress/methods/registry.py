"""The registry of pruning methods by recipe name (``prune.method``), as PEFT registers its tuners.

A method registers its name, where its class lives (imported when a job first builds it, so
listing and checking recipes needs neither torch nor transformers) and the recipe keys it owns
(its schema fragment: dotted keys with defaults and checks), plus constructor options when one
class serves several names (the scheduled top-k criteria).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from compress.errors import RecipeError
from compress.schema import Field

if TYPE_CHECKING:
    from compress.methods.base import PruningMethod


@dataclass(frozen=True)
class MethodEntry:
    """One registered method: ``name``, ``target`` (``module:Class``), its recipe keys and constructor options."""

    name: str
    target: str
    settings: Mapping[str, Field]
    options: Mapping[str, Any] = field(default_factory=dict)

    def load(self) -> type[PruningMethod]:
        """The method class (its module is imported now)."""
        module, _, cls = self.target.partition(":")
        return getattr(importlib.import_module(module), cls)


_METHODS: dict[str, MethodEntry] = {}


def register_method(name: str, target: str, settings: Mapping[str, Field] | None = None, **options: Any) -> None:
    """Make ``prune.method: name`` build ``target`` (``module:Class``), which owns the recipe keys ``settings``."""
    if name in _METHODS:
        raise RuntimeError(f"pruning method {name!r} is registered twice")
    _METHODS[name] = MethodEntry(name, target, settings or {}, options)


def method_names() -> tuple[str, ...]:
    return tuple(_METHODS)


def method_entry(name: str) -> MethodEntry:
    """The method a recipe names, or an error listing the known ones."""
    try:
        return _METHODS[name]
    except KeyError:
        raise RecipeError(f"unknown pruning method {name!r}; known methods: {', '.join(_METHODS)}") from None


def settings_fragments() -> list[tuple[str, Mapping[str, Field]]]:
    """Each distinct recipe fragment with the methods that own it (several names may share one)."""
    fragments: dict[int, tuple[list[str], Mapping[str, Field]]] = {}
    for entry in _METHODS.values():
        fragments.setdefault(id(entry.settings), ([], entry.settings))[0].append(entry.name)
    return [(" / ".join(names), fragment) for names, fragment in fragments.values() if fragment]
