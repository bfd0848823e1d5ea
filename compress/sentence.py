"""sentence-transformers pipelines in and out: a teacher's modules and pooling, written again for its student.

A sentence-transformers teacher (a folder with ``modules.json``, or a ``SentenceTransformer`` object)
runs the encoder, then pooling, then optionally normalisation. The student folder gets the same
pipeline, with the pooling's dimension set to the student's hidden size, so
``SentenceTransformer(student_dir)`` embeds as the teacher's pipeline does; the run scores fidelity
with the teacher's pooling (``Pooling``). Only the module types the library can carry over are
accepted: a ``Dense`` layer reads the teacher's pooled width, which the student no longer has.
The folder's JSON files are read here directly, so nothing of sentence-transformers is imported.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from compress.errors import UnsupportedModelError

MODULES_FILE = "modules.json"
#: the module kinds a student folder can carry over unchanged (but the pooling width), by class name
TRANSFORMER, POOLING, NORMALIZE = "Transformer", "Pooling", "Normalize"
#: the pipeline's description of the encoder module, in the folder's root
TRANSFORMER_CONFIG = "sentence_bert_config.json"
#: files of the folder's root that describe the pipeline (besides modules.json)
ROOT_FILES = (TRANSFORMER_CONFIG, "config_sentence_transformers.json")
#: what a module's own folder holds its settings in
MODULE_CONFIG = "config.json"
#: tokens a fidelity text is cut to when the teacher names no length (a plain transformers teacher)
DEFAULT_MAX_LENGTH = 128
#: ``model_max_length`` at or above this is the tokenizer's "no limit" placeholder, not a length
NO_LIMIT = 1_000_000


def _first(hidden: Tensor, mask: Tensor) -> Tensor:
    """The first non-padding token of each row (CLS with right or left padding)."""
    return hidden[torch.arange(len(hidden)), mask.int().argmax(1)]


def _last(hidden: Tensor, mask: Tensor) -> Tensor:
    """The last non-padding token of each row."""
    return hidden[torch.arange(len(hidden)), mask.shape[1] - 1 - mask.int().flip(1).argmax(1)]


def _masked_sum(hidden: Tensor, mask: Tensor, weights: Tensor) -> Tensor:
    """Sum over tokens of ``hidden`` weighted by ``weights`` (zero on padding), over the sum of the weights."""
    weights = (weights * mask).unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


def _mean(hidden: Tensor, mask: Tensor) -> Tensor:
    return _masked_sum(hidden, mask, torch.ones_like(mask))


def _mean_sqrt_len(hidden: Tensor, mask: Tensor) -> Tensor:
    """The sum over tokens divided by the square root of the number of tokens."""
    return _mean(hidden, mask) * mask.sum(1, keepdim=True).to(hidden.dtype).sqrt()


def _weighted_mean(hidden: Tensor, mask: Tensor) -> Tensor:
    """Tokens weighted 1, 2, 3, ... from the first non-padding one."""
    positions = torch.arange(1, mask.shape[1] + 1, device=mask.device).unsqueeze(0)
    return _masked_sum(hidden, mask, positions - mask.int().argmax(1, keepdim=True))


def _max(hidden: Tensor, mask: Tensor) -> Tensor:
    return hidden.masked_fill(mask.unsqueeze(-1) == 0, float("-inf")).max(1).values


#: every pooling mode of sentence-transformers, by its name there, and how it pools (hidden, mask)
POOLERS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "cls": _first,
    "max": _max,
    "mean": _mean,
    "mean_sqrt_len_tokens": _mean_sqrt_len,
    "weightedmean": _weighted_mean,
    "lasttoken": _last,
}
#: the older config's one flag per mode (sentence-transformers < 5), in the order the modes are concatenated
LEGACY_FLAGS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}


@dataclass(frozen=True)
class Pooling:
    """How a text's last hidden states become its embedding, as the teacher's pipeline does it.

    ``modes`` are sentence-transformers pooling modes, concatenated in order; ``normalize``
    scales the result to unit length; texts are cut to ``max_length`` tokens. ``source`` says
    where this came from, for the record next to the fidelity figures.
    """

    modes: tuple[str, ...] = ("mean",)
    normalize: bool = False
    max_length: int = DEFAULT_MAX_LENGTH
    source: str = "mean pooling: the teacher is a plain transformers model"

    def __post_init__(self) -> None:
        unknown = [mode for mode in self.modes if mode not in POOLERS]
        if unknown or not self.modes:
            raise UnsupportedModelError(
                f"the teacher's pipeline pools with {list(self.modes)}; the library embeds with the pooling modes "
                f"{list(POOLERS)} only: save the teacher with one of those (models.Pooling(dim, pooling_mode=...))"
            )

    def __call__(self, hidden: Tensor, mask: Tensor) -> Tensor:
        """The (N, len(modes) * hidden) embeddings of (N, T, hidden) states over a (N, T) attention mask."""
        pooled = torch.cat([POOLERS[mode](hidden, mask) for mode in self.modes], dim=-1)
        return F.normalize(pooled, dim=-1) if self.normalize else pooled

    def to_dict(self) -> dict[str, Any]:
        return {"modes": list(self.modes), "normalize": self.normalize, "max_length": self.max_length, "source": self.source}


MEAN_POOLING = Pooling()
PIPELINE_SOURCE = "the teacher's sentence-transformers pipeline"


def pooling_modes(config: dict[str, Any]) -> tuple[str, ...]:
    """The pooling modes of a Pooling module's config: ``pooling_mode`` (a name or a list) or the older flags."""
    if "pooling_mode" in config:
        mode = config["pooling_mode"]
        return (mode,) if isinstance(mode, str) else tuple(mode)
    flags = [key for key, on in config.items() if key.startswith("pooling_mode_") and on]
    unknown = [key for key in flags if key not in LEGACY_FLAGS]
    if unknown:
        raise UnsupportedModelError(
            f"the teacher's pooling config sets {unknown}, a mode the library does not know; it embeds with "
            f"{list(POOLERS)} only: save the teacher with one of those"
        )
    return tuple(mode for key, mode in LEGACY_FLAGS.items() if key in flags) or ("mean",)


