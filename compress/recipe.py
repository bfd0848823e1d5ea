"""Recipes: validated YAML that names the method, the axes, the size target and the schedules."""

from __future__ import annotations

import copy
import difflib
import importlib.resources
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from compress.errors import RecipeError
from compress.methods import METHODS
from pruners import schedules

#: the axis kinds each family can prune (speech: no hidden, see compress/adapters/speech.py)
FAMILY_AXES = {
    "bert": ("hidden", "heads", "head_width", "ffn", "attention", "mlp"),
    "hubert": ("conv", "heads", "ffn", "attention", "mlp"),
    "wav2vec2": ("conv", "heads", "ffn", "attention", "mlp"),
}
AXIS_KINDS = ("hidden", "heads", "head_width", "ffn", "attention", "mlp", "conv")
#: prune.axes when a recipe gives none: every axis its family can prune (heads rather than head width)
DEFAULT_AXES = {family: [k for k in kinds if k != "head_width"] for family, kinds in FAMILY_AXES.items()}
FAMILIES = tuple(FAMILY_AXES)
EXPORT_FORMATS = ("auto", "stock", "heterogeneous")


@dataclass(frozen=True)
class Field:
    """One recipe leaf: accepted types, default, and an extra check returning an error or None."""

    types: tuple[type, ...]
    default: Any = None
    nullable: bool = False
    check: Callable[[Any], str | None] | None = None


def _one_of(choices: tuple[str, ...]) -> Callable[[Any], str | None]:
    return lambda v: None if v in choices else f"must be one of {', '.join(choices)}"


def _at_least(low: float) -> Callable[[Any], str | None]:
    return lambda v: None if v >= low else f"must be >= {low}"


def _positive(v: Any) -> str | None:
    return None if v > 0 else "must be > 0"


def _fraction(v: Any) -> str | None:
    return None if 0.0 <= v < 1.0 else "must be in [0, 1): the fraction of encoder parameters removed"


def _fraction_open(v: Any) -> str | None:
    return None if 0.0 < v < 1.0 else "must be in (0, 1)"


def _axis_kinds(v: list) -> str | None:
    bad = [k for k in v if k not in AXIS_KINDS]
    if bad or not v:
        return f"must be a non-empty list of {', '.join(AXIS_KINDS)} (got {v})"
    if "heads" in v and "head_width" in v:
        return (
            "lists both heads and head_width, which prune the same Q/K/V rows (whole heads vs. the width "
            "of every head); keep one of them"
        )
    return "lists an axis twice" if len(set(v)) != len(v) else None


def _target_sizes(v: dict) -> str | None:
    for kind, size in v.items():
        if kind not in AXIS_KINDS:
            return f"names unknown axis {kind!r}; axes are {', '.join(AXIS_KINDS)}"
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            return f"size of {kind!r} must be an integer >= 0 (got {size!r})"
    return None


def _compactor_sides(v: dict) -> str | None:
    for kind, sides in v.items():
        if kind not in AXIS_KINDS:
            return f"names unknown axis {kind!r}; axes are {', '.join(AXIS_KINDS)}"
        if not isinstance(sides, list) or any(side not in ("writer", "reader") for side in sides):
            return f"entry {kind!r} must be a list of 'writer' and / or 'reader' (got {sides!r})"
    return None


def _layer_pairs(v: list) -> str | None:
    ok = all(isinstance(p, list) and len(p) == 2 and all(isinstance(i, int) and i >= 0 for i in p) for p in v)
    return None if ok else "must be a list of [student_layer, teacher_layer] pairs of integers >= 0"


def _schedule(v: Any) -> str | None:
    """The schedule rules of ``pruners.schedules``; callables are imported at run time, not here."""
    try:
        schedules.check_schedule_spec(v, AXIS_KINDS)
    except ValueError as err:
        return f"is invalid: {err}"
    return None


