"""Output-folder policy: which ``--out`` folders are safe, and writing one completely or not at all.

A student is built in a hidden staging folder beside ``out`` and moved into place only when complete,
so a failed, interrupted or killed run leaves the previous ``out`` exactly as it was. ``--overwrite``
only ever replaces an earlier student, and never a folder that holds the teacher, the data, the
working directory or the home directory. Resume checkpoints live beside ``out`` (``OUT.checkpoints``),
never inside the exported folder.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import re
import secrets
import shutil
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from compress.errors import OutputDirError

logger = logging.getLogger(__name__)

#: the file every student folder this library writes holds; its presence marks a replaceable earlier student
STUDENT_MARKER = "compression.json"
#: the summary a multi-size run writes beside its students (``OUT/sparsity-0.50`` ...): it marks that folder alike
SUMMARY_MARKER = "students.json"
#: the held-out fidelity each stage records (``metrics`` of compression.json, rows of students.json), in stage order
FIDELITY_KEYS = ("fidelity_after_prune", "fidelity_after_reconstruct", "fidelity_after_finetune")
#: the hidden siblings the library creates next to ``out`` (``partial`` is what save_student used before the staging folders)
_SIBLING_KINDS = ("staging", "old", "partial")
_TOKEN_HEX = 8


def _resolve(path: str | os.PathLike[str]) -> Path:
    """Absolute, with ``~`` expanded and symlinks followed (as far as the path exists)."""
    return Path(path).expanduser().resolve()


def _contains(folder: Path, path: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies inside it (both resolved)."""
    return path == folder or folder in path.parents


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_writable(out: Path) -> None:
    """Refuse when the staging folder cannot be created beside ``out`` (or its parents cannot be made).

    ``os.access`` alone is not enough (root, ACLs, read-only mounts), so a temporary file is actually
    created and removed in the nearest existing parent.
    """
    parent = _nearest_existing(out.parent)
    if not parent.is_dir():
        raise OutputDirError(
            f"cannot create output folder {out}: {parent} is a file, not a folder; pass an --out path under a folder"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputDirError(
            f"cannot create output folder {out}: no write permission in {parent}; pass an --out path you can write to"
        )
    try:
        with tempfile.NamedTemporaryFile(dir=parent, prefix=f".{out.name}.probe-"):
            pass
    except OSError as err:
        raise OutputDirError(
            f"cannot create output folder {out}: writing in {parent} failed ({err.strerror}); pass an --out path you can write to"
        ) from None


def check_output_path(out: str | os.PathLike[str], protected: Iterable[str | os.PathLike[str]], overwrite: bool) -> Path:
    """Refuse an ``out`` that a run could lose the user's files in; return it resolved.

    Refused: ``out`` is or contains a ``protected`` path (teacher folder, data file or folder; empty or
    missing ones, such as hub ids, are ignored), the working directory or the home directory; ``out``
    is a file; ``out`` is non-empty and not an earlier student (a folder holding ``compression.json``);
    ``out`` is an earlier student and ``overwrite`` is off; its folder cannot be written. Nothing is
    changed on disk.
    """
    out = _resolve(out)
    places = [(_resolve(Path.cwd()), "the working directory"), (_resolve(Path.home()), "your home directory")]
    inputs = [(_resolve(p), "the run's input (teacher or data)") for p in protected if p and Path(p).expanduser().exists()]
    for path, what in places + inputs:
        if _contains(out, path):
            # a student inside an input folder would be read as input next time: suggest a sibling there
            example = path.with_name(f"{path.name}-student") if path == out and (path, what) in inputs else out / "student"
            raise OutputDirError(
                f"refusing to write the student to {out}: it {'is' if path == out else 'contains'} {what} {path}; "
                f"pass an --out folder of its own, e.g. {example}"
            )
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"output path {out} is a file, not a folder; pass a folder path as --out")
    if out.is_dir() and any(out.iterdir()):
        if not any((out / marker).is_file() for marker in (STUDENT_MARKER, SUMMARY_MARKER)):
            raise OutputDirError(
                f"output folder {out} is not empty and holds no student of this library (no {STUDENT_MARKER} "
                f"or {SUMMARY_MARKER}); "
                "pass a new or empty --out folder (--overwrite only replaces an earlier student)"
            )
        if not overwrite:
            raise OutputDirError(
                f"output folder {out} holds an earlier student; pass --overwrite (overwrite=True) to replace it "
                "once the new one is complete, or another --out folder"
            )
    _check_writable(out)
    return out


