"""Refit a folded student's sublayer output projections so its residual stream follows the teacher's.

After pruning, each attention and FFN sublayer of the student writes a different update into the
residual stream than the teacher's did: its heads or units are fewer, and its input has drifted.
Every such update ends in one linear map (the output projection), so the best map for the student's
own inputs is a least-squares problem: choose ``W, b`` so that ``r_s + W a_s + b`` (the student's
residual plus its update, what the following LayerNorm reads) matches the teacher's sum at the same
point, over calibration text. Sublayers are refitted in order, each on the inputs the refitted earlier
ones give, so the errors of one layer are corrected by the next (as in layer-wise post-training pruning,
Kwon et al. 2022 and others). The ridge term pulls toward the current weights, not toward zero, so
a sublayer that already matches is left as it is.

The family adapter names, per layer, each sublayer's output projection and the module whose input
is the residual sum (``FamilyAdapter.residual_sums``); a student shares its teacher's module names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, IterableDataset
from tqdm.auto import tqdm
from transformers import default_data_collator

from compress.errors import RecipeError


@dataclass(frozen=True)
class Sublayer:
    """One residual update: the output projection writing it and the module reading the sum, in each model."""

    student_out: str
    student_sum: str
    teacher_sum: str


class _Reached(Exception):
    """Raised by a hook to stop a forward pass once the module it waits for has its input."""


def _run_until(model: nn.Module, batch: Mapping[str, Tensor], stop: str, record: Mapping[str, str]) -> dict[str, Tensor]:
    """Run ``model`` on ``batch`` until ``stop``'s input is known; return it and what ``record`` asks for (on the CPU).

    ``record`` maps a key to ``"name:input"`` or ``"name:output"``; the result has those keys and ``"sum"``.
    """
    found: dict[str, Tensor] = {}
    handles = []

    def keep(key: str, kind: str):
        def hook(module: nn.Module, args: tuple, output: Tensor | None = None) -> None:
            found[key] = (args[0] if kind == "input" else output).detach().cpu()
        return hook

    def reached(module: nn.Module, args: tuple) -> None:
        found["sum"] = args[0].detach().cpu()
        raise _Reached

    try:
        for key, where in record.items():
            name, kind = where.split(":")
            module = model.get_submodule(name)
            handles.append(
                module.register_forward_pre_hook(keep(key, kind)) if kind == "input"
                else module.register_forward_hook(keep(key, kind))
            )
        handles.append(model.get_submodule(stop).register_forward_pre_hook(reached))
        device = next(model.parameters()).device
        try:
            model(**{key: value.to(device) for key, value in batch.items()})
        except _Reached:
            pass
    finally:
        for handle in handles:
            handle.remove()
    if "sum" not in found:
        raise RuntimeError(f"the forward pass never reached {stop!r}; the family's residual_sums name a module it does not run")
    return found


def _valid_rows(tensor: Tensor, mask: Tensor | None) -> Tensor:
    """The (tokens, features) rows of a (batch, seq, features) tensor that are not padding."""
    if mask is not None and mask.shape == tensor.shape[:2]:
        return tensor[mask.bool()]
    return tensor.reshape(-1, tensor.shape[-1])


@torch.no_grad()
def refit_sublayer(
    student: nn.Module, teacher: nn.Module, sublayer: Sublayer, batches: Sequence[Mapping[str, Tensor]],
    hidden: Tensor | None, ridge: float,
) -> tuple[float, float]:
    """Refit one output projection of ``student`` by ridge regression on ``batches``.

    ``hidden`` indexes the teacher's residual features the student kept (None: all of them). Returns
    the relative squared error of the student's residual sum before and after.
    """
    out = student.get_submodule(sublayer.student_out)
    if not isinstance(out, nn.Linear) or out.bias is None:
        raise TypeError(f"{sublayer.student_out} is not a Linear with a bias: the family's residual_sums must name one")
    width = out.in_features + 1
    gram = torch.zeros(width, width, dtype=torch.float64)
    cross = torch.zeros(width, out.out_features, dtype=torch.float64)
    energy = 0.0
    for batch in batches:
        mask = batch.get("attention_mask")
        mine = _run_until(student, batch, sublayer.student_sum, {"a": f"{sublayer.student_out}:input", "y": f"{sublayer.student_out}:output"})
        theirs = _run_until(teacher, batch, sublayer.teacher_sum, {})["sum"]
        if hidden is not None:
            theirs = theirs[..., hidden]
        # what the projection should write: the teacher's sum less the student's own residual
        target = _valid_rows(theirs - (mine["sum"] - mine["y"]), mask).double()
        inputs = _valid_rows(mine["a"], mask).double()
        inputs = torch.cat([inputs, inputs.new_ones(inputs.shape[0], 1)], dim=1)
        gram += inputs.T @ inputs
        cross += inputs.T @ target
        energy += float((target**2).sum())
    current = torch.cat([out.weight.T, out.bias[None]], dim=0).double().cpu()
    # argmin |A W - Y|^2 + lam |W - W0|^2, lam scaled to the inputs' energy: never worse than W0 on the data
    lam = ridge * float(gram.diagonal().mean().clamp_min(1e-12))
    solution = torch.linalg.solve(gram + lam * torch.eye(width, dtype=torch.float64), cross + lam * current)
    out.weight.copy_(solution[:-1].T.to(out.weight))
    out.bias.copy_(solution[-1].to(out.bias))
    scale = max(energy, 1e-12)
    return _residual(gram, cross, current, energy) / scale, _residual(gram, cross, solution, energy) / scale


def _residual(gram: Tensor, cross: Tensor, weights: Tensor, energy: float) -> float:
    """|A W - Y|^2 from the accumulated A^T A, A^T Y and |Y|^2."""
    return max(0.0, float((weights * (gram @ weights)).sum() - 2 * (weights * cross).sum()) + energy)


def plan(
    student: nn.Module, residual_sums: Callable[[int], list[tuple[str, str]]], layer_map: Sequence[int]
) -> list[Sublayer]:
    """The sublayers to refit, in forward order: student layer ``i`` against teacher layer ``layer_map[i]``.

    ``residual_sums(i)`` names layer ``i``'s (output projection, sum module) pairs; a sublayer the
    student removed (no output projection) has nothing to refit and is skipped.
    """
    found = []
    for i, j in enumerate(layer_map):
        for (out, at), (_, teacher_at) in zip(residual_sums(i), residual_sums(j)):
            try:
                student.get_submodule(out)
            except AttributeError:
                continue
            found.append(Sublayer(out, at, teacher_at))
    return found


def calibration_batches(
    dataset: Any, collator: Callable | None, batch_size: int, count: int, seed: int
) -> list[dict[str, Tensor]]:
    """``count`` shuffled batches of the training set as model inputs (labels dropped), the same for a seed.

    An iterable dataset (speech's length buckets) shuffles itself by its own seed and is read in order.
    """
    iterable = isinstance(dataset, IterableDataset)
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=not iterable, collate_fn=collator or default_data_collator,
        generator=None if iterable else torch.Generator().manual_seed(seed),
    )
    batches = []
    for batch in loader:
        if len(batches) == count:
            break
        batches.append({key: value for key, value in batch.items() if key not in ("labels", "label")})
    return batches


@torch.no_grad()
def reconstruct(
    student: nn.Module, teacher: nn.Module, sublayers: Sequence[Sublayer], batches: Sequence[Mapping[str, Tensor]],
    hidden: Tensor | None = None, ridge: float = 1e-2, progress: bool = True,
) -> list[tuple[float, float]]:
    """Refit every sublayer in order (``refit_sublayer``); returns each one's relative error before and after.

    Both models run in eval mode and are restored to their modes afterwards.
    """
    if not batches:
        raise RecipeError("reconstruct needs calibration text: set reconstruct.batches to 1 or more")
    modes = student.training, teacher.training
    student.eval()
    teacher.eval()
    try:
        return [
            refit_sublayer(student, teacher, sublayer, batches, hidden, ridge)
            for sublayer in tqdm(sublayers, desc="reconstruct", unit="sublayer", disable=not progress)
        ]
    finally:
        student.train(modes[0])
        teacher.train(modes[1])
