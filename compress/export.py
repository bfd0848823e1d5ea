"""Export and load students: safetensors, config, processor and a compression.json record."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import transformers
from transformers import AutoConfig, PreTrainedModel

from compress.errors import OutputDirError
from compress.students import STUDENT_FAMILIES, remote_code_for

RECORD_FILE = "compression.json"
TRAINING_LOG_FILE = "training_log.json"


def check_output_dir(out: Path, overwrite: bool, protected: list[str | Path] = ()) -> None:
    """Refuse a non-empty folder unless ``overwrite``; never replace a ``protected`` one (the teacher)."""
    out = Path(out)
    for path in protected:
        if path and Path(path).exists() and out.resolve() == Path(path).resolve():
            raise OutputDirError(f"output directory {out} is the teacher's folder; choose another --out directory")
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"output path {out} exists and is a file; choose a directory path")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OutputDirError(
            f"output directory {out} is not empty; choose a new directory, or pass overwrite=True "
            "(CLI: --overwrite) to replace its contents"
        )


def _unique_parameters(model: PreTrainedModel) -> int:
    return sum(p.numel() for p in model.parameters())


def save_student(
    student: PreTrainedModel,
    out_dir: str | Path,
    processor: Any = None,
    overwrite: bool = False,
    record: dict | None = None,
) -> Path:
    """Write ``student`` to ``out_dir`` so ``AutoModel.from_pretrained`` loads it.

    Stock-shaped students get the family's stock config. Heterogeneous ones get a config with an
    ``auto_map`` and the self-contained modeling file, so ``trust_remote_code=True`` loads them with
    only torch and transformers. Weights are safetensors. The processor (tokenizer / feature
    extractor) is saved beside them, and ``compression.json`` records teacher, recipe, structure and
    parameter counts. The folder appears complete or not at all: it is written beside and renamed.
    """
    out = Path(out_dir)
    record = {**getattr(student, "compression_record", {}), **(record or {})}
    check_output_dir(out, overwrite, protected=[record.get("teacher", "")])
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        remote = remote_code_for(type(student.config))
        if remote is not None:
            student.config.auto_map = remote[0]
        student.save_pretrained(partial)
        if remote is not None:
            shutil.copy2(remote[1], partial / remote[1].name)
        if processor is not None:
            processor.save_pretrained(partial)
        record.update(
            {
                "format": "heterogeneous" if remote is not None else "stock",
                "model_type": student.config.model_type,
                "architecture": type(student).__name__,
                "student_parameters": _unique_parameters(student),
            }
        )
        (partial / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        partial.rename(out)
    finally:
        if partial.exists():
            shutil.rmtree(partial)
    return out


def load_student(out_dir: str | Path, **kwargs: Any) -> PreTrainedModel:
    """Load a saved student with the class it was saved as (same weights as ``AutoModel``)."""
    config = AutoConfig.from_pretrained(out_dir)
    architecture = (config.architectures or [None])[0]
    local = {cls.__name__: cls for _, models, _ in STUDENT_FAMILIES for cls in models.values()}
    cls = local.get(architecture) or getattr(transformers, architecture or "", None) or transformers.AutoModel
    return cls.from_pretrained(out_dir, **kwargs)