INT, FLOAT, STR = (int,), (int, float), (str,)
SCHEMA: dict[str, Any] = {
    "name": Field(STR),
    "family": Field(STR, "bert", check=_one_of(FAMILIES)),
    "prune": {
        "method": Field(STR, "l0", check=_one_of(tuple(METHODS))),
        "axes": Field((list,), None, nullable=True, check=_axis_kinds),  # null: DEFAULT_AXES of the family
        "target_sparsity": Field(FLOAT, None, nullable=True, check=_fraction),
        "target": Field((dict,), None, nullable=True, check=_target_sizes),
        "schedule": Field((dict, str), {"kind": "linear", "start_step": 0, "ramp_steps": 1000}, check=_schedule),
        # method wid: where compactors go (per axis kind: writer and / or reader side), one per axis
        # side ("shared") or one per module ("per-tensor", WID's layout), and the shrink penalty weight
        "compactor_sides": Field((dict,), {"hidden": ["writer", "reader"], "heads": ["writer", "reader"], "ffn": ["reader"]}, check=_compactor_sides),
        "compactor_layout": Field(STR, "shared", check=_one_of(("shared", "per-tensor"))),
        "shrink_penalty": Field(FLOAT, 0.01, check=_at_least(0.0)),
    },
    "distill": {
        "layers": Field((list,), [], check=_layer_pairs),
        "hidden_l1": Field(FLOAT, 1.0, check=_at_least(0.0)),
        "hidden_cos": Field(FLOAT, 1.0, check=_at_least(0.0)),
        "hidden_mse": Field(FLOAT, 0.0, check=_at_least(0.0)),
        "logits_kl": Field(FLOAT, 0.0, check=_at_least(0.0)),
        "temperature": Field(FLOAT, 1.0, check=_positive),
        "attention_relation": Field(FLOAT, 0.0, check=_at_least(0.0)),
        "relation_heads": Field(INT, 12, check=_at_least(1)),
        "task": Field(FLOAT, 0.0, check=_at_least(0.0)),
    },
    "train": {
        "max_steps": Field(INT, 400, check=_at_least(0)),
        "lr": Field(FLOAT, 2.0e-4, check=_positive),
        "gate_lr": Field(FLOAT, 0.1, check=_positive),
        "lambda_lr": Field(FLOAT, 0.1, check=_positive),
        "compactor_lr": Field(FLOAT, 1.0e-3, check=_positive),
        # distill: losses of the distill section against the teacher; mlm: masked-LM loss alone, teacher-free
        # (needs a teacher with an MLM head); auto: mlm when the teacher has an MLM head, else distill
        "objective": Field(STR, "distill", check=_one_of(("distill", "mlm", "auto"))),
        "mlm_probability": Field(FLOAT, 0.15, check=_fraction_open),
        "warmup_steps": Field(INT, 0, check=_at_least(0)),
        "batch_size": Field(INT, 16, check=_at_least(1)),
        "grad_accum": Field(INT, 1, check=_at_least(1)),
        "seq_len": Field(INT, 64, check=_at_least(8)),
        "logging_steps": Field(INT, 10, check=_at_least(1)),
        "save_steps": Field(INT, 50, check=_at_least(1)),
        "seed": Field(INT, 0, check=_at_least(0)),
    },
    "finetune": {
        "max_steps": Field(INT, 200, check=_at_least(0)),
        "lr": Field(FLOAT, 1.0e-4, check=_positive),
    },
    "data": {
        "text": Field(STR, "python-docs"),
        # speech families: a folder of wav / flac files or a dataset with an audio column (compress/audio.py)
        "audio": Field(STR, None, nullable=True),
        "column": Field(STR, None, nullable=True),
        "held_out": Field(FLOAT, 0.1, check=_fraction_open),
        "min_seconds": Field(FLOAT, 1.0, check=_positive),
        "max_seconds": Field(FLOAT, 15.0, check=_positive),
    },
    "export": {"format": Field(STR, "auto", check=_one_of(EXPORT_FORMATS))},
}


def _unknown_key(path: str, key: str, allowed: Mapping[str, Any], source: str) -> RecipeError:
    full = f"{path}.{key}" if path else key
    close = difflib.get_close_matches(key, list(allowed), n=1)
    hint = f" Did you mean {(path + '.' if path else '') + close[0]!r}?" if close else ""
    return RecipeError(f"{source}: unknown key {full!r}.{hint} Allowed here: {', '.join(allowed)}.")


def _validate(data: Any, schema: Mapping[str, Any], path: str, source: str) -> dict[str, Any]:
    """Check ``data`` against ``schema`` and return it with defaults filled in."""
    if not isinstance(data, Mapping):
        where = f"section {path!r}" if path else "a recipe"
        raise RecipeError(f"{source}: {where} must be a mapping of keys to values, got {type(data).__name__}")
    for key in data:
        if key not in schema:
            raise _unknown_key(path, str(key), schema, source)
    out: dict[str, Any] = {}
    for key, spec in schema.items():
        full = f"{path}.{key}" if path else key
        if isinstance(spec, dict):
            out[key] = _validate(data.get(key, {}), spec, full, source)
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