def _sibling(out: Path, kind: str) -> Path:
    return out.parent / f".{out.name}.{kind}-{secrets.token_hex(_TOKEN_HEX // 2)}"


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``); False if unsupported."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None) if sys.platform == "linux" else None
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))


class StagedOutput:
    """A fresh hidden folder beside ``out`` to write a student into; ``commit`` moves it into place.

    At every instant ``out`` names either the previous folder or the complete new one: an exception,
    a crash or SIGKILL before ``commit`` leaves ``out`` untouched (a stale ``.NAME.staging-*`` folder
    at most, which ``remove_stale_siblings`` removes). As a context manager, whatever was not
    committed when the block ends is discarded::

        with StagedOutput(out) as staged:
            write_student(staged.path)
            staged.commit()
    """

    def __init__(self, out: str | os.PathLike[str]) -> None:
        self.out = _resolve(out)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.path = _sibling(self.out, "staging")
        self.path.mkdir()
        self.committed = False

    def commit(self) -> Path:
        """Put the staged folder in place of ``out`` (replacing any previous one); return ``out``."""
        if self.committed or not self.path.is_dir():
            raise OutputDirError(f"staging folder {self.path} was already committed or discarded; stage the student again")
        previous = None
        if not self.out.exists():
            self.path.rename(self.out)
        elif _exchange(self.path, self.out):
            previous = self.path  # the swap left the previous out under the staging name
        else:
            previous = _sibling(self.out, "old")
            self.out.rename(previous)
            try:
                self.path.rename(self.out)
            except BaseException:
                previous.rename(self.out)
                raise
        self.committed = True
        if previous is not None:
            shutil.rmtree(previous, ignore_errors=True)
            if previous.exists():
                logger.warning("the new student is in %s, but the previous one could not be removed from %s", self.out, previous)
        return self.out

    def discard(self) -> None:
        """Remove the staging folder; ``out`` stays as it was."""
        if not self.committed:
            shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> StagedOutput:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()


def remove_stale_siblings(out: str | os.PathLike[str]) -> list[Path]:
    """Remove staging / old / partial folders an earlier killed run left beside ``out``; return them.

    Only hidden siblings named as this library names them (``.NAME.staging-<8 hex>`` ...) are touched.
    If ``out`` itself is missing and an ``.NAME.old-*`` folder exists (a crash in the middle of a
    non-atomic commit), that folder is renamed back to ``out`` instead of being removed. Call it only
    when no other run writes to the same ``out``.
    """
    out = _resolve(out)
    if not out.parent.is_dir():
        return []
    pattern = re.compile(rf"\.{re.escape(out.name)}\.({'|'.join(_SIBLING_KINDS)})-[0-9a-f]{{{_TOKEN_HEX}}}")
    found = sorted(p for p in out.parent.iterdir() if pattern.fullmatch(p.name) and p.is_dir() and not p.is_symlink())
    olds = [p for p in found if pattern.fullmatch(p.name).group(1) == "old"]
    if olds and not out.exists():
        restored = max(olds, key=lambda p: p.stat().st_mtime)
        restored.rename(out)
        logger.warning("restored %s from %s, left by an interrupted commit", out, restored)
        found.remove(restored)
    for path in found:
        shutil.rmtree(path)
        logger.info("removed %s, left by an earlier run", path)
    return found


def checkpoints_dir(out: str | os.PathLike[str]) -> Path:
    """Where a run writing ``out`` keeps its resume checkpoints: the sibling ``OUT.checkpoints``."""
    out = _resolve(out)
    return out.parent / f"{out.name}.checkpoints"


def remove_checkpoints(out: str | os.PathLike[str]) -> None:
    """Remove ``out``'s checkpoints folder, once the student is committed (unless the user keeps them)."""
    shutil.rmtree(checkpoints_dir(out), ignore_errors=True)
