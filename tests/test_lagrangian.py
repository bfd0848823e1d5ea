"""Size control: expected size, the Lagrangian controller, schedules, and snapping to the target."""

from __future__ import annotations

import pytest
import torch
import transformers

import compress
from conftest import tiny_bert_config
from pruners.lagrangian import LagrangianController
from pruners.schedules import linear_ramp, resolve_schedule


def test_linear_ramp_values():
    ramp = linear_ramp(start_step=10, ramp_steps=20)
    assert [ramp(s) for s in (0, 9, 10, 20, 30, 100)] == [0.0, 0.0, 0.0, 0.5, 1.0, 1.0]
    assert linear_ramp(5, 0)(5) == 1.0


def test_callable_schedule_from_a_recipe_string():
    schedule = resolve_schedule("math:tanh")
    assert schedule(0) == 0.0 and 0.76 < schedule(1) < 0.77
    with pytest.raises(ValueError, match="no callable"):
        resolve_schedule("math:not_there")
    with pytest.raises(ValueError, match=r"returned .* must return a value in \[0, 1\]"):
        resolve_schedule("math:exp")(3)


def test_expected_sparsity_matches_the_folded_structure_when_gates_are_hard():
    job = compress.attach(transformers.BertModel(tiny_bert_config()), "bert-l0")
    generator = torch.Generator().manual_seed(0)
    for name in job.gates.names():
        gate = job.gates[name]
        gate.log_alpha.data = torch.where(torch.rand(gate.size, generator=generator) < 0.3, -40.0, 40.0)
    expected = job.method.expected_sparsity()
    assert expected.requires_grad
    assert abs(expected.item() - job.structure().encoder_sparsity) < 1e-6


def test_lagrangian_alone_drives_the_expected_size_to_the_target():
    torch.manual_seed(0)
    job = compress.attach(transformers.BertModel(tiny_bert_config()), "bert-l0")
    controller = LagrangianController(0.5, linear_ramp(0, 100))
    gates = [p for n, p in job.model.named_parameters() if n.endswith("log_alpha")]
    optimizer = torch.optim.AdamW([{"params": gates, "lr": 0.1}, {"params": controller.parameters(), "lr": 0.1}], weight_decay=0.0)
    for step in range(300):
        penalty = controller(job.method.expected_sparsity(), step)
        optimizer.zero_grad()
        penalty.backward()
        optimizer.step()
    assert abs(job.method.expected_sparsity().item() - 0.5) < 0.02
    assert controller.lambda_2.item() > 0, "the quadratic multiplier rose by gradient ascent"


def test_snap_meets_the_target_within_a_percent_and_keeps_the_strongest_units():
    torch.manual_seed(0)
    job = compress.attach(transformers.BertModel(tiny_bert_config()), "bert-l0")
    for name in job.gates.names():
        gate = job.gates[name]
        gate.log_alpha.data = torch.randn(gate.size) * 2 + 3
    before = job.structure().encoder_sparsity
    assert before < 0.2
    shift = job.method.snap_to(0.6)
    after = job.structure().encoder_sparsity
    assert shift > 0 and abs(after - 0.6) <= 0.01
    hidden = job.gates["hidden"]
    kept = job.kept()["hidden"]
    strongest = torch.argsort(hidden.log_alpha, descending=True)[: kept.numel()].sort().values
    assert torch.equal(kept, strongest)
    # Kept units keep their learned values: the fold is still exact.
    batch = {"input_ids": torch.randint(1, 100, (2, 9))}
    with torch.no_grad():
        gated = job.model.eval()(**batch).last_hidden_state[..., kept]
        folded = job.fold()(**batch).last_hidden_state
    assert (gated - folded).abs().max() <= 1e-4


def _hardened_gates(job: compress.CompressionJob, seed: int) -> None:
    """Gates as a long run leaves them: residual stream and FFN saturated on, sublayers and heads decided."""
    generator = torch.Generator().manual_seed(seed)
    for name in job.gates.names():
        gate = job.gates[name]
        if name.endswith(".mlp"):
            gate.log_alpha.data = torch.where(torch.rand(1, generator=generator) < 0.5, -6.0, 6.0)
        elif name.endswith(".attention"):
            gate.log_alpha.data = torch.full((1,), 3.0)
        elif name.endswith(".ffn"):
            gate.log_alpha.data = torch.full((gate.size,), 12.0)
        elif name == "hidden":
            gate.log_alpha.data = torch.full((gate.size,), 15.0)
        else:
            decided = torch.where(torch.rand(gate.size, generator=generator) < 0.3, -6.0, 6.0)
            gate.log_alpha.data = decided + torch.randn(gate.size, generator=generator)


@pytest.mark.parametrize("seed", range(12))
def test_snap_refines_on_heads_when_the_ffn_has_no_units_left_to_give(seed):
    """A whole sublayer is too coarse a step and the live FFNs are kept whole: heads (then hidden) take up the rest."""
    job = compress.attach(transformers.BertModel(tiny_bert_config()), "bert-l0")
    _hardened_gates(job, seed)
    job.method.snap_to(0.4)
    assert abs(job.structure().encoder_sparsity - 0.4) <= 0.01
