"""The model card (``README.md``) of a student folder: hub metadata and what was done, from its record.

Every figure in the card is read from the record export writes as ``compression.json`` (the fold's
``CompressionRecord`` plus the export's entries), so the card and the record never disagree. The
YAML front matter carries the hub metadata: ``base_model`` (the teacher's hub id, when it has one),
``license`` and ``language`` as the teacher's own card gives them, ``library_name``, ``pipeline_tag``
(by the student's class) and ``tags``. The body says what was removed, the kept structure layer by
layer, the MACs and fidelity the run measured, and how to load the student.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from compress.evaluate import SIMILARITY_MEASURE
from compress.fingerprint import HUB_ID_FORM, recorded_teacher_folder
from compress.sentence import MODULES_FILE
from compress.structure import Structure

logger = logging.getLogger(__name__)

CARD_FILE = "README.md"
#: Per-layer axis kinds, in table order (a model has heads or head_width, not both).
LAYER_KINDS = ("heads", "head_width", "ffn", "attention", "mlp")
#: the sublayer whose removal empties a per-layer kind
SUBLAYER = {"heads": "attention", "head_width": "attention", "ffn": "mlp"}
#: by the ending of the student's class name: the Auto class that loads it and the hub's pipeline_tag
TASKS = {
    "ForMaskedLM": ("AutoModelForMaskedLM", "fill-mask"),
    "ForSequenceClassification": ("AutoModelForSequenceClassification", "text-classification"),
    "ForTokenClassification": ("AutoModelForTokenClassification", "token-classification"),
    "ForCTC": ("AutoModelForCTC", "automatic-speech-recognition"),
}
#: where a speech student's task differs from the text one of the same class ending
SPEECH_TASKS = {"ForSequenceClassification": ("AutoModelForAudioClassification", "audio-classification")}
#: a bare encoder: feature extraction, or sentence similarity in a sentence-transformers folder
ENCODER_TASK = ("AutoModel", "feature-extraction")
SENTENCE_TAG = "sentence-similarity"
#: what loads the student's processor, by the file ``save_pretrained`` writes for it
PROCESSORS = {"tokenizer_config.json": "AutoTokenizer", "preprocessor_config.json": "AutoFeatureExtractor"}
#: processor classes that read the model's config.json first (transformers 5), so a heterogeneous
#: student's tokenizer needs ``trust_remote_code=True`` as its model does (else a prompt, then a warning)
CONFIG_READERS = {"AutoTokenizer"}
#: a metric only ``compress.run`` records: the record is of a whole run, which trained its recipe's steps
RUN_METRIC = "minutes"
#: how the card names the student folder in its loading examples (the hub id once it is pushed)
STUDENT_REF = "path/to/student"


def fidelity_line(metrics: Mapping[str, Any]) -> str | None:
    """The run's held-out fidelity after each stage as one line, or None when it was not measured."""
    fidelity = {
        k.removeprefix("fidelity_").replace("_", " "): v
        for k, v in metrics.items()
        if k.startswith("fidelity") and isinstance(v, (int, float))
    }
    if not fidelity:
        return None
    measure = metrics.get("measured_as", SIMILARITY_MEASURE)  # records from before task runs lack it
    return f"held-out fidelity ({measure}): " + ", ".join(
        f"{stage} {value:.3f}" for stage, value in fidelity.items()
    )


def read_front_matter(readme: Path) -> dict[str, Any]:
    """The YAML front matter of a model card (between the first two ``---`` lines), or {} when there is none.

    A teacher card whose front matter is not a YAML mapping is skipped with a warning: the student's
    card then lacks what it would have copied, which is no reason to fail an export.
    """
    if not readme.is_file():
        return {}
    lines = readme.read_text(encoding="utf-8", errors="replace").splitlines()
    if not lines or lines[0].strip() != "---" or "---" not in (line.strip() for line in lines[1:]):
        return {}
    end = next(i for i, line in enumerate(lines[1:], 1) if line.strip() == "---")
    skipped = "the student's card copies nothing from it"
    try:
        front = yaml.safe_load("\n".join(lines[1:end]))
    except yaml.YAMLError as err:
        logger.warning("the front matter of %s is not valid YAML (%s); %s", readme, err, skipped)
        return {}
    if front is not None and not isinstance(front, dict):
        logger.warning("the front matter of %s is %s, not a YAML mapping; %s", readme, type(front).__name__, skipped)
    return front if isinstance(front, dict) else {}


def teacher_hub_id(record: Mapping[str, Any]) -> str | None:
    """The teacher's hub id (``owner/name``), when the record names it by one (not by a folder or class)."""
    teacher = record.get("teacher")
    return teacher if isinstance(teacher, str) and HUB_ID_FORM.fullmatch(teacher) else None


