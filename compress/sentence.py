"""sentence-transformers pipelines in and out: a teacher folder's modules, written again for its student.

A sentence-transformers teacher folder (``modules.json``) runs the encoder, then pooling, then
optionally normalisation. The student folder gets the same pipeline, with the pooling's dimension set
to the student's hidden size, so ``SentenceTransformer(student_dir)`` embeds as the teacher's
pipeline does. Only the module types the library can carry over are accepted: a ``Dense`` layer
reads the teacher's pooled width, which the student no longer has.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compress.errors import UnsupportedModelError

MODULES_FILE = "modules.json"
#: module types of sentence-transformers that a student folder can carry over unchanged (but the pooling width)
TRANSFORMER, POOLING, NORMALIZE = (f"sentence_transformers.models.{n}" for n in ("Transformer", "Pooling", "Normalize"))
#: files of the folder's root that describe the pipeline (besides modules.json)
ROOT_FILES = ("sentence_bert_config.json", "config_sentence_transformers.json")


@dataclass(frozen=True)
class SentencePipeline:
    """The teacher folder's sentence-transformers modules, their configs and the root files."""

    modules: list[dict[str, Any]]
    pooling: dict[str, Any]
    root_files: dict[str, dict[str, Any]]


def read_pipeline(folder: str | Path | None) -> SentencePipeline | None:
    """The sentence-transformers pipeline of a teacher folder, or None when it is a plain transformers folder."""
    if folder is None or not (Path(folder) / MODULES_FILE).is_file():
        return None
    folder = Path(folder)
    modules = json.loads((folder / MODULES_FILE).read_text(encoding="utf-8"))
    unknown = [m["type"] for m in modules if m.get("type") not in (TRANSFORMER, POOLING, NORMALIZE)]
    if unknown:
        raise UnsupportedModelError(
            f"the sentence-transformers teacher {folder} has modules {unknown}, which read the teacher's width; "
            "the student can carry over Transformer, Pooling and Normalize only: compress the encoder folder "
            "(the Transformer module) and add those modules again after training"
        )
    pooling_module = next((m for m in modules if m["type"] == POOLING), None)
    pooling = {}
    if pooling_module is not None:
        pooling = json.loads((folder / pooling_module["path"] / "config.json").read_text(encoding="utf-8"))
    roots = {name: json.loads((folder / name).read_text(encoding="utf-8")) for name in ROOT_FILES if (folder / name).is_file()}
    return SentencePipeline(modules, pooling, roots)


def write_pipeline(pipeline: SentencePipeline, folder: Path, hidden_size: int) -> None:
    """Write ``pipeline`` into a student folder whose encoder has ``hidden_size`` units."""
    (folder / MODULES_FILE).write_text(json.dumps(pipeline.modules, indent=2) + "\n", encoding="utf-8")
    for module in pipeline.modules:
        if module["type"] == TRANSFORMER or not module["path"]:
            continue
        target = folder / module["path"]
        target.mkdir(parents=True, exist_ok=True)
        if module["type"] == POOLING:
            config = {**pipeline.pooling, "word_embedding_dimension": hidden_size}
            (target / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    for name, content in pipeline.root_files.items():
        (folder / name).write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")


def copy_pipeline(teacher_folder: str | Path | None, student_folder: Path, hidden_size: int) -> bool:
    """Give the student folder the teacher folder's sentence-transformers pipeline, if it has one."""
    pipeline = read_pipeline(teacher_folder)
    if pipeline is None:
        return False
    write_pipeline(pipeline, student_folder, hidden_size)
    return True

