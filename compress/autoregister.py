"""Register the student classes with transformers' Auto classes as soon as transformers can take them.

``import compress`` must stay light (``compress recipes`` answers at once), but a user who imports
compress and then calls ``AutoModel.from_pretrained(student_dir)`` must get the heterogeneous
student classes without ``trust_remote_code``. Registering imports the student modeling files, so
it waits until transformers is in use: a meta-path finder wraps the loader of every transformers
module and counts the ones being imported; when the outermost has finished (no transformers module
is half-imported, so the student files can import what they need), the students are registered and
the finder steps aside.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

_state = {"registered": False, "loading": 0}


def _register() -> None:
    """Import ``compress.students``, which registers the students when its import finishes."""
    _state["registered"] = True
    import compress.students  # noqa: F401  (may be half-imported here: it imports transformers first)


class _RegisterAfterTransformers(importlib.abc.MetaPathFinder):
    """Finds transformers modules as the path finder does, and registers once their imports are done."""

    def find_spec(self, name: str, path: Sequence[str] | None = None, target: ModuleType | None = None) -> Any:
        if name != "transformers" and not name.startswith("transformers."):
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path, target)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run_module = spec.loader.exec_module

        def exec_module(module: ModuleType) -> None:
            _state["loading"] += 1
            try:
                run_module(module)
            finally:
                _state["loading"] -= 1
            if _state["loading"] == 0 and not _state["registered"]:
                if self in sys.meta_path:
                    sys.meta_path.remove(self)
                _register()

        spec.loader.exec_module = exec_module
        return spec


def register_students_on_use() -> None:
    """Register the students now if transformers is imported already, else once it is."""
    if "transformers" in sys.modules:
        _register()
    elif not any(isinstance(finder, _RegisterAfterTransformers) for finder in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterTransformers())
