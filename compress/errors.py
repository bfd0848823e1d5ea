"""Errors the library raises for bad input; each message names the problem and the fix."""


class CompressError(Exception):
    """Base class of every error this library raises on purpose."""


class RecipeError(CompressError, ValueError):
    """A recipe that cannot be loaded, or holds an unknown key or an impossible value."""


class UnsupportedModelError(CompressError, TypeError):
    """A model of a family (or with a head) that no adapter handles."""


class OutputDirError(CompressError, FileExistsError):
    """An output folder that would lose what the user already had."""


class TargetError(CompressError, ValueError):
    """A size target that the teacher cannot meet (e.g. larger than the teacher)."""


class DataError(CompressError, ValueError):
    """Text data that cannot be loaded, has no usable text column, or is too small for the task."""


class Interrupted(CompressError):
    """A run stopped by a signal after saving a checkpoint; resuming continues it."""


class TeacherError(CompressError, ValueError):
    """A teacher folder that cannot be loaded as it is (no weights, no usable tokenizer)."""


class IntegrityError(CompressError, OSError):
    """A student folder whose weight or code files differ from what its compression.json recorded."""


class RunFolderError(CompressError, ValueError):
    """A run folder whose compression.json or training_log.json is missing, damaged or not of this library."""