@dataclass(frozen=True)
class SentencePipeline:
    """A teacher's sentence-transformers modules, their configs, the root files and how it pools."""

    modules: list[dict[str, Any]]
    #: the config of each module saved in its own folder (Pooling, Normalize), by that folder
    configs: dict[str, dict[str, Any]]
    root_files: dict[str, dict[str, Any]]
    pooling: Pooling


def _kind(module_type: str) -> str | None:
    """Which carried-over kind a ``modules.json`` type is (any sentence-transformers version), else None."""
    name = module_type.rpartition(".")[2]
    return name if module_type.startswith("sentence_transformers.") and name in (TRANSFORMER, POOLING, NORMALIZE) else None


def _check_modules(modules: list[dict[str, Any]], teacher: str) -> None:
    unknown = [m.get("type") for m in modules if _kind(m.get("type", "")) is None]
    if unknown:
        raise UnsupportedModelError(
            f"the sentence-transformers teacher {teacher} has modules {unknown}, which read the teacher's width; "
            "the student can carry over Transformer, Pooling and Normalize only: compress the encoder folder "
            "(the Transformer module) and add those modules again after training"
        )


def _pipeline(
    modules: list[dict[str, Any]], configs: dict[str, dict[str, Any]], roots: dict[str, dict[str, Any]], max_length: int
) -> SentencePipeline:
    """The pipeline of checked ``modules``, with the Pooling module's modes and whether a Normalize follows."""
    kinds = {_kind(m["type"]): m["path"] for m in modules}
    if POOLING not in kinds:
        raise UnsupportedModelError(
            f"the sentence-transformers teacher has no Pooling module (modules {[m['type'] for m in modules]}), so it "
            "gives no sentence embedding: add one (models.Pooling) and save it again, or pass the encoder folder alone"
        )
    pooling = Pooling(pooling_modes(configs.get(kinds[POOLING], {})), NORMALIZE in kinds, max_length, PIPELINE_SOURCE)
    return SentencePipeline(modules, configs, roots, pooling)


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _usable_length(length: int | None, positions: int | None) -> int:
    """``length`` when it is one (not None or the tokenizer's no-limit placeholder), else the position limit."""
    if length is None or length >= NO_LIMIT:
        return int(positions or DEFAULT_MAX_LENGTH)
    return int(length)


def _folder_max_length(folder: Path, transformer_config: dict[str, Any]) -> int:
    """The tokens sentence-transformers cuts a text to: its config's, else the tokenizer's, else the position limit."""
    length = transformer_config.get("max_seq_length")
    if length is None:
        length = (_read_json(folder / "tokenizer_config.json") or {}).get("model_max_length")
    return _usable_length(length, (_read_json(folder / "config.json") or {}).get("max_position_embeddings"))


