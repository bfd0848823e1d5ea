"""WID: compactors are the identity at attach, fold exactly when perturbed, and train through the driver."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

import compress
from compress.methods.wid.method import COMPACTORS_ATTR
from conftest import load_elsewhere, save_tiny_teacher, tiny_bert_config, token_batch
from reparam.axes import Axis
from reparam.compactors import Compactor, compose_compactors

WID = {"prune.method": "wid", "prune.axes": ["hidden", "heads", "ffn"]}


def _perturb(job: compress.CompressionJob, scale: float, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for compactor in job.method.compactors.compactors.values():
            compactor.weight.add_(torch.randn(compactor.weight.shape, generator=generator) * scale)


def _restricted(job: compress.CompressionJob, batch: dict) -> torch.Tensor:
    with torch.no_grad():
        return job.model.eval()(**batch).last_hidden_state[..., job.kept()["hidden"]]


def test_at_attach_the_compacted_model_is_the_teacher(minilm, sentences):
    teacher, tokenizer = minilm
    job = compress.attach(teacher, compress.load_recipe("bert-wid"))
    batch = tokenizer(sentences, return_tensors="pt", padding=True)
    with torch.no_grad():
        expected = teacher.eval()(**batch).last_hidden_state
        got = job.model.eval()(**batch).last_hidden_state
    assert (got - expected).abs().max() <= 1e-5
    assert any("compactor" in name for name, _ in job.model.named_parameters())


def test_default_compactors_cost_less_than_the_teacher(minilm):
    teacher, _ = minilm
    teacher_params = sum(p.numel() for p in teacher.parameters())
    shared = compress.attach(teacher, compress.load_recipe("bert-wid")).method.compactor_parameters()
    per_tensor = compress.attach(
        teacher, compress.load_recipe("bert-wid").override({"prune.compactor_layout": "per-tensor"})
    ).method.compactor_parameters()
    assert 0 < shared < teacher_params
    assert per_tensor > shared, "WID's own per-module layout is still available, and larger"


def test_perturbed_compactors_fold_exactly_into_a_stock_student(minilm, sentences, tmp_path):
    teacher, tokenizer = minilm
    recipe = compress.load_recipe("bert-wid").override({"prune.target_sparsity": None, "prune.target": {"hidden": 256, "heads": 8, "ffn": 1024}})
    job = compress.attach(teacher, recipe)
    _perturb(job, 0.05)
    job.method.one_shot()
    batch = tokenizer(sentences, return_tensors="pt", padding=True)
    expected = _restricted(job, batch)
    student = job.fold()
    assert type(student) is transformers.BertModel, "a uniform student uses the stock config"
    assert student.config.hidden_size == 256 and student.config.intermediate_size == 1024
    with torch.no_grad():
        got = student(**batch).last_hidden_state
    assert (got - expected).abs().max() <= 1e-4
    # The compactors changed the model: the student is not the teacher's plain top-k slice.
    plain = compress.attach(teacher, recipe)
    plain.method.one_shot()
    assert (_restricted(plain, batch) - expected).abs().max() > 1e-2
    compress.save_student(student, tmp_path / "student", processor=tokenizer)
    loaded_class, out = load_elsewhere(tmp_path / "student", "AutoModel", False, dict(batch), tmp_path)
    assert loaded_class == "BertModel"
    assert (out - got).abs().max() <= 1e-5


def test_random_heterogeneous_structure_folds_exactly_with_every_head():
    torch.manual_seed(0)
    for model_cls in (transformers.BertModel, transformers.BertForMaskedLM, transformers.BertForSequenceClassification):
        teacher = model_cls(tiny_bert_config()).eval()
        job = compress.attach(teacher, compress.load_recipe("bert-wid").override({**WID, "prune.compactor_layout": "per-tensor"}))
        _perturb(job, 0.1)
        generator = torch.Generator().manual_seed(1)
        scores = {name: torch.rand(job.gates[name].size, generator=generator) for name in job.gates.names()}
        job.keep_top({"hidden": 40, "heads": 4, "ffn": 50}, scores)
        batch = token_batch(teacher.config.vocab_size)
        with torch.no_grad():
            gated = job.model.eval()(**batch)
            folded = job.fold()(**batch)
        if hasattr(gated, "logits"):  # MLM and classifier heads read the hidden axis: whole outputs match
            assert (folded.logits - gated.logits).abs().max() <= 1e-4
        else:
            kept = job.kept()["hidden"]
            assert (folded.last_hidden_state - gated.last_hidden_state[..., kept]).abs().max() <= 1e-4


def test_the_design_name_compactor_selects_wid():
    teacher = transformers.BertModel(tiny_bert_config()).eval()
    job = compress.attach(teacher, compress.load_recipe("bert-l0").override({**WID, "prune.method": "compactor"}))
    assert type(job.method).__name__ == "WIDMethod"
    assert any("compactor" in name for name, _ in job.model.named_parameters())


def test_fold_refuses_a_compactor_that_still_carries_a_removed_unit():
    teacher = transformers.BertModel(tiny_bert_config()).eval()
    job = compress.attach(teacher, compress.load_recipe("bert-wid").override(WID))
    job.method.one_shot()
    kept = job.kept()
    removed_hidden = next(i for i in range(48) if i not in set(kept["hidden"].tolist()))
    compose_compactors(job.weights(), job.axes, job.method.compactors, kept)  # consistent: folds
    compactor = job.method.compactors.for_axis("hidden")[0][1]
    assert compactor.side == "writer"
    with torch.no_grad():
        compactor.weight[removed_hidden, 0] = 0.5  # the removed unit would still write something
    with pytest.raises(ValueError, match="non-zero on removed units"):
        compose_compactors(job.weights(), job.axes, job.method.compactors, kept)


def test_shrinking_follows_the_schedule_and_the_penalty_empties_doomed_rows():
    torch.manual_seed(0)
    teacher = transformers.BertModel(tiny_bert_config()).eval()
    schedule = {"kind": "linear", "start_step": 0, "end_step": 20, "interval": 5}
    recipe = compress.load_recipe("bert-wid").override({**WID, "prune.schedule": schedule, "prune.shrink_penalty": 0.05})
    job = compress.attach(teacher, recipe)
    method = job.method
    optimizer = torch.optim.Adam(getattr(job.model, COMPACTORS_ATTR).parameters(), lr=1e-2)
    seen = []
    for step in range(1, 26):  # the shrink penalty alone drives the compactors here
        penalty = method.loss_terms(step - 1).get("penalty")
        if penalty is not None:
            optimizer.zero_grad()
            penalty.backward()
            optimizer.step()
        method.after_step(step)
        seen.append((step, method.current_sizes(), float(penalty.detach()) if penalty is not None else 0.0))
    sizes_at = {step: sizes for step, sizes, _ in seen}
    assert sizes_at[4] == {kind: method.limits[kind] for kind in method.final}, "nothing goes before the first interval"
    assert sizes_at[20] == method.final and sizes_at[25] == method.final
    assert sizes_at[10]["ffn"] < method.limits["ffn"] and sizes_at[10]["ffn"] > method.final["ffn"]
    penalties = [p for _, _, p in seen if p > 0]
    assert penalties[3] < penalties[0], "the penalty shrinks the rows of the units due to go"
    kept = job.kept()
    for axis in job.gated_axes():
        for site, compactor in method.compactors.for_axis(axis.name):
            norms = compactor.unit_norms(axis)
            removed = torch.ones(axis.size, dtype=torch.bool)
            removed[kept[axis.name]] = False
            assert torch.all(norms[removed] == 0), f"{site.key}: removed units are exactly zero"
    batch = token_batch(teacher.config.vocab_size)
    expected = _restricted(job, batch)
    with torch.no_grad():
        got = job.fold()(**batch).last_hidden_state
    assert (got - expected).abs().max() <= 1e-4, "after training the fold is exact"


def test_wid_recipe_runs_through_the_driver(tmp_path, tiny_teacher_dir):
    teacher_dir = tiny_teacher_dir
    overrides = {
        "train.max_steps": 30, "train.batch_size": 4, "train.seq_len": 32, "train.logging_steps": 5, "train.save_steps": 10,
        "finetune.max_steps": 10, "prune.schedule": {"kind": "cubic", "start_step": 0, "end_step": 20, "interval": 5},
        "distill.layers": [[0, 0], [1, 1], [2, 2]],
    }
    out = compress.run("bert-wid", teacher=teacher_dir, out=tmp_path / "run", overrides=overrides, progress=False)
    record = json.loads((out / "compression.json").read_text())
    assert abs(record["structure"]["encoder_sparsity"] - 0.5) <= 0.01
    assert record["metrics"]["compactor_parameters"] > 0
    logs = json.loads((out / "training_log.json").read_text())["prune"]
    penalties = [e["shrink_penalty"] for e in logs if "shrink_penalty" in e]
    assert penalties and penalties[-1] < penalties[0]
    student = transformers.AutoModel.from_pretrained(out)
    assert sum(p.numel() for p in student.parameters()) == record["student_parameters"]


def test_compactors_on_head_width_fold_exactly_with_the_attention_scale_correction(minilm, sentences):
    teacher, tokenizer = minilm
    recipe = compress.load_recipe("bert-wid").override(
        {
            "prune.axes": ["hidden", "head_width", "ffn"],
            "prune.compactor_sides": {"hidden": ["writer", "reader"], "head_width": ["writer", "reader"]},
            "prune.target_sparsity": None,
            "prune.target": {"hidden": 384, "head_width": 20, "ffn": 1024},
        }
    )
    job = compress.attach(teacher, recipe)
    assert job.method.compactors.for_axis("layers.0.head_width"), "the width axis got its compactors"
    _perturb(job, 0.02)
    job.method.one_shot()
    batch = tokenizer(sentences, return_tensors="pt", padding=True)
    expected = _restricted(job, batch)
    student = job.fold()
    assert student.config.layer_head_size == [20] * 6
    with torch.no_grad():
        got = student(**batch).last_hidden_state
    assert (got - expected).abs().max() <= 1e-4


def test_mlm_objective_is_teacher_free_and_trains_the_masked_lm_loss(tmp_path, minilm):
    teacher_dir = save_tiny_teacher(tmp_path / "teacher", minilm[1], transformers.BertForMaskedLM)
    overrides = {
        "train.objective": "auto", "train.max_steps": 24, "train.batch_size": 4, "train.seq_len": 32, "train.lr": 1e-3,
        "train.logging_steps": 4, "train.save_steps": 50, "finetune.max_steps": 0,
        "prune.schedule": {"kind": "linear", "start_step": 0, "end_step": 12, "interval": 4},
    }
    out = compress.run("bert-wid", teacher=teacher_dir, out=tmp_path / "run", overrides=overrides, progress=False)
    record = json.loads((out / "compression.json").read_text())
    assert record["recipe"]["train"]["objective"] == "mlm", "auto picks MLM for a teacher with an MLM head"
    assert record["recipe"]["distill"]["layers"] == [] and record["recipe"]["distill"]["task"] == 1.0
    logs = [e for e in json.loads((out / "training_log.json").read_text())["prune"] if "task" in e]
    assert logs and all("distill_hidden" not in e for e in logs)
    assert logs[-1]["task"] < logs[0]["task"], "the masked-LM loss falls"
    student = transformers.AutoModelForMaskedLM.from_pretrained(out)
    assert student.config.hidden_size < 48


def test_mlm_objective_needs_an_mlm_head(minilm, tmp_path):
    teacher, tokenizer = minilm
    with pytest.raises(compress.RecipeError, match="train.objective=mlm needs a text teacher with a masked-LM head"):
        compress.run("bert-wid", teacher=teacher, processor=tokenizer, out=tmp_path / "run", overrides={"train.objective": "mlm"})


def _outputs_and_gradients(job: compress.CompressionJob, path: str, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor], set[str]]:
    """One training forward and backward with the compactors on ``path``; which modules read a composed weight."""
    job.method.compactors.path = path
    composed: set[str] = set()
    handles = [
        module.register_forward_pre_hook(lambda m, args, name=name: composed.add(name) if "weight" in m.__dict__ else None)
        for name, module in job.model.named_modules()
        if isinstance(module, (torch.nn.Linear, torch.nn.Embedding))
    ]
    job.model.train().zero_grad(set_to_none=True)
    torch.manual_seed(3)  # the same dropout masks on both paths
    out = job.model(**batch)
    for handle in handles:
        handle.remove()
    result = out.logits if hasattr(out, "logits") else out.last_hidden_state
    # A fixed random projection: every output reaches the loss (a LayerNorm output's mean square hardly would).
    (result * torch.randn(result.shape, generator=torch.Generator().manual_seed(4))).sum().backward()
    grads = {name: p.grad.clone() for name, p in job.model.named_parameters() if p.grad is not None}
    return result.detach(), grads, composed


@pytest.mark.parametrize("model_cls, layout", [(transformers.BertModel, "shared"), (transformers.BertForMaskedLM, "per-tensor")])
def test_compactors_composed_into_the_weights_learn_what_mixed_activations_learn(model_cls, layout):
    """The training forward composes compactors into weights (the speed-up); outputs and gradients stay the same."""
    torch.manual_seed(0)
    teacher = model_cls(tiny_bert_config()).eval()
    job = compress.attach(teacher, compress.load_recipe("bert-wid").override({**WID, "prune.compactor_layout": layout}))
    _perturb(job, 0.1)
    job.method.one_shot()  # removed units too: masked compactor rows and columns
    batch = token_batch(teacher.config.vocab_size)
    expected, expected_grads, composed = _outputs_and_gradients(job, "activations", batch)
    assert not composed, "the activation path leaves every weight as it is"
    largest = max(float(g.norm()) for g in expected_grads.values())
    for path in ("weights", "auto"):
        got, grads, composed = _outputs_and_gradients(job, path, batch)
        assert (got - expected).abs().max() <= 1e-5
        assert grads.keys() == expected_grads.keys()
        assert any("compactor" in name for name in grads) and any(name.endswith("dense.weight") for name in grads)
        for name, grad in grads.items():
            want = expected_grads[name]
            # Key biases get no gradient (softmax ignores a constant per query): their float noise is
            # compared with the largest gradient instead.
            scale = max(float(want.norm()), 1e-4 * largest)
            assert float((grad - want).norm()) <= 1e-5 * scale, f"{path}: gradient of {name}"
        if path == "weights":
            for part in ("layer.0.attention.self.query", "layer.0.attention.output.dense", "layer.0.output.dense", "token_type_embeddings"):
                assert any(name.endswith(part) for name in composed), f"{part} reads its compacted weight"
            assert not any(name.endswith("word_embeddings") for name in composed), "a padding row gets no gradient: never composed"
    assert not any(name in m.__dict__ for m in job.model.modules() for name in ("weight", "bias")), "no composed weight is left behind"


@pytest.mark.parametrize("side", ["writer", "reader"])
def test_unit_norms_are_each_units_l2_norm_with_finite_gradients_at_removed_units(side):
    """The shrink penalty's groups: every row (writer) or column (reader) of a unit, in the axis's row layout."""
    for axis in (Axis("h", "heads", 4, group=3), Axis("w", "head_width", 3, copies=4)):
        compactor = Compactor(axis.rows, side)
        with torch.no_grad():
            compactor.weight.add_(torch.randn(compactor.weight.shape, generator=torch.Generator().manual_seed(0)))
        compactor.remove(axis, torch.tensor([0, 2]))
        weight = compactor.weight if side == "writer" else compactor.weight.t()
        by_unit = weight.reshape(axis.copies, axis.size, axis.group, -1).transpose(0, 1).reshape(axis.size, -1)
        norms = compactor.unit_norms(axis)
        assert torch.allclose(norms, by_unit.norm(dim=1), rtol=1e-6, atol=0)
        assert norms[1] == 0, "a removed unit's norm is exactly zero"
        norms.sum().backward()
        assert torch.isfinite(compactor.weight.grad).all()
        expected = torch.autograd.grad(by_unit.norm(dim=1)[[0, 2]].sum(), compactor.weight)[0]
        assert torch.allclose(compactor.weight.grad, expected, rtol=1e-5, atol=1e-7)
