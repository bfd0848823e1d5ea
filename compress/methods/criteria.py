"""Importance criteria for scheduled top-k: a score for every unit of every gated axis (higher is kept).

A criterion is called with the gated model and returns ``{axis name: scores}``. The project has
one magnitude criterion, ours (``pruners.magnitude_importance``: squared L2 norm of every weight a
unit touches, over all writers and readers of its axis); WID applies the same one to its compacted
weights. Taylor and random use torch-pruning's criteria over its dependency groups. A user's own
criterion is any callable ``f(gated) -> {axis name: tensor}`` named as ``module:function``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from compress.errors import RecipeError, TargetError
from compress.gated import GatedModel
from pruners.importance import magnitude_importance
from pruners.schedules import load_callable

#: the Taylor criterion's running scores, attached to the model so checkpoints carry them
TAYLOR_ATTR = "compress_taylor"


def magnitude_of(state: Mapping[str, torch.Tensor], gated: GatedModel) -> dict[str, torch.Tensor]:
    """Magnitude importance of the gated axes' units over ``state`` (the model's weights, or composed ones)."""
    return {axis.name: magnitude_importance(state, axis) for axis in gated.gated_axes()}


def magnitude(gated: GatedModel) -> dict[str, torch.Tensor]:
    """Magnitude importance on the gated model's current weights."""
    return magnitude_of(gated.weights(), gated)


class Criterion:
    """A stateful criterion: scores on call, optionally modules to attach and a per-step observation."""

    def __call__(self, gated: GatedModel) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def modules(self) -> dict[str, nn.Module]:
        return {}

    def observe(self, gated: GatedModel) -> None:
        """Called with each step's gradients in place (before the optimiser step)."""


class FunctionCriterion(Criterion):
    """A plain function ``f(gated) -> scores`` (ours, or a user's) as a criterion."""

    def __init__(self, function: Callable[[GatedModel], Mapping[str, torch.Tensor]]) -> None:
        self.function = function

    def __call__(self, gated: GatedModel) -> dict[str, torch.Tensor]:
        scores = dict(self.function(gated))
        missing = [a.name for a in gated.gated_axes() if a.name not in scores]
        if missing:
            raise TargetError(f"importance criterion {self.function!r} gave no scores for axes {missing[:3]}")
        return scores


class TorchPruningCriterion(Criterion):
    """torch-pruning's ``taylor`` or ``random`` criterion over its dependency groups, mapped onto our axes.

    The groups are traced once, on a twin of the gated model that shares its weights (traced with
    the gate hooks suspended); every call reads the live weights and gradients.
    """

    def __init__(self, name: str, gated: GatedModel) -> None:
        from pruners.tp_importance import AxisScorer, criterion

        self.importance = criterion(name)
        with gated.hooks.suspended():
            self.scorer = AxisScorer(gated.model, gated.axes, gated.adapter.example_inputs())

    def __call__(self, gated: GatedModel) -> dict[str, torch.Tensor]:
        scores = self.scorer.scores(self.importance)
        return {axis.name: scores[axis.name] for axis in gated.gated_axes()}


class TaylorCriterion(TorchPruningCriterion):
    """First-order Taylor |w * dL/dw| (torch-pruning's group Taylor), an exponential moving average over steps.

    ``observe`` runs with each step's synced gradients; the average lives in a buffer the checkpoints
    carry. In your own loop, call ``job.method.before_optimizer_step(step)`` after ``loss.backward()``
    on a few calibration batches before pruning.
    """

    decay = 0.9

    def __init__(self, gated: GatedModel) -> None:
        super().__init__("taylor", gated)
        self.average = TaylorAverage({axis.name: axis.size for axis in gated.gated_axes()})

    def modules(self) -> dict[str, nn.Module]:
        return {TAYLOR_ATTR: self.average}

    def step_scores(self, gated: GatedModel) -> dict[str, torch.Tensor]:
        """This step's Taylor scores (from the gradients in place now), before averaging."""
        return super().__call__(gated)

    def observe(self, gated: GatedModel) -> None:
        self.average.update(self.step_scores(gated), self.decay)

    def __call__(self, gated: GatedModel) -> dict[str, torch.Tensor]:
        if not self.average.seen:
            raise TargetError(
                "taylor importance needs gradients: train with train.max_steps > 0 (scores accumulate during "
                "distillation), or in your own loop call job.method.before_optimizer_step(step) after "
                "loss.backward() on a few calibration batches before pruning"
            )
        return self.average.values()


class TaylorAverage(nn.Module):
    """Exponential moving average of per-unit Taylor scores by axis, as buffers (so checkpoints carry it)."""

    def __init__(self, axis_sizes: dict[str, int]) -> None:
        super().__init__()
        self.names = list(axis_sizes)
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))
        for i, size in enumerate(axis_sizes.values()):
            self.register_buffer(f"score_{i}", torch.zeros(size))

    @property
    def seen(self) -> bool:
        return bool(self.updates)

    @torch.no_grad()
    def update(self, scores: dict[str, torch.Tensor], decay: float) -> None:
        """Blend in one step's scores (the first step's scores are taken as they are)."""
        keep = decay if self.seen else 0.0
        for i, name in enumerate(self.names):
            average = getattr(self, f"score_{i}")
            average.mul_(keep).add_(scores[name].to(average.device), alpha=1.0 - keep)
        self.updates += 1

    def values(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, f"score_{i}").clone() for i, name in enumerate(self.names)}


BUILT_IN = ("magnitude", "taylor", "random")


def build_criterion(spec: str | Callable, gated: GatedModel) -> Criterion:
    """The criterion ``spec`` names: ``magnitude``, ``taylor``, ``random``, ``module:function``, or a callable."""
    if callable(spec):
        return FunctionCriterion(spec)
    if spec == "magnitude":
        return FunctionCriterion(magnitude)
    if spec == "taylor":
        return TaylorCriterion(gated)
    if spec == "random":
        return TorchPruningCriterion("random", gated)
    if ":" not in spec:
        raise RecipeError(f"prune.importance {spec!r}: use one of {', '.join(BUILT_IN)} or module:function")
    try:
        return FunctionCriterion(load_callable(spec))
    except ValueError as err:
        raise RecipeError(f"prune.importance: {err}") from err
