"""The gated model on its own: it knows no method, its hooks come off cleanly, and L0 budgets by kind."""

from __future__ import annotations

import copy

import torch
import transformers

import compress
from compress.adapters import adapter_for
from compress.gated import GatedModel
from conftest import tiny_bert_config, token_batch
from pruners.gates import FixedGate, HardConcreteGate


def _teacher() -> transformers.BertModel:
    torch.manual_seed(0)
    return transformers.BertModel(tiny_bert_config()).eval()


def test_a_gated_model_needs_no_recipe_and_detaches_to_the_plain_teacher():
    teacher = _teacher()
    gated = GatedModel(teacher, adapter_for(teacher), ["hidden", "heads", "ffn"], lambda axis: FixedGate(torch.ones(axis.size)))
    batch = token_batch(teacher.config.vocab_size)
    gated.keep_top({"hidden": 40, "heads": 4, "ffn": 50}, {a.name: torch.rand(a.size) for a in gated.gated_axes()})
    with torch.no_grad():
        assert not torch.allclose(gated.model(**batch).last_hidden_state, teacher(**batch).last_hidden_state)
    plain = gated.detach()
    assert not any(name.startswith("compress_") for name, _ in plain.named_modules())
    assert all(type(m) is torch.nn.LayerNorm for m in plain.modules() if isinstance(m, torch.nn.LayerNorm))
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in plain.modules())
    with torch.no_grad():
        assert torch.equal(plain(**batch).last_hidden_state, teacher(**batch).last_hidden_state)


def test_suspended_hooks_come_back_in_order_with_the_same_forward():
    """WID's writer compactors run before the gates on the same output; a suspend must keep that order."""
    teacher = _teacher()
    job = compress.attach(teacher, compress.load_recipe("bert-wid").override({"prune.axes": ["hidden", "heads", "ffn"]}))
    job.keep_top({"hidden": 40, "heads": 4, "ffn": 50}, {a.name: torch.rand(a.size) for a in job.gated_axes()})
    with torch.no_grad():
        for compactor in job.method.compactors.compactors.values():
            compactor.weight.add_(0.05 * torch.randn_like(compactor.weight))
    job.model.eval()
    batch = token_batch(teacher.config.vocab_size)
    with torch.no_grad():
        before = job.model(**batch).last_hidden_state
        with job.gated.hooks.suspended():
            plain = copy.deepcopy(job.model)
            assert not torch.allclose(job.model(**batch).last_hidden_state, before)
        after = job.model(**batch).last_hidden_state
    assert torch.equal(before, after)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in plain.modules())


def test_l0_snaps_explicit_sizes_to_exact_budgets_per_kind():
    """hidden exactly; heads and FFN units as per-layer size x layers in total, spread as the gates learned."""
    teacher = _teacher()
    target = {"prune.target_sparsity": None, "prune.target": {"hidden": 32, "heads": 2, "ffn": 48}}
    job = compress.attach(teacher, compress.load_recipe("bert-l0").override(target))
    layers = teacher.config.num_hidden_layers
    generator = torch.Generator().manual_seed(3)
    for name in job.gates.names():
        gate = job.gates[name]
        assert isinstance(gate, HardConcreteGate)
        gate.log_alpha.data = torch.randn(gate.size, generator=generator) * 2 + 1  # as trained: uneven over layers
    job.method.finish()
    structure = job.structure()
    assert structure.sizes["hidden"] == 32
    assert sum(structure.per_layer("heads")) == 2 * layers
    assert sum(structure.per_layer("ffn")) == 48 * layers
    assert structure.per_layer("attention") == [1] * layers and structure.per_layer("mlp") == [1] * layers
    # Units with the highest log_alpha are the ones kept.
    hidden = job.gates["hidden"]
    strongest = torch.argsort(hidden.log_alpha, descending=True)[:32].sort().values
    assert torch.equal(job.kept()["hidden"], strongest)


def test_l0_constrains_each_kind_towards_its_budget():
    teacher = _teacher()
    target = {"prune.target_sparsity": None, "prune.target": {"hidden": 32, "ffn": 16}, "prune.axes": ["hidden", "ffn"]}
    job = compress.attach(teacher, compress.load_recipe("bert-l0").override(target))
    method = job.method
    optimizer = torch.optim.AdamW([{"params": g.params, "lr": 0.1} for g in method.param_groups()], weight_decay=0.0)
    for step in range(400):
        penalty = method.loss_terms(step + 1000)["penalty"]  # past the ramp: the full budgets
        optimizer.zero_grad()
        penalty.backward()
        optimizer.step()
    expected = job.gated.expected_sizes()
    assert abs(float(expected["hidden"].detach()) - 32) < 2
    ffn = sum(float(expected[a.name].detach()) for a in job.gated_axes() if a.kind == "ffn")
    assert abs(ffn - 16 * teacher.config.num_hidden_layers) < 4
