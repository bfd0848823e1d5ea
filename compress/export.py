"""Export and load students: safetensors, config, processor, a compression.json record and a model card."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import transformers
from transformers import AutoConfig, PreTrainedModel

from compress.adapters import modality_of
from compress.errors import IntegrityError
from compress.folding import CompressionRecord
from compress.guards import check_finite_state
from compress.model_card import write_model_card
from compress.outputs import StagedOutput, check_output_path
from compress.sentence import SentencePipeline, copy_pipeline
from compress.students import STUDENT_FAMILIES, remote_code_for

RECORD_FILE = "compression.json"
TRAINING_LOG_FILE = "training_log.json"
#: the files whose sha256 compression.json records: the weights and the modeling code
CHECKED_SUFFIXES = (".safetensors", ".py")


def _unique_parameters(model: PreTrainedModel) -> int:
    return sum(p.numel() for p in model.parameters())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_student(
    student: PreTrainedModel,
    folder: Path,
    processor: Any = None,
    record: CompressionRecord | Mapping[str, Any] | None = None,
    sentence_from: str | Path | SentencePipeline | None = None,
) -> None:
    """Write the student's files into ``folder`` (new or empty): weights, config, code, processor, record.

    ``sentence_from``: a sentence-transformers teacher folder or its pipeline (``compress.sentence``), which
    the student folder gets too (pooling, normalisation, max_seq_length), sized to the student.

    ``compression.json`` holds ``record``, the student's format and parameter count, and the sha256
    of every weight and code file written, which ``load_student`` checks. ``README.md`` is the model
    card made from that record (``compress.model_card``).
    """
    record = record.to_dict() if isinstance(record, CompressionRecord) else dict(record or {})
    check_finite_state(student, fix="lower the learning rates (train.lr, finetune.lr) and run again")
    remote = remote_code_for(type(student.config))
    if remote is not None:
        student.config.auto_map = remote[0]
    student.save_pretrained(folder)
    for source in remote[1] if remote is not None else []:
        shutil.copy2(source, folder / source.name)
    if processor is not None:
        processor.save_pretrained(folder)
    copy_pipeline(sentence_from, folder, student.config.hidden_size)
    checked = sorted(p for p in folder.iterdir() if p.suffix in CHECKED_SUFFIXES)
    record.update(
        {
            "format": "heterogeneous" if remote is not None else "stock",
            "model_type": student.config.model_type,
            "architecture": type(student).__name__,
            "student_parameters": _unique_parameters(student),
            "files": {p.name: _sha256(p) for p in checked},
        }
    )
    (folder / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    write_model_card(folder, record, modality_of(student))


def save_student(
    student: PreTrainedModel,
    out_dir: str | Path,
    processor: Any = None,
    overwrite: bool = False,
    record: CompressionRecord | Mapping[str, Any] | None = None,
    sentence_from: str | Path | SentencePipeline | None = None,
) -> Path:
    """Write ``student`` to ``out_dir`` so ``AutoModel.from_pretrained`` loads it.

    Stock-shaped students get the family's stock config. Heterogeneous ones get a config with an
    ``auto_map`` and the self-contained modeling file, so ``trust_remote_code=True`` loads them with
    only torch and transformers. Weights are safetensors (never non-finite ones). The processor
    (tokenizer / feature extractor) is saved beside them, and ``compression.json`` holds ``record``
    (the fold's ``CompressionRecord``: teacher, recipe, structure). The folder appears complete or not
    at all: it is built in a staging folder beside it and moved into place; ``overwrite`` replaces an
    earlier student only, once the new one is complete. ``sentence_from`` names a sentence-transformers
    teacher folder, or gives its pipeline (``compress.sentence.teacher_pipeline``), that the student folder
    gets (see ``write_student``).
    """
    named = record.to_dict() if isinstance(record, CompressionRecord) else dict(record or {})
    teacher = [named.get(key) or "" for key in ("teacher_path", "teacher")]
    out = check_output_path(out_dir, protected=teacher, overwrite=overwrite)
    with StagedOutput(out) as staged:
        write_student(student, staged.path, processor, record, sentence_from)
        staged.commit()
    return out


def verify_files(out_dir: str | Path) -> None:
    """Refuse a student folder whose weight or code files differ from the sha256 its record lists."""
    folder = Path(out_dir)
    try:
        listed = json.loads((folder / RECORD_FILE).read_text(encoding="utf-8")).get("files", {})
    except (OSError, ValueError, AttributeError):
        return  # no record of this library (a folder saved otherwise): nothing to check against
    for name, expected in listed.items():
        path = folder / name
        if not path.is_file() or _sha256(path) != expected:
            state = "is missing" if not path.is_file() else "changed since export"
            raise IntegrityError(
                f"{path} {state} (its sha256 no longer matches {RECORD_FILE}); re-export the student, "
                "or load it with verify=False if you changed it on purpose"
            )


def load_student(out_dir: str | Path, verify: bool = True, **kwargs: Any) -> PreTrainedModel:
    """Load a saved student with the class it was saved as (same weights as ``AutoModel``).

    With ``verify`` the weight and code files are first checked against the sha256 in ``compression.json``.
    """
    if verify:
        verify_files(out_dir)
    config = AutoConfig.from_pretrained(out_dir)
    architecture = (config.architectures or [None])[0]
    local = {cls.__name__: cls for _, models, _ in STUDENT_FAMILIES for cls in models.values()}
    cls = local.get(architecture) or getattr(transformers, architecture or "", None) or transformers.AutoModel
    return cls.from_pretrained(out_dir, **kwargs)
