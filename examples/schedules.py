"""Pruning schedules a recipe can name as ``schedules:<function>`` (step -> fraction of the removal done).

Scripts in this folder run with it on ``sys.path``, so ``prune.schedule: "schedules:thirds"`` resolves.
"""

from __future__ import annotations


def thirds(step: int) -> float:
    """Remove a third of the units at steps 2, 4 and 6, then keep distilling the final structure."""
    return min(step // 2, 3) / 3
