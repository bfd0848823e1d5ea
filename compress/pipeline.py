"""``compress.run``: the whole job from a recipe to an exported student."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm
from transformers import PreTrainedModel

from compress.export import check_output_dir, save_student
from compress.job import attach
from compress.recipe import Recipe, load_recipe
from compress.teachers import default_teacher_path, load_teacher

logger = logging.getLogger(__name__)


def run(
    recipe: Recipe | str | Path,
    teacher: PreTrainedModel | str | Path | None = None,
    out: str | Path | None = None,
    processor: Any = None,
    overrides: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Compress ``teacher`` (default: the MiniLM teacher) with ``recipe`` and export to ``out``.

    This version selects a one-shot structure that meets the recipe's target by weight magnitude
    (no training steps yet), folds it and exports the student. Returns the output folder.
    """
    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    if overrides:
        recipe = recipe.override(overrides)
    out = Path(out) if out is not None else Path(f"{recipe.name}-student")
    teacher_dir = None if isinstance(teacher, PreTrainedModel) else (teacher or default_teacher_path())
    check_output_dir(out, overwrite, protected=[teacher_dir] if teacher_dir else [])
    stages = tqdm(total=4, desc=f"compress {recipe.name}", disable=not progress, unit="stage")
    stages.set_postfix_str("load teacher")
    if teacher_dir is not None:
        teacher, tokenizer = load_teacher(teacher_dir)
        processor = processor or tokenizer
    stages.update()
    stages.set_postfix_str("attach + select structure")
    job = attach(teacher, recipe)
    structure = job.prune_to()
    stages.update()
    stages.set_postfix_str("fold")
    student = job.fold()
    stages.update()
    stages.set_postfix_str("export")
    save_student(student, out, processor=processor, overwrite=overwrite)
    stages.update()
    stages.close()
    logger.info("kept structure:\n%s", structure.summary())
    return out