def task_of(architecture: str, speech: bool, sentence: bool) -> tuple[str, str]:
    """The Auto class and the hub's ``pipeline_tag`` of a student class (see ``TASKS``)."""
    for ending, task in TASKS.items():
        if architecture.endswith(ending):
            return SPEECH_TASKS.get(ending, task) if speech else task
    return (ENCODER_TASK[0], SENTENCE_TAG) if sentence else ENCODER_TASK


def _tags(value: Any) -> list[str]:
    """A card's ``tags`` entry as a list (a card may give one tag as a plain string)."""
    if isinstance(value, str):
        return [value]
    return [str(tag) for tag in value] if isinstance(value, list) else []


def card_metadata(record: Mapping[str, Any], teacher_card: Mapping[str, Any], speech: bool, sentence: bool) -> dict[str, Any]:
    """The card's YAML front matter (hub metadata); keys without a known value are left out."""
    method = record.get("recipe", {}).get("prune", {}).get("method", "")
    tags = ["compressed", "pruned", method, *_tags(teacher_card.get("tags"))]
    metadata = {
        "base_model": teacher_hub_id(record),
        "license": teacher_card.get("license"),
        "language": teacher_card.get("language"),
        "library_name": "sentence-transformers" if sentence else "transformers",
        "pipeline_tag": task_of(record.get("architecture", ""), speech, sentence)[1],
        "tags": list(dict.fromkeys(tag for tag in tags if tag)),
    }
    return {key: value for key, value in metadata.items() if value is not None}


def _intro_section(record: Mapping[str, Any], speech: bool) -> list[str]:
    """Title and first paragraph: the teacher (linked when on the hub), the recipe, what was trained."""
    recipe = record.get("recipe", {})
    teacher, method, hub_id = record.get("teacher"), recipe.get("prune", {}).get("method"), teacher_hub_id(record)
    title = f"# {teacher.rsplit('/', 1)[-1] if teacher else 'Student'}, pruned" + (f" ({method})" if method else "")
    intro = "A structurally pruned student"
    if teacher:
        intro += f" of [`{hub_id}`](https://huggingface.co/{hub_id})" if hub_id else f" of `{teacher}`"
    intro += ", made with encoder-compress" + (f" (recipe `{recipe['name']}`)" if "name" in recipe else "")
    intro += ": whole units were removed and the kept weights folded into a smaller dense model."
    if RUN_METRIC in record.get("metrics", {}):
        steps = (recipe["train"]["max_steps"], recipe["finetune"]["max_steps"])
        data = recipe.get("data", {}).get("audio" if speech else "text")
        intro += (
            f" It was distilled from the teacher for {steps[0]} steps while pruning and {steps[1]} steps after the "
            f"fold" + (f", on `{data}`." if data else ".")
            if any(steps)
            else " Nothing was trained: the structure was chosen one-shot."
        )
    return [title, "", intro]


def _removed_section(record: Mapping[str, Any], structure: Structure) -> list[str]:
    prune = record.get("recipe", {}).get("prune", {})
    if prune.get("target") is not None:
        target = f"explicit sizes `{prune['target']}` (`prune.target`)"
    elif prune.get("target_macs") is not None:
        target = f"keep {prune['target_macs']:.1%} of the teacher's MACs per token (`prune.target_macs`)"
    else:
        counted = "parameters (embeddings included)" if prune.get("count") == "all" else "encoder parameters"
        target = f"remove {prune.get('target_sparsity', 0):.1%} of the {counted} (`prune.target_sparsity`)"
    rows = [
        ("encoder parameters", structure.teacher_encoder_parameters, structure.encoder_parameters),
        ("all parameters", structure.teacher_parameters, structure.parameters),
    ]
    return [
        "## What was removed",
        "",
        f"Method `{prune.get('method', '?')}` on the axes {', '.join(f'`{a}`' for a in prune.get('axes', []))}; "
        f"target: {target}.",
        "",
        "| | teacher | student | removed |",
        "|---|---:|---:|---:|",
        *(f"| {name} | {before:,} | {after:,} | {(before - after) / before:.1%} |" for name, before, after in rows),
    ]


def _structure_section(structure: Structure) -> list[str]:
    """Global axes (hidden size, speech conv channels), then one table row of kept units per layer."""
    lines = ["## Structure", ""]
    conv = [n for name, n in structure.sizes.items() if name.startswith("conv.")]
    if "hidden" in structure.sizes:
        lines.append(f"- hidden size: {structure.sizes['hidden']}")
    if conv:
        lines.append(f"- feature-extractor conv channels: {conv}")
    per_layer = {kind: structure.per_layer(kind) for kind in LAYER_KINDS}
    columns = [kind for kind in SUBLAYER if per_layer[kind]]
    if columns:
        lines += ["", "Kept units per layer (`removed`: the whole sublayer is gone):", ""]
        lines += [f"| layer | {' | '.join(k.replace('_', ' ') for k in columns)} |", f"|---:|{'---:|' * len(columns)}"]
        for layer in range(len(per_layer[columns[0]])):
            cells = []
            for kind in columns:
                sublayer = per_layer[SUBLAYER[kind]]
                cells.append("removed" if sublayer and sublayer[layer] == 0 else str(per_layer[kind][layer]))
            lines.append(f"| {layer} | {' | '.join(cells)} |")
    return lines


