"""The hooks the library puts on a model, kept so they can all come off again (and go back in order).

Gates and compactors act through forward hooks. Whoever installs them records each one in a
``HookSet``: ``remove`` takes every hook off (``detach``), and ``suspended`` takes them off for a
moment, e.g. to copy or trace the plain model, then registers the same hook objects again in the
same order, so the model computes exactly what it did before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from torch import nn
from torch.utils.hooks import RemovableHandle


@dataclass(frozen=True)
class _Hook:
    module: nn.Module
    hook: Callable
    pre: bool
    prepend: bool

    def register(self) -> RemovableHandle:
        if self.pre:
            return self.module.register_forward_pre_hook(self.hook, prepend=self.prepend)
        return self.module.register_forward_hook(self.hook, prepend=self.prepend)


class HookSet:
    """Forward hooks registered through it, in registration order, with their live handles."""

    def __init__(self) -> None:
        self._hooks: list[_Hook] = []
        self._handles: list[RemovableHandle] = []

    def add(self, module: nn.Module, hook: Callable, *, pre: bool = False, prepend: bool = False) -> None:
        """Register ``hook`` on ``module`` (a pre-hook with ``pre``; first in line with ``prepend``)."""
        entry = _Hook(module, hook, pre, prepend)
        self._hooks.append(entry)
        self._handles.append(entry.register())

    def __len__(self) -> int:
        return len(self._hooks)

    @property
    def installed(self) -> bool:
        return bool(self._handles)

    def remove(self) -> None:
        """Take every hook off the model (they are remembered for ``restore``)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def restore(self) -> None:
        """Register every remembered hook again, in the original order (prepended ones first again)."""
        if self._handles:
            raise RuntimeError("hooks are already installed")
        self._handles = [entry.register() for entry in self._hooks]

    @contextmanager
    def suspended(self) -> Iterator[None]:
        """Within the block the model runs (and copies) without these hooks."""
        self.remove()
        try:
            yield
        finally:
            self.restore()
