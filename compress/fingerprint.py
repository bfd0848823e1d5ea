"""Fingerprints of what a run depends on (recipe, teacher, data), so a resume can refuse a changed run.

Stored beside the checkpoints when a run starts; ``--resume`` compares and names what changed. The
teacher's hash (config and weights) also identifies it in ``compression.json``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from compress.errors import OutputDirError

FINGERPRINT_FILE = "fingerprint.json"


def teacher_hash(model: torch.nn.Module) -> str:
    """sha256 of the teacher's config and of every tensor of its state (names, shapes, dtypes, values)."""
    digest = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None:
        digest.update(config.to_json_string(use_diff=False).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def data_identity(data: str | Path | None) -> str:
    """A local file or folder by absolute path, size and modification time of its files; else the name given."""
    if data is None:
        return "none"
    path = Path(data)
    if not path.exists():
        return str(data)
    files = sorted(p for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file())
    listing = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def run_fingerprint(recipe: dict[str, Any], teacher: torch.nn.Module, data: str | Path | None) -> dict[str, Any]:
    return {"recipe": recipe, "teacher": teacher_hash(teacher), "data": data_identity(data)}


def write_fingerprint(folder: Path, fingerprint: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / FINGERPRINT_FILE).write_text(json.dumps(fingerprint, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def check_fingerprint(folder: Path, fingerprint: dict[str, Any]) -> None:
    """Refuse to resume the run in ``folder`` when its recipe, teacher or data differ from ``fingerprint``."""
    stored_file = folder / FINGERPRINT_FILE
    try:
        stored = json.loads(stored_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise OutputDirError(
            f"cannot resume: {stored_file} is missing or damaged, so the earlier run cannot be checked; "
            "start again with --overwrite"
        ) from None
    changed = []
    old, new = _flatten(stored.get("recipe", {})), _flatten(fingerprint["recipe"])
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if keys:
        changed.append("recipe keys " + ", ".join(f"{k} ({old.get(k)!r} -> {new.get(k)!r})" for k in keys[:5]))
    if stored.get("teacher") != fingerprint["teacher"]:
        changed.append("the teacher (its config or weights)")
    if stored.get("data") != fingerprint["data"]:
        changed.append("the training data")
    if changed:
        raise OutputDirError(
            f"cannot resume: the earlier run used other settings, changed: {'; '.join(changed)}. Resume with the "
            "same command, or start again with --overwrite"
        )