def _check_target(data: dict[str, Any], source: str) -> None:
    prune = data["prune"]
    if (prune["target_sparsity"] is None) == (prune["target"] is None):
        raise RecipeError(
            f"{source}: set exactly one of 'prune.target_sparsity' (fraction of encoder parameters removed) "
            f"or 'prune.target' (explicit sizes); set the other to null"
        )
    schedule = prune["schedule"]
    if prune["method"] == "l0" and isinstance(schedule, dict) and "kind" not in schedule:
        raise RecipeError(
            f"{source}: 'prune.schedule' gives one schedule per axis, but method l0 ramps one total size "
            "target; give a single schedule such as {kind: linear, start_step: 0, ramp_steps: 1000}"
        )
    if prune["target"] is not None:
        ungated = [k for k in prune["target"] if k not in prune["axes"]]
        if ungated:
            raise RecipeError(f"{source}: 'prune.target' sizes {ungated} for axes not in 'prune.axes' {prune['axes']}")


def _check_family_axes(data: dict[str, Any], source: str) -> None:
    """Refuse axis kinds the recipe's family does not have (conv for text) or cannot prune (hidden for speech)."""
    family, axes = data["family"], data["prune"]["axes"]
    allowed = FAMILY_AXES[family]
    bad = [k for k in axes if k not in allowed]
    if bad:
        raise RecipeError(
            f"{source}: 'prune.axes' lists {bad}, which family {family!r} cannot prune; "
            f"choose among {', '.join(allowed)}"
        )


class Recipe:
    """A validated recipe. Sections read as dicts: ``recipe.prune["axes"]``; dotted ``recipe["prune.axes"]``."""

    def __init__(self, data: Mapping[str, Any], source: str = "recipe") -> None:
        self.source = source
        self._data = _validate(data, SCHEMA, "", source)
        if self._data["prune"]["axes"] is None:
            self._data["prune"]["axes"] = list(DEFAULT_AXES[self._data["family"]])
        _check_target(self._data, source)
        _check_family_axes(self._data, source)

    @property
    def name(self) -> str:
        return self._data["name"]

    @property
    def family(self) -> str:
        return self._data["family"]

    def __getattr__(self, section: str) -> dict[str, Any]:
        if section.startswith("_") or section not in SCHEMA:
            raise AttributeError(section)
        return copy.deepcopy(self._data[section])

    def __getitem__(self, dotted: str) -> Any:
        value: Any = self._data
        for part in dotted.split("."):
            if not isinstance(value, dict) or part not in value:
                raise KeyError(dotted)
            value = value[part]
        return copy.deepcopy(value)

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self._data)

    def override(self, updates: Mapping[str, Any]) -> Recipe:
        """A new recipe with dotted keys replaced, validated like a loaded one."""
        data = self.to_dict()
        for dotted, value in updates.items():
            node, schema = data, SCHEMA
            *parents, leaf = dotted.split(".")
            for i, part in enumerate(parents):
                if not isinstance(schema.get(part), dict):
                    raise _unknown_key(".".join(parents[:i]), part, schema, f"override {dotted!r}")
                node, schema = node[part], schema[part]
            if leaf not in schema or isinstance(schema[leaf], dict):
                raise _unknown_key(".".join(parents), leaf, schema, f"override {dotted!r}")
            node[leaf] = copy.deepcopy(value)
        return Recipe(data, source=f"{self.source} (overridden)")

    def __repr__(self) -> str:
        return f"Recipe(name={self.name!r}, family={self.family!r}, method={self._data['prune']['method']!r})"


def bundled_recipes() -> list[str]:
    """Names of the recipes shipped with the library."""
    folder = importlib.resources.files("recipes")
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_recipe(name_or_path: str | Path) -> Recipe:
    """Load a bundled recipe by name (``"bert-l0"``) or a YAML file by path, and validate it."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise RecipeError(f"recipe file {str(path)!r} does not exist")
        text, source = path.read_text(encoding="utf-8"), str(path)
    else:
        bundled = importlib.resources.files("recipes") / f"{name_or_path}.yaml"
        if not bundled.is_file():
            raise RecipeError(
                f"no recipe named {str(name_or_path)!r}; bundled recipes: {', '.join(bundled_recipes())}; "
                "or pass the path of a .yaml file"
            )
        text, source = bundled.read_text(encoding="utf-8"), f"recipe {name_or_path}"
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise RecipeError(f"{source} is not valid YAML: {err}") from err
    return Recipe(data, source=source)
