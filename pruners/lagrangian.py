"""The Lagrangian sparsity controller of CoFi / DPHuBERT.

The penalty ``l1 * (s - t) + l2 * (s - t)**2`` ties the expected sparsity ``s`` of the gates to
the target ``t`` in force. The gates minimise it; the multipliers maximise it (gradient ascent,
done by flipping their gradient so any optimiser can take them with their own learning rate).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pruners.schedules import Schedule


class _Ascend(torch.autograd.Function):
    """Identity forward, negated gradient backward: the optimiser's descent becomes ascent."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return -grad


class LagrangianController(nn.Module):
    """Penalty driving expected sparsity to ``target * schedule(step)``; parameters ``lambda_1``, ``lambda_2``."""

    def __init__(self, target: float | Sequence[float], schedule: Schedule) -> None:
        super().__init__()
        scalar = isinstance(target, (int, float))
        targets = [target] if scalar else list(target)
        # A per-kind budget may remove a whole kind (every sublayer); one total target stays below 1.
        if not targets or any(not (0.0 <= t < 1.0 if scalar else 0.0 <= t <= 1.0) for t in targets):
            raise ValueError(f"target sparsity must be in [0, 1), got {target}")
        self.target = target
        self.schedule = schedule
        # One multiplier pair per constraint: a scalar for one total target, a vector for per-kind budgets.
        shape = () if scalar else (len(targets),)
        self.register_buffer("targets", torch.tensor(targets if shape else targets[0]), persistent=False)
        self.lambda_1 = nn.Parameter(torch.zeros(shape))
        self.lambda_2 = nn.Parameter(torch.zeros(shape))

    def target_at(self, step: int) -> float | torch.Tensor:
        return self.target * self.schedule(step) if not self.lambda_1.dim() else self.targets * self.schedule(step)

    def forward(self, expected_sparsity: torch.Tensor, step: int) -> torch.Tensor:
        """The penalty, summed over constraints (``expected_sparsity`` has the multipliers' shape)."""
        gap = expected_sparsity - self.target_at(step)
        return (_Ascend.apply(self.lambda_1) * gap + _Ascend.apply(self.lambda_2) * gap * gap).sum()
