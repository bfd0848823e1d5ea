"""Recipe schema pieces: a typed field with its default and check, and validation of a nested mapping.

The recipe (``compress.recipe``) holds the shared sections; each pruning method brings the fields
it owns as a fragment of dotted keys (``compress.methods``), merged into the same schema.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from compress.errors import RecipeError

INT, FLOAT, STR = (int,), (int, float), (str,)


@dataclass(frozen=True)
class Field:
    """One recipe leaf: accepted types, default, and an extra check returning an error or None."""

    types: tuple[type, ...]
    default: Any = None
    nullable: bool = False
    check: Callable[[Any], str | None] | None = None


def one_of(choices: tuple[str, ...]) -> Callable[[Any], str | None]:
    return lambda v: None if v in choices else f"must be one of {', '.join(choices)}"


def at_least(low: float) -> Callable[[Any], str | None]:
    return lambda v: None if v >= low else f"must be >= {low}"


def positive(v: Any) -> str | None:
    return None if v > 0 else "must be > 0"


def fraction(v: Any) -> str | None:
    return None if 0.0 <= v < 1.0 else "must be in [0, 1): the fraction of encoder parameters removed"


def fraction_closed(v: Any) -> str | None:
    return None if 0.0 < v <= 1.0 else "must be in (0, 1]"


def fraction_open(v: Any) -> str | None:
    return None if 0.0 < v < 1.0 else "must be in (0, 1)"


def probability(v: Any) -> str | None:
    return None if 0.0 <= v < 1.0 else "must be in [0, 1): a probability"


def merge_fragment(schema: dict[str, Any], fragment: Mapping[str, Field], owner: str) -> None:
    """Add a fragment's dotted keys (``prune.shrink_penalty``) to ``schema``; a key defined twice is an error."""
    for dotted, spec in fragment.items():
        *sections, leaf = dotted.split(".")
        node = schema
        for section in sections:
            node = node.setdefault(section, {})
        if leaf in node:
            raise RuntimeError(f"recipe key {dotted!r} of {owner} is already defined")
        node[leaf] = spec


def unknown_key(path: str, key: str, allowed: Mapping[str, Any], source: str) -> RecipeError:
    full = f"{path}.{key}" if path else key
    close = difflib.get_close_matches(key, list(allowed), n=1)
    hint = f" Did you mean {(path + '.' if path else '') + close[0]!r}?" if close else ""
    return RecipeError(f"{source}: unknown key {full!r}.{hint} Allowed here: {', '.join(allowed)}.")


def validate(data: Any, schema: Mapping[str, Any], path: str, source: str) -> dict[str, Any]:
    """Check ``data`` against ``schema`` and return it with defaults filled in."""
    if not isinstance(data, Mapping):
        where = f"section {path!r}" if path else "a recipe"
        raise RecipeError(f"{source}: {where} must be a mapping of keys to values, got {type(data).__name__}")
    for key in data:
        if key not in schema:
            raise unknown_key(path, str(key), schema, source)
    out: dict[str, Any] = {}
    for key, spec in schema.items():
        full = f"{path}.{key}" if path else key
        if isinstance(spec, dict):
            out[key] = validate(data.get(key, {}), spec, full, source)
            continue
        value = copy.deepcopy(data.get(key, spec.default))
        if value is None:
            if not spec.nullable:
                raise RecipeError(f"{source}: {full!r} is required and cannot be null")
            out[key] = None
            continue
        if isinstance(value, bool) or not isinstance(value, spec.types):
            names = " or ".join(t.__name__ for t in spec.types)
            raise RecipeError(f"{source}: {full!r} must be {names}, got {value!r}")
        problem = spec.check(value) if spec.check else None
        if problem:
            raise RecipeError(f"{source}: {full!r} {problem}")
        out[key] = float(value) if spec.types == FLOAT else value
    return out
