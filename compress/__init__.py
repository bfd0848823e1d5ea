"""Compress Hugging Face encoders: attach gates to a copy of the teacher, train, fold, export.

    import compress
    recipe = compress.load_recipe("bert-l0")
    job = compress.attach(teacher, recipe)
    student, record = compress.fold(job)
    compress.save_student(student, "out", processor=tokenizer, record=record)

The names below load on first use (``compress recipes`` needs neither torch nor transformers);
the heterogeneous student classes are registered with transformers' Auto classes as soon as
transformers is in use, so ``AutoModel.from_pretrained`` loads them after ``import compress``.
"""

from __future__ import annotations

import importlib
from typing import Any

from compress.autoregister import register_students_on_use
from compress.errors import CompressError, OutputDirError, RecipeError, TargetError, UnsupportedModelError

#: public name -> the module that defines it
_LAZY = {
    "CompressionJob": "compress.job",
    "attach": "compress.job",
    "attach_generic": "compress.generic",
    "fold": "compress.folding",
    "CompressionRecord": "compress.folding",
    "GatedModel": "compress.gated",
    "load_student": "compress.export",
    "save_student": "compress.export",
    "run": "compress.pipeline",
    "Recipe": "compress.recipe",
    "bundled_recipes": "compress.recipe",
    "load_recipe": "compress.recipe",
    "Structure": "compress.structure",
    "prune_vocabulary": "compress.vocabulary",
}

__all__ = ["CompressError", "OutputDirError", "RecipeError", "TargetError", "UnsupportedModelError", *_LAZY]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'compress' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


register_students_on_use()
