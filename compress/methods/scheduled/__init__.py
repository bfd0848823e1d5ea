"""Scheduled top-k pruning, registered as ``magnitude``, ``taylor`` and ``random`` (its default criteria).

``prune.importance`` replaces the criterion: a built-in name or a user's ``module:function``.
"""

from compress.methods.registry import register_method
from compress.schema import STR, Field

SETTINGS = {
    # null: the criterion the method is named after (magnitude / taylor / random)
    "prune.importance": Field(STR, None, nullable=True),
}

for _criterion in ("magnitude", "taylor", "random"):
    register_method(_criterion, "compress.methods.scheduled.method:ScheduledTopK", SETTINGS, criterion=_criterion)
