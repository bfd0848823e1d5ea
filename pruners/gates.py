"""Gates: vectors z in [0, 1]^n that switch structural units on and off.

``HardConcreteGate`` is the L0 relaxation of Louizos et al. used by CoFi and DPHuBERT: a stretched,
clipped concrete sample while training, and at evaluation a deterministic vector built from medians
of that distribution (a freshly initialised gate is exactly 1). ``FixedGate`` is a constant 0/1 mask
(one-shot structures, top-k).
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
        # Set by the L0 method's snap (``snap``): a shift of log_alpha that only counts the units kept at evaluation.
        self.register_buffer("count_shift", torch.zeros(()))
        self.register_buffer("snapped", torch.zeros((), dtype=torch.bool))

    @property
    def zero_point(self) -> float:
        """The ``log_alpha`` at which P(z > 0) = 1/2: beta * log(-low / high)."""
        return self.temperature * math.log(-self.low / self.high)

    def expected_kept(self, count_shift: float | torch.Tensor = 0.0) -> torch.Tensor:
        """Sum over units of P(z > 0), the expected L0 norm (of ``log_alpha - count_shift``)."""
        return torch.sigmoid(self.log_alpha - count_shift - self.zero_point).sum()

    def sample(self) -> torch.Tensor:
        """A reparameterised hard-concrete sample (gradients reach ``log_alpha``)."""
        eps = 1e-6
        u = torch.rand_like(self.log_alpha).clamp(eps, 1.0 - eps)
        return self._stretched((torch.log(u) - torch.log1p(-u) + self.log_alpha) / self.temperature)

    def _stretched(self, logits: torch.Tensor) -> torch.Tensor:
        """sigmoid(logits) stretched to (low, high) and clipped to [0, 1]: the hard-concrete transform."""
        return (torch.sigmoid(logits) * (self.high - self.low) + self.low).clamp(0.0, 1.0)

    @torch.no_grad()
    def snap(self, shift: float) -> None:
        """Fix how many units evaluation keeps: the rounded expected L0 norm of ``log_alpha - shift`` (see ``deterministic``)."""
        self.count_shift.fill_(shift)
        self.snapped.fill_(True)

    def kept_mask(self) -> torch.Tensor:
        """Which units evaluation keeps: those more likely on than off, or once snapped the counted highest ones.

        Unsnapped, a unit is kept when P(z > 0) > 1/2. Snapped (``snap``), the gate keeps its
        round(expected L0 norm at ``log_alpha - count_shift``) units of highest ``log_alpha`` (CoFi's
        count): a shared shift then takes units from every gate in proportion to their keep
        probabilities, where a threshold would take a barely trained gate's units all at once.
        """
        if not self.snapped:
            return self.log_alpha > self.zero_point
        count = round(float(self.expected_kept(self.count_shift).detach()))
        mask = torch.zeros(self.size, dtype=torch.bool, device=self.log_alpha.device)
        mask[torch.topk(self.log_alpha.detach(), k=count).indices] = True
        return mask

    def deterministic(self) -> torch.Tensor:
        """Medians of the hard-concrete distribution: which units are on, and the value each carries when on.

        Which units are on is ``kept_mask``: the units ranked highest by ``log_alpha``, so
        ``expected_kept(count_shift)`` is its smooth counterpart. A kept unit carries the median of z
        given z > 0, the value its "on" samples centre on: the sample at u = 1 - P(z > 0) / 2, which
        works out to the hard-concrete transform of logaddexp(log_alpha, zero_point + log 2) / beta.
        That value depends on ``log_alpha`` alone, rises with it, and is never 0 (at least ~0.145 with
        the default temperature and stretch), so a ``count_shift`` (set when the L0 snap meets an exact
        size) changes only how many units are kept, never the values of the kept ones, and every unit
        it keeps is non-zero. Unsnapped, the kept set is where the plain median of z is non-zero,
        and both medians are 1 once ``log_alpha`` is above ~1.6: a fresh gate (``init_keep`` 0.9, or
        anything above ~0.83) is exactly 1 on every unit, so attaching leaves the model equal to the
        teacher. (CoFi's rule instead zeroes round(expected zeros) units and scales the rest by
        sigmoid(0.8 log_alpha / beta) < 1.)
        """
        kept = self.kept_mask()
        floor = self.log_alpha.new_tensor(self.zero_point + math.log(2.0))
        on_median = self._stretched(torch.logaddexp(self.log_alpha, floor) / self.temperature)
        return torch.where(kept, on_median, torch.zeros_like(on_median))

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
