"""torch-pruning dependency groups of a model, described by module names (pure torch).

torch-pruning traces a forward pass and finds which channel dimensions are coupled (a Linear's
outputs, the LayerNorm and the inputs that read them). We use those groups two ways: to score the
units of our axes with torch-pruning's criteria (``pruners.tp_importance``), and to find prunable
dimensions of models that have no family adapter (``compress.adapters.generic``).

Tracing needs a model without our gate hooks and masked LayerNorms, whose extra operations would
hide the modules from the tracer: ``shared_twin`` copies a gated model whose hooks are suspended
(``reparam.HookSet.suspended``) into one that shares every parameter and buffer (values and
gradients) with it, with plain LayerNorms, so scores always read the live weights.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch_pruning as tp
from torch import nn

from reparam.gating import remove_masked_norms

Side = Literal["in", "out"]
#: module types whose channels torch-pruning groups and we can slice
CHANNEL_MODULES = (nn.Linear, nn.Embedding, nn.LayerNorm)


@dataclass(frozen=True)
class CoupledDim:
    """One module's input (``in``) or output (``out``) channels, as a member of a group."""

    module: str
    side: Side


@dataclass(frozen=True)
class CoupledGroup:
    """A torch-pruning group: ``size`` channels shared by every member, e.g. an FFN's units."""

    members: tuple[CoupledDim, ...]
    size: int


def shared_twin(model: nn.Module) -> nn.Module:
    """A copy of ``model`` sharing its parameters and buffers, with plain LayerNorms in place of masked ones.

    Copy it while its gate hooks are suspended: the twin must carry none of them.
    """
    memo: dict[int, Any] = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    twin = copy.deepcopy(model, memo)
    remove_masked_norms(twin)
    return twin


def trace(model: nn.Module, example_inputs: Mapping[str, torch.Tensor]) -> tp.DependencyGraph:
    """torch-pruning's dependency graph of ``model`` (no gate hooks: trace a ``shared_twin``), in eval mode.

    Every tensor of the output (a ``ModelOutput`` is a dict) is traced, so heads on top are covered.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            return tp.DependencyGraph().build_dependency(model, example_inputs=dict(example_inputs), verbose=False)
    finally:
        model.train(was_training)


def dim_of(model: nn.Module, tensor: str, dim: int) -> CoupledDim | None:
    """The channel side of a weight dimension (``x.weight`` dim 0 of a Linear is ``x`` out); None for biases."""
    module_name, _, param = tensor.rpartition(".")
    if param != "weight":
        return None
    module = model.get_submodule(module_name)
    if isinstance(module, nn.Embedding):
        return CoupledDim(module_name, "out") if dim == 1 else None
    return CoupledDim(module_name, "out" if dim == 0 else "in")


def group_at(graph: tp.DependencyGraph, model: nn.Module, dim: CoupledDim) -> tp.Group | None:
    """The full-width group rooted at ``dim`` (every channel), or None when the trace never saw the module."""
    module = model.get_submodule(dim.module)
    pruner = graph.get_pruner_of_module(module)
    if module not in graph.module2node or pruner is None:
        return None
    width = pruner.get_out_channels(module) if dim.side == "out" else pruner.get_in_channels(module)
    handler = pruner.prune_out_channels if dim.side == "out" else pruner.prune_in_channels
    return graph.get_pruning_group(module, handler, list(range(width)))


def describe(group: tp.Group, graph: tp.DependencyGraph, names: Mapping[nn.Module, str]) -> CoupledGroup:
    """The members of ``group`` that are named channel modules of the model, with their channel side."""
    members = [
        CoupledDim(names[dep.target.module], "out" if graph.is_out_channel_pruning_fn(dep.handler) else "in")
        for dep, _ in group
        if dep.target.module in names and isinstance(dep.target.module, CHANNEL_MODULES)
    ]
    return CoupledGroup(members=tuple(dict.fromkeys(members)), size=len(group[0].idxs))


def linear_groups(model: nn.Module, example_inputs: Mapping[str, torch.Tensor]) -> list[CoupledGroup]:
    """Every group rooted at a Linear's outputs, described by module names (trace of an un-gated model)."""
    graph = trace(model, example_inputs)
    names = {module: name for name, module in model.named_modules()}
    return [describe(group, graph, names) for group in graph.get_all_groups(root_module_types=(nn.Linear,))]
