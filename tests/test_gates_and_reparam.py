"""Pure-torch pieces: gates, masked LayerNorm, the generic fold and size accounting."""

from __future__ import annotations

import math
import subprocess
import sys

import torch
from torch import nn

from pruners.gates import FixedGate, GateSet, HardConcreteGate
from pruners.size import count_parameters
from pruners.allocation import uniform_sizes
from reparam import Axis, GateSite, HookSet, MaskedLayerNorm, TensorDim, fold_state_dict, install_gates


def test_hard_concrete_sample_is_in_unit_interval_and_reaches_both_ends():
    torch.manual_seed(0)
    gate = HardConcreteGate(4000, init_keep=0.5)
    z = gate.sample()
    assert z.min() >= 0.0 and z.max() <= 1.0
    assert (z == 0).any() and (z == 1).any() and ((z > 0) & (z < 1)).any()
    z.sum().backward()
    assert gate.log_alpha.grad is not None and gate.log_alpha.grad.abs().sum() > 0


def test_hard_concrete_expected_kept_matches_the_sampling_frequency():
    torch.manual_seed(0)
    gate = HardConcreteGate(8, init_keep=0.5)
    gate.log_alpha.data = torch.linspace(-3, 3, 8)
    samples = torch.stack([gate.sample() for _ in range(20000)])
    frequency = (samples > 0).float().mean(0).sum()
    assert abs(frequency.item() - gate.expected_kept().item()) < 0.05


def test_hard_concrete_deterministic_is_the_median_on_given_on():
    """Kept where P(z > 0) > 1/2; a kept unit carries the median of its samples that are > 0."""
    torch.manual_seed(0)
    gate = HardConcreteGate(10)
    gate.log_alpha.data = torch.tensor([5.0, 4, 3, 2, 1, 0, -1, -2, -3, -4])
    z = gate.eval()()
    on = torch.sigmoid(gate.log_alpha - gate.zero_point)
    assert torch.equal(z > 0, on > 0.5) and int((z == 0).sum()) == 3
    assert torch.equal(z == 0, torch.arange(10) >= 7), "the lowest log_alpha are the ones zeroed"
    samples = torch.stack([gate.sample() for _ in range(20000)]).detach()
    for unit in range(7):
        positive = samples[:, unit][samples[:, unit] > 0]
        assert abs(positive.median().item() - z[unit].item()) < 0.02
    assert (z[:4] == 1).all() and (z[4:7] < 1).all()
    gate.train()
    assert not torch.equal(gate(), gate()), "in training mode the gate samples"


def test_fresh_hard_concrete_gate_is_exactly_one():
    torch.manual_seed(0)
    gate = HardConcreteGate(5000).eval()
    assert torch.equal(gate(), torch.ones(5000))


def test_count_shift_changes_the_kept_count_not_the_kept_values():
    gate = HardConcreteGate(10).eval()
    gate.log_alpha.data = torch.tensor([5.0, 4, 3, 2, 1, 0, -1, -2, -3, -4])
    gate.snap(-30.0)
    every = gate().detach()
    assert (every > 0).all(), "every unit a shift keeps carries a non-zero value"
    for shift, kept in ((-2.0, 9), (0.0, 7), (2.5, 5), (4.0, 3), (30.0, 0)):
        gate.snap(shift)
        highest = torch.arange(10) < kept  # the highest log_alpha are the ones kept
        assert torch.equal(gate().detach(), torch.where(highest, every, torch.zeros(10)))


def test_a_snap_takes_units_from_barely_trained_gates_in_proportion():
    """A shared shift on gates whose units all sit near one log_alpha keeps a share of each, not all or none."""
    gates = [HardConcreteGate(100).eval(), HardConcreteGate(100).eval()]
    for gate, level in zip(gates, (1.0, 0.0)):
        gate.log_alpha.data = level + torch.linspace(-0.01, 0.01, 100)
    assert [int(g().count_nonzero()) for g in gates] == [100, 100]  # both more likely on than off
    for gate in gates:
        gate.snap(2.0)
    kept = [int(g().count_nonzero()) for g in gates]
    assert kept == [round(float(g.expected_kept(2.0).detach())) for g in gates] == [65, 40]


def test_fixed_gate_and_gate_set_replacement():
    gates = GateSet({"a.b": HardConcreteGate(5)})
    gates["a.b"] = FixedGate.keeping(5, torch.tensor([1, 3]))
    gates.refresh()
    assert gates.names() == ["a.b"]
    assert gates.values["a.b"].tolist() == [0.0, 1.0, 0.0, 1.0, 0.0]
    assert gates["a.b"].expected_kept().item() == 2