def _measured_section(metrics: Mapping[str, Any]) -> list[str]:
    """MACs and fidelity as the run measured them, and the run's warnings; nothing when it measured none."""
    lines = []
    macs = metrics.get("macs")
    if isinstance(macs, Mapping):
        lines.append(
            f"- MACs {macs['unit']}: teacher {macs['teacher']:,.0f}, student {macs['student']:,.0f} "
            f"(teacher / student {macs['teacher'] / macs['student']:.2f})"
        )
    fidelity = fidelity_line(metrics)
    if fidelity:
        counts = ", ".join(f"{v} {k.removeprefix('held_out_')}" for k, v in metrics.items() if k.startswith("held_out_") and v)
        lines.append(f"- {fidelity}" + (f" (on {counts})" if counts else ""))
    lines += [f"- warning: {message}" for message in metrics.get("warnings", [])]
    if not lines:
        return []
    note = "Latency depends on the machine: `compress report STUDENT_DIR` measures it against the teacher."
    return ["## Measured", "", *lines, "", note]


def _usage_section(record: Mapping[str, Any], speech: bool, sentence: bool, processor: str | None) -> list[str]:
    heterogeneous = record.get("format") == "heterogeneous"
    auto = task_of(record.get("architecture", ""), speech, sentence)[0]
    remote = ", trust_remote_code=True" if heterogeneous else ""
    code = [f"from transformers import {', '.join(c for c in (auto, processor) if c)}", ""]
    if processor:
        flag = remote if processor in CONFIG_READERS else ""
        code.append(f'processor = {processor}.from_pretrained("{STUDENT_REF}"{flag})')
    code.append(f'model = {auto}.from_pretrained("{STUDENT_REF}"{remote})')
    lines = ["## How to load it", "", "With transformers:", "", "```python", *code, "```"]
    if heterogeneous:
        tokenizer = " (`AutoTokenizer` reads the config first, so it takes the flag too)" if processor in CONFIG_READERS else ""
        lines += [
            "",
            f"Its layers differ in size, so its config is `{record.get('model_type')}`, whose classes are in the "
            f"folder's modeling file: `trust_remote_code=True` runs that file{tokenizer}. After `import compress` "
            "(encoder-compress) the classes are registered and the flag is not needed.",
        ]
    if sentence:
        lines += [
            "",
            "With sentence-transformers (the teacher's pooling and normalisation are in the folder):",
            "",
            "```python",
            "from sentence_transformers import SentenceTransformer",
            "",
            f'model = SentenceTransformer("{STUDENT_REF}"{remote})',
            'embeddings = model.encode(["A sentence to embed."])',
            "```",
        ]
    return lines


def model_card(
    record: Mapping[str, Any], teacher_card: Mapping[str, Any], speech: bool, sentence: bool, processor: str | None
) -> str:
    """The card's text: YAML front matter, then the sections; ``processor`` names the class loading the processor.

    A student saved without a fold's record (``save_student`` with no ``record``) gets the metadata and
    how to load it only: what was removed is not known.
    """
    structure = Structure.from_dict(record["structure"]) if "structure" in record else None
    front = yaml.safe_dump(card_metadata(record, teacher_card, speech, sentence), sort_keys=False, allow_unicode=True)
    sections = [
        _intro_section(record, speech),
        _removed_section(record, structure) if structure else [],
        _structure_section(structure) if structure else [],
        _measured_section(record.get("metrics", {})),
        _usage_section(record, speech, sentence, processor),
    ]
    body = "\n\n".join("\n".join(section) for section in sections if section)
    return f"---\n{front}---\n\n{body}\n"


def write_model_card(folder: Path, record: Mapping[str, Any], modality: str) -> Path:
    """Write ``README.md`` into a student folder that holds everything else already.

    The teacher's own card is read from the folder the record names (when it is on this machine);
    the folder's ``modules.json`` makes it a sentence-transformers card.
    """
    teacher_folder = recorded_teacher_folder(record)
    teacher_card = read_front_matter(teacher_folder / CARD_FILE) if teacher_folder else {}
    processor = next((cls for name, cls in PROCESSORS.items() if (folder / name).is_file()), None)
    sentence = (folder / MODULES_FILE).is_file()
    path = folder / CARD_FILE
    path.write_text(model_card(record, teacher_card, modality == "speech", sentence, processor), encoding="utf-8")
    return path
