"""L0 (CoFi / DPHuBERT): HardConcrete gates learned under a Lagrangian that drives the expected size."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from compress.methods.base import PruningMethod
from pruners import Gate, HardConcreteGate
from pruners.lagrangian import LagrangianController
from pruners.schedules import resolve_schedule
from reparam import Axis

if TYPE_CHECKING:
    from compress.job import CompressionJob

LAGRANGIAN_ATTR = "compress_lagrangian"


class L0Method(PruningMethod):
    """Learned gates; after training the structure is snapped to the exact target (``job.snap_to``)."""

    name = "l0"

    def __init__(self, job: CompressionJob) -> None:
        super().__init__(job)
        self.target = job.target_sparsity()
        self.controller = LagrangianController(self.target, resolve_schedule(job.recipe.prune["schedule"]))

    @classmethod
    def initial_gate(cls, axis: Axis) -> Gate:
        return HardConcreteGate(axis.size)

    def modules(self) -> dict[str, nn.Module]:
        return {LAGRANGIAN_ATTR: self.controller}

    def loss_terms(self, step: int) -> dict[str, torch.Tensor]:
        sparsity = self.job.expected_sparsity()
        return {
            "penalty": self.controller(sparsity, step),
            "expected_sparsity": sparsity,
            "target_sparsity": torch.tensor(self.controller.target_at(step)),
            "lambda_1": self.controller.lambda_1,
            "lambda_2": self.controller.lambda_2,
        }

    def finish(self) -> dict[str, float]:
        learned = self.job.structure().encoder_sparsity
        return {"sparsity_learned": learned, "snap_shift": self.job.snap_to(self.target)}