def test_masked_layer_norm_equals_layer_norm_on_kept_units():
    torch.manual_seed(0)
    norm = nn.LayerNorm(10)
    norm.weight.data.normal_()
    norm.bias.data.normal_()
    keep = torch.tensor([1, 0, 1, 1, 0, 1, 1, 1, 0, 1.0])
    holder = type("Holder", (), {"values": {"h": keep * 0.7}})()
    masked = MaskedLayerNorm(norm, holder, "h")
    x = torch.randn(3, 5, 10)
    idx = keep.nonzero().flatten()
    small = nn.LayerNorm(len(idx))
    small.weight.data, small.bias.data = norm.weight.data[idx], norm.bias.data[idx]
    y = masked(x)
    assert torch.allclose(y[..., idx], small(x[..., idx]), atol=1e-6)
    assert y[..., keep == 0].abs().max() == 0
    assert masked.weight is norm.weight, "parameters are shared, not copied"


class _Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Linear(6, 8)
        self.down = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.relu(self.up(x)))


def test_generic_fold_on_a_plain_torch_model():
    """The fold knows nothing of transformers: any model described by axes folds exactly."""
    torch.manual_seed(0)
    model = _Mlp().eval()
    units = Axis(
        "units", "ffn", 4, group=2,
        writers=[TensorDim("up.weight", 0), TensorDim("up.bias", 0)],
        readers=[TensorDim("down.weight", 1)],
        sites=[GateSite("down", on="input")],
    )
    outputs = Axis(
        "out", "hidden", 5,
        writers=[TensorDim("down.weight", 0), TensorDim("down.bias", 0)],
        sites=[GateSite("down")],
    )
    gates = GateSet({"units": HardConcreteGate(4), "out": HardConcreteGate(5)})
    gates["units"].log_alpha.data = torch.tensor([3.0, -9.0, 1.0, 2.0])
    gates["out"].log_alpha.data = torch.tensor([2.0, 2.0, -9.0, 0.5, 4.0])
    model.add_module("gates", gates)
    install_gates(model, [units, outputs], gates, HookSet())
    gates.eval()
    x = torch.randn(7, 6)
    with torch.no_grad():
        gated = model(x)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("gates.")}
    folded = fold_state_dict(state, [units, outputs], gates.deterministic())
    assert folded.kept["units"].tolist() == [0, 2, 3] and folded.kept["out"].tolist() == [0, 1, 3, 4]
    small = nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 4))
    small.load_state_dict({k.replace("up", "0").replace("down", "2"): v for k, v in folded.state_dict.items()})
    assert (small(x) - gated[:, folded.kept["out"]]).abs().max() <= 1e-6


def test_parameter_count_is_differentiable_in_expected_sizes():
    axes = [Axis("h", "hidden", 4, writers=[TensorDim("w", 0)], readers=[TensorDim("v", 1)])]
    shapes = {"w": (4, 3), "v": (2, 4), "other": (7,)}
    assert count_parameters(shapes, axes, {}) == 12 + 8 + 7
    assert count_parameters(shapes, axes, {"h": 1}) == 3 + 2 + 7
    size = torch.tensor(2.5, requires_grad=True)
    total = count_parameters(shapes, axes, {"h": size})
    total.backward()
    assert math.isclose(total.item(), 2.5 * 5 + 7) and size.grad.item() == 5


def test_uniform_sizes_ties_hidden_to_heads_and_meets_the_budget():
    limits = {"hidden": 384, "heads": 12, "ffn": 1536}

    def count(sizes: dict[str, int]) -> float:
        h, n, f = sizes.get("hidden", 384), sizes.get("heads", 12), sizes.get("ffn", 1536)
        return 6 * (4 * (h * n * 32 + h) + 4 * h + 2 * h * f + f + h)

    budget = 0.5 * count({})
    sizes = uniform_sizes(limits, ["hidden", "heads", "ffn"], budget, count, head_dim=32)
    assert sizes["hidden"] == sizes["heads"] * 32
    assert abs(count(sizes) - budget) / budget < 0.001


def test_uniform_sizes_shrink_conv_channels_with_the_heads_or_alone():
    limits = {"conv": 512, "heads": 12, "ffn": 3072}

    def count(sizes: dict[str, int]) -> float:
        c, n, f = sizes.get("conv", 512), sizes.get("heads", 12), sizes.get("ffn", 3072)
        return 7 * 3 * c * c + 12 * (4 * 768 * n * 64 + 2 * 768 * f)

    budget = 0.25 * count({})
    sizes = uniform_sizes(limits, ["conv", "heads", "ffn"], budget, count, head_dim=64)
    assert sizes["conv"] == round(sizes["heads"] / 12 * 512) < 512
    assert abs(count(sizes) - budget) / budget < 0.001
    assert uniform_sizes(limits, ["conv"], count({"conv": 300}), count, head_dim=64) == {"conv": 300}


def test_reparam_and_pruners_do_not_import_transformers():
    code = "import sys, reparam, pruners; sys.exit(int(any(m.startswith('transformers') for m in sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
