"""Put gates into a model's forward pass: hooks at gate sites, masked LayerNorm on normalisers."""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn
from reparam.axes import Axis, GateSite
from reparam.hooks import HookSet
from reparam.masked_norm import MaskedLayerNorm


class LiveGates(Protocol):
    """Gate values by axis name, recomputed once per forward pass by ``refresh``."""

    values: dict[str, torch.Tensor]

    def refresh(self) -> None: ...


def expand_units(values: torch.Tensor, group: int, copies: int = 1) -> torch.Tensor:
    """One value per tensor row: each unit's value over its ``group`` rows, the whole repeated ``copies`` times.

    This is the ``(copies, size, group)`` row layout of :class:`~reparam.axes.Axis`.
    """
    rows = values.repeat_interleave(group) if group > 1 else values
    return rows.repeat(copies) if copies > 1 else rows


class _SiteHook:
    """Multiplies activations by one axis's gate; a plain object so ``deepcopy`` keeps it consistent."""

    def __init__(self, gates: LiveGates, axis: Axis, site: GateSite) -> None:
        self.gates = gates
        self.axis_name = axis.name
        self.group = axis.group
        self.copies = axis.copies
        self.binary = site.binary
        self.dim = site.dim
        self.soft_in_training = site.soft_in_training

    def scale(self, x: torch.Tensor, training: bool) -> torch.Tensor:
        """``x`` times the gate (or its keep-mask) broadcast along this site's dimension."""
        value = self.gates.values[self.axis_name]
        if self.binary and not (self.soft_in_training and training):
            value = value != 0
        factor = expand_units(value.to(x.dtype), self.group, self.copies)
        if self.dim not in (-1, x.dim() - 1):
            shape = [1] * x.dim()
            shape[self.dim] = -1
            factor = factor.reshape(shape)
        return x * factor


class _OutputHook(_SiteHook):
    def __call__(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return self.scale(output, module.training)


class _InputHook(_SiteHook):
    def __call__(self, module: nn.Module, args: tuple) -> tuple:
        return (self.scale(args[0], module.training), *args[1:])


class _Refresh:
    """Root pre-hook: sample (train) or compute (eval) every gate once per forward pass."""

    def __init__(self, gates: LiveGates) -> None:
        self.gates = gates

    def __call__(self, module: nn.Module, args: tuple) -> None:
        self.gates.refresh()


def _replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def install_gates(model: nn.Module, axes: list[Axis], gates: LiveGates, hooks: HookSet) -> None:
    """Make ``model`` compute its gated forward for every axis that ``gates.values`` covers.

    Normalisers on a gated axis become :class:`MaskedLayerNorm` (same parameters), and each gate
    site gets a hook, recorded in ``hooks`` (so the caller can take them off again).
    """
    gates.refresh()
    hooks.add(model, _Refresh(gates), pre=True)
    for axis in axes:
        if axis.name not in gates.values:
            continue
        for norm_name in axis.normalisers:
            norm = model.get_submodule(norm_name)
            if not isinstance(norm, nn.LayerNorm):
                raise TypeError(f"normaliser {norm_name} of axis {axis.name} is {type(norm).__name__}, not LayerNorm")
            _replace_module(model, norm_name, MaskedLayerNorm(norm, gates, axis.name))
        for site in axis.sites:
            module = model.get_submodule(site.module)
            if site.on == "output":
                hooks.add(module, _OutputHook(gates, axis, site))
            else:
                hooks.add(module, _InputHook(gates, axis, site), pre=True)


def remove_masked_norms(model: nn.Module) -> None:
    """Put plain LayerNorms (sharing the same parameters) back where ``install_gates`` put masked ones."""
    for name, module in list(model.named_modules()):
        if isinstance(module, MaskedLayerNorm):
            _replace_module(model, name, module.plain())
