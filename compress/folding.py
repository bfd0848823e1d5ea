"""The fold: a job's gated model becomes the dense student, with the record of what was done.

``fold(job)`` returns the student (a plain ``PreTrainedModel``) and a ``CompressionRecord``, which
export writes as ``compression.json``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from compress.fingerprint import teacher_name
from compress.structure import Structure

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from compress.job import CompressionJob


@dataclass
class CompressionRecord:
    """What a fold produced: the teacher it came from, the recipe, the kept structure and indices.

    ``teacher`` is the teacher's hub id where one is known, else its folder or class name
    (``compress.fingerprint.teacher_name``); ``teacher_path`` its local folder when ``teacher`` is a hub
    id; ``teacher_hash`` the hash of its config and weights (``compress.fingerprint.teacher_hash``),
    taken when the job attached. ``metrics`` gathers what the run measured
    afterwards (fidelity, MACs, minutes, ...).
    """

    teacher: str
    teacher_class: str
    recipe: dict[str, Any]
    structure: Structure
    kept_indices: dict[str, list[int]] = field(default_factory=dict)
    kept_layers: list[int] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    teacher_path: str | None = None
    teacher_hash: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``compression.json``); entries that do not apply are left out."""
        data = asdict(self)
        data["structure"] = self.structure.to_dict()
        if self.kept_layers is None:
            del data["kept_layers"]
        else:
            del data["kept_indices"]
        if not self.metrics:
            del data["metrics"]
        for key in ("teacher_path", "teacher_hash"):
            if data[key] is None:
                del data[key]
        return data


def fold(job: CompressionJob) -> tuple[PreTrainedModel, CompressionRecord]:
    """The dense student of ``job`` and its record (the method folds; layer drop truncates)."""
    folded = job.method.fold(job.recipe.export["format"])
    teacher, teacher_path = teacher_name(job.teacher_name)
    record = CompressionRecord(
        teacher=teacher,
        teacher_path=teacher_path,
        teacher_hash=job.teacher_hash,
        teacher_class=type(job.model).__name__,
        recipe=job.recipe.to_dict(),
        structure=folded.structure,
        kept_indices=folded.kept_indices,
        kept_layers=folded.kept_layers,
    )
    return folded.student, record
