"""Gates: vectors z in [0, 1]^n that switch structural units on and off.

``HardConcreteGate`` is the L0 relaxation of Louizos et al. used by CoFi and DPHuBERT: a stretched,
clipped concrete sample while training, and at evaluation a deterministic mask that zeroes the
expected number of units. ``FixedGate`` is a constant 0/1 mask (one-shot structures, top-k).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class Gate(nn.Module):
    """Base class: ``forward()`` returns the gate vector for the current mode."""

    size: int

    def deterministic(self) -> torch.Tensor:
        """The evaluation-time gate vector; the fold uses exactly this."""
        raise NotImplementedError

    def expected_kept(self) -> torch.Tensor:
        """Expected number of non-zero units (differentiable where the gate is learnable)."""
        raise NotImplementedError

    def forward(self) -> torch.Tensor:
        return self.deterministic()


class HardConcreteGate(Gate):
    """Hard-concrete L0 gate over ``size`` units with learnable ``log_alpha``.

    ``init_keep`` is the initial probability of keeping a unit; ``temperature``, ``stretch``
    follow Louizos et al. (beta = 2/3, interval (-0.1, 1.1)).
    """

    def __init__(
        self,
        size: int,
        init_keep: float = 0.9,
        init_std: float = 0.01,
        temperature: float = 2.0 / 3.0,
        stretch: tuple[float, float] = (-0.1, 1.1),
    ) -> None:
        super().__init__()
        if size < 1:
            raise ValueError(f"a gate needs at least one unit, got size={size}")
        if not 0.0 < init_keep < 1.0:
            raise ValueError(f"init_keep must be in (0, 1), got {init_keep}")
        self.size = size
        self.temperature = temperature
        self.low, self.high = stretch
        mean = math.log(init_keep / (1.0 - init_keep))
        self.log_alpha = nn.Parameter(torch.randn(size) * init_std + mean)
        # Shift of log_alpha used only to count the units kept at evaluation (see ``snap``).
        self.register_buffer("count_shift", torch.zeros(()))

    def expected_kept(self, count_shift: float | torch.Tensor = 0.0) -> torch.Tensor:
        """Sum over units of P(z > 0), the expected L0 norm (of ``log_alpha - count_shift``)."""
        shift = self.temperature * math.log(-self.low / self.high)
        return torch.sigmoid(self.log_alpha - count_shift - shift).sum()

    def sample(self) -> torch.Tensor:
        """A reparameterised hard-concrete sample (gradients reach ``log_alpha``)."""
        eps = 1e-6
        u = torch.rand_like(self.log_alpha).clamp(eps, 1.0 - eps)
        s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + self.log_alpha) / self.temperature)
        return (s * (self.high - self.low) + self.low).clamp(0.0, 1.0)

    def deterministic(self) -> torch.Tensor:
        """Soft keep values with the round(expected number of zeros) lowest set to exactly 0.

        This is the evaluation rule of CoFi / DPHuBERT: the kept count equals the expected L0 norm,
        kept units carry sigmoid(0.8 * log_alpha / beta), which the fold multiplies into weights.
        A non-zero ``count_shift`` (set when snapping a structure to an exact size) changes only how
        many units are kept, never the values of the kept ones.
        """
        num_zeros = round(self.size - float(self.expected_kept(self.count_shift).detach()))
        soft = torch.sigmoid(self.log_alpha / self.temperature * 0.8)
        if num_zeros <= 0:
            return soft
        drop = torch.topk(soft.detach(), k=num_zeros, largest=False).indices
        return soft.index_fill(0, drop, 0.0)

    def forward(self) -> torch.Tensor:
        return self.sample() if self.training else self.deterministic()

    def extra_repr(self) -> str:
        return f"size={self.size}, temperature={self.temperature:.3f}"


class FixedGate(Gate):
    """A constant 0/1 mask: no parameters, same value in training and evaluation."""

    def __init__(self, keep: torch.Tensor) -> None:
        super().__init__()
        keep = torch.as_tensor(keep).flatten()
        if keep.numel() < 1:
            raise ValueError("a gate needs at least one unit")
        self.size = keep.numel()
        self.register_buffer("mask", (keep != 0).to(torch.float32))

    @classmethod
    def keeping(cls, size: int, indices: torch.Tensor) -> FixedGate:
        """A mask of ``size`` units that keeps exactly ``indices``."""
        keep = torch.zeros(size)
        keep[torch.as_tensor(indices, dtype=torch.long)] = 1.0
        return cls(keep)

    @torch.no_grad()
    def keep_only(self, indices: torch.Tensor) -> None:
        """Change the mask in place to keep exactly ``indices`` (the module and its buffer stay the same)."""
        self.mask.zero_()
        self.mask[torch.as_tensor(indices, dtype=torch.long)] = 1.0

    def deterministic(self) -> torch.Tensor:
        return self.mask

    def expected_kept(self) -> torch.Tensor:
        return self.mask.sum()


class GateSet(nn.Module):
    """All gates of a model by axis name, with the values of the current forward pass.

    ``refresh`` runs once per forward (a root pre-hook) so every site of one axis sees the same
    sample. Module names cannot hold dots, so axis names are stored with ``/`` in their place.
    """

    def __init__(self, gates: dict[str, Gate]) -> None:
        super().__init__()
        self.gates = nn.ModuleDict({self._key(name): gate for name, gate in gates.items()})
        self.values: dict[str, torch.Tensor] = {}

    @staticmethod
    def _key(axis: str) -> str:
        return axis.replace(".", "/")

    def names(self) -> list[str]:
        return [key.replace("/", ".") for key in self.gates]

    def __getitem__(self, axis: str) -> Gate:
        return self.gates[self._key(axis)]

    def __setitem__(self, axis: str, gate: Gate) -> None:
        """Replace an axis's gate (e.g. by a fixed mask after one-shot selection)."""
        key = self._key(axis)
        if key not in self.gates:
            raise KeyError(f"axis {axis} has no gate")
        if gate.size != self.gates[key].size:
            raise ValueError(f"axis {axis} has {self.gates[key].size} units, new gate has {gate.size}")
        self.gates[key] = gate

    def refresh(self) -> None:
        self.values = {name: self[name]() for name in self.names()}

    def __getstate__(self) -> dict:
        # Values from a training step carry autograd history, which deepcopy and pickle refuse.
        state = self.__dict__.copy()
        state["values"] = {name: value.detach() for name, value in self.values.items()}
        return state

    def deterministic(self) -> dict[str, torch.Tensor]:
        """Evaluation-time values of every gate, detached: what the fold uses."""
        with torch.no_grad():
            return {name: self[name].deterministic().detach() for name in self.names()}