def read_pipeline(folder: str | Path | None) -> SentencePipeline | None:
    """The sentence-transformers pipeline of a teacher folder, or None when it is a plain transformers folder."""
    if folder is None or not (Path(folder) / MODULES_FILE).is_file():
        return None
    folder = Path(folder)
    modules = json.loads((folder / MODULES_FILE).read_text(encoding="utf-8"))
    _check_modules(modules, str(folder))
    configs = {}
    for module in modules:
        config = _read_json(folder / module["path"] / MODULE_CONFIG) if module["path"] else None
        if config is not None:
            configs[module["path"]] = config
    roots = {name: _read_json(folder / name) for name in ROOT_FILES if (folder / name).is_file()}
    return _pipeline(modules, configs, roots, _folder_max_length(folder, roots.get(TRANSFORMER_CONFIG, {})))


def is_sentence_transformer(model: Any) -> bool:
    """Whether ``model`` is a ``SentenceTransformer`` (without importing sentence-transformers: none is, if unloaded)."""
    library = sys.modules.get("sentence_transformers")
    return library is not None and isinstance(model, library.SentenceTransformer)


def _object_modules(model: torch.nn.Module) -> list[dict[str, Any]]:
    """``modules.json`` as ``SentenceTransformer.save`` writes it for ``model``, checked."""
    modules = []
    for idx, (name, module) in enumerate(model.named_children()):
        path = "" if idx == 0 and getattr(module, "save_in_root", False) else f"{idx}_{type(module).__name__}"
        modules.append({"idx": idx, "name": name, "path": path, "type": f"{type(module).__module__}.{type(module).__name__}"})
    _check_modules(modules, type(model).__name__)
    if _kind(modules[0]["type"]) != TRANSFORMER:
        raise UnsupportedModelError(
            f"the SentenceTransformer's first module is {modules[0]['type']}, not a Transformer: pass a pipeline that "
            "starts with its encoder (models.Transformer)"
        )
    return modules


def sentence_encoder(model: Any) -> Any:
    """The Hugging Face encoder of a ``SentenceTransformer`` (its first module's ``auto_model``), its modules checked."""
    _object_modules(model)
    return model[0].auto_model


def object_pipeline(model: Any) -> SentencePipeline:
    """The pipeline of a ``SentenceTransformer`` object, as reading the folder it saves to would give."""
    modules = _object_modules(model)
    children = list(model.children())
    configs = {m["path"]: child.get_config_dict() for m, child in zip(modules, children) if m["path"]}
    roots = {TRANSFORMER_CONFIG: children[0].get_config_dict(), ROOT_FILES[1]: model._get_model_config()}
    positions = getattr(children[0].auto_model.config, "max_position_embeddings", None)
    return _pipeline(modules, configs, roots, _usable_length(model.max_seq_length, positions))


def teacher_pipeline(teacher: Any) -> SentencePipeline | None:
    """The sentence-transformers pipeline of a teacher folder or ``SentenceTransformer``; None for any other teacher."""
    if is_sentence_transformer(teacher):
        return object_pipeline(teacher)
    return read_pipeline(teacher) if isinstance(teacher, (str, Path)) else None


def write_pipeline(pipeline: SentencePipeline, folder: Path, hidden_size: int) -> None:
    """Write ``pipeline`` into a student folder whose encoder has ``hidden_size`` units."""
    (folder / MODULES_FILE).write_text(json.dumps(pipeline.modules, indent=2) + "\n", encoding="utf-8")
    for module in pipeline.modules:
        if _kind(module["type"]) == TRANSFORMER or not module["path"]:
            continue
        target = folder / module["path"]
        target.mkdir(parents=True, exist_ok=True)
        config = pipeline.configs.get(module["path"])
        if config is None:
            continue
        if _kind(module["type"]) == POOLING:
            width = "embedding_dimension" if "embedding_dimension" in config else "word_embedding_dimension"
            config = {**config, width: hidden_size}
        (target / MODULE_CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    for name, content in pipeline.root_files.items():
        (folder / name).write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")


def copy_pipeline(source: str | Path | SentencePipeline | None, student_folder: Path, hidden_size: int) -> bool:
    """Give the student folder the teacher's sentence-transformers pipeline (a pipeline, or its folder), if any."""
    pipeline = source if isinstance(source, SentencePipeline) or source is None else read_pipeline(source)
    if pipeline is None:
        return False
    write_pipeline(pipeline, student_folder, hidden_size)
    return True
