"""Compress Hugging Face encoders: attach gates to a copy of the teacher, train, fold, export.

    import compress
    recipe = compress.load_recipe("bert-l0")
    job = compress.attach(teacher, recipe)
    student = job.fold()
    compress.save_student(student, "out", processor=tokenizer)
"""

from compress.errors import CompressError, OutputDirError, RecipeError, TargetError, UnsupportedModelError
from compress.export import load_student, save_student
from compress.generic import attach_generic
from compress.job import CompressionJob, attach
from compress.pipeline import run
from compress.recipe import Recipe, bundled_recipes, load_recipe
from compress.structure import Structure
from compress.students import register_students

register_students()

__all__ = [
    "CompressError",
    "CompressionJob",
    "OutputDirError",
    "Recipe",
    "RecipeError",
    "Structure",
    "TargetError",
    "UnsupportedModelError",
    "attach",
    "attach_generic",
    "bundled_recipes",
    "load_recipe",
    "load_student",
    "run",
    "save_student",
]
