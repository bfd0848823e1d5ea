"""Scheduled top-k with its criteria (our magnitude; torch-pruning's Taylor and random; a user's), one-shot and iterative, through our gates and fold."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch
import transformers

import compress
from conftest import tiny_bert_config, token_batch
from compress.methods.criteria import TAYLOR_ATTR

TOL = 1e-4


@pytest.fixture(scope="module")
def teacher() -> transformers.BertModel:
    torch.manual_seed(0)
    return transformers.BertModel(tiny_bert_config()).eval()


def _recipe(method: str, **overrides) -> compress.Recipe:
    base = "bert-taylor" if method == "taylor" else "bert-magnitude"
    return compress.load_recipe(base).override({"prune.method": method, **overrides})


def _fold_error(job: compress.CompressionJob, batch: dict) -> float:
    job.model.eval()
    with torch.no_grad():
        gated = job.model(**batch).last_hidden_state[..., job.kept()["hidden"]]
        folded = job.fold()(**batch).last_hidden_state
    return (folded - gated).abs().max().item()


def _calibrate(job: compress.CompressionJob, batch: dict, steps: int = 2) -> None:
    """A few backward passes of a simple loss, each handed to the method as the trainer would."""
    job.model.train()
    for step in range(steps):
        job.model.zero_grad()
        job.model(**batch).last_hidden_state.pow(2).mean().backward()
        job.method.before_optimizer_step(step)


def test_magnitude_scores_every_weight_and_bias_a_unit_touches(teacher):
    job = compress.attach(teacher, _recipe("magnitude"))
    scores = job.method.importance()
    layer = teacher.encoder.layer[1]
    projections = (layer.attention.self.query, layer.attention.self.key, layer.attention.self.value)
    rows = sum(m.weight.pow(2).sum(dim=1) + m.bias.pow(2) for m in projections)
    rows = rows + layer.attention.output.dense.weight.pow(2).sum(dim=0)
    torch.testing.assert_close(scores["layers.1.heads"], rows.reshape(6, 8).sum(dim=1))
    ffn = layer.intermediate.dense.weight.pow(2).sum(dim=1) + layer.intermediate.dense.bias.pow(2)
    ffn = ffn + layer.output.dense.weight.pow(2).sum(dim=0)
    torch.testing.assert_close(scores["layers.1.ffn"], ffn)
    # The residual stream counts the embeddings too (every writer of the axis).
    assert scores["hidden"].min() > teacher.embeddings.word_embeddings.weight.pow(2).sum(dim=0).min()


def test_one_magnitude_criterion_for_prune_to_the_method_and_wid(teacher):
    """job.prune_to, the magnitude method and WID (identity compactors at attach) rank units alike."""
    chosen = []
    for recipe in (_recipe("magnitude"), compress.load_recipe("bert-wid").override({"prune.axes": ["hidden", "heads", "ffn"]})):
        one_shot = compress.attach(teacher, recipe)
        one_shot.method.one_shot()
        by_prune_to = compress.attach(teacher, recipe)
        by_prune_to.prune_to()
        assert one_shot.structure().sizes == by_prune_to.structure().sizes
        assert all(torch.equal(one_shot.kept()[n], by_prune_to.kept()[n]) for n in one_shot.kept())
        chosen.append(one_shot.kept()["layers.1.ffn"])
    assert torch.equal(*chosen)


def reversed_magnitude(gated):
    """A user's criterion (named as module:function in prune.importance): the weakest units first."""
    from compress.methods.criteria import magnitude

    return {name: -score for name, score in magnitude(gated).items()}


def test_a_users_criterion_replaces_the_methods(teacher):
    strongest = compress.attach(teacher, _recipe("magnitude"))
    strongest.method.one_shot()
    weakest = compress.attach(teacher, _recipe("magnitude", **{"prune.importance": f"{__name__}:reversed_magnitude"}))
    weakest.method.one_shot()
    kept_strong, kept_weak = strongest.kept()["layers.0.ffn"], weakest.kept()["layers.0.ffn"]
    dropped_by_strongest = set(range(teacher.config.intermediate_size)) - set(kept_strong.tolist())
    assert kept_strong.numel() == kept_weak.numel() and dropped_by_strongest <= set(kept_weak.tolist())
    with pytest.raises(compress.RecipeError, match="prune.importance"):
        compress.attach(teacher, _recipe("magnitude", **{"prune.importance": "magnitudes"}))


@pytest.mark.parametrize("method", ["magnitude", "taylor", "random"])
def test_one_shot_hits_the_uniform_target_and_folds_exactly(teacher, method):
    job = compress.attach(teacher, _recipe(method))
    batch = token_batch(teacher.config.vocab_size)
    if method == "taylor":
        _calibrate(job, batch)
    job.method.one_shot()
    assert job.method.current_sizes() == job.final_sizes() == {"hidden": 32, "heads": 4, "ffn": 55}
    assert abs(job.structure().encoder_sparsity - 0.5) <= 0.01
    assert _fold_error(job, batch) <= TOL


def test_criteria_choose_different_units(teacher):
    chosen = {}
    for method in ("magnitude", "taylor", "random"):
        torch.manual_seed(1)
        job = compress.attach(teacher, _recipe(method))
        if method == "taylor":
            _calibrate(job, token_batch(teacher.config.vocab_size))
        job.method.one_shot()
        chosen[method] = job.kept()["layers.0.ffn"].tolist()
    assert len({tuple(v) for v in chosen.values()}) == 3


def test_taylor_needs_gradients_and_averages_them(teacher):
    job = compress.attach(teacher, _recipe("taylor"))
    with pytest.raises(compress.TargetError, match="taylor importance needs gradients: train with train.max_steps > 0"):
        job.method.one_shot()
    batch = token_batch(teacher.config.vocab_size)
    _calibrate(job, batch, steps=1)
    first = job.method.importance()["layers.0.ffn"]
    layer = job.model.encoder.layer[0]
    taylor = (layer.intermediate.dense.weight * layer.intermediate.dense.weight.grad).abs().sum(dim=1)
    taylor = taylor + (layer.output.dense.weight * layer.output.dense.weight.grad).abs().sum(dim=0)
    torch.testing.assert_close(first, taylor)
    current = job.method.criterion.step_scores(job.gated)["layers.0.ffn"]
    job.method.before_optimizer_step(1)
    torch.testing.assert_close(job.method.importance()["layers.0.ffn"], 0.9 * first + 0.1 * current)
    assert f"{TAYLOR_ATTR}.updates" in job.model.state_dict(), "checkpoints carry the running scores"
    # The loss never reaches the pooler: scoring gave it a zero gradient only while it ran.
    assert job.model.pooler.dense.weight.grad is None


def _drive(job: compress.CompressionJob, steps: int) -> list[dict[str, int]]:
    """Call the method's step hook like the trainer does; the sizes after each step (step counts from 1)."""
    history = []
    for step in range(1, steps + 1):
        previous = {n: set(job.kept()[n].tolist()) for n in job.gates.names()}
        job.method.after_step(step)
        now = job.kept()
        assert all(set(now[n].tolist()) <= previous[n] for n in previous), "removed units never return"
        history.append(job.method.current_sizes())
    return history


def test_iterative_per_axis_schedules_reach_the_exact_target(teacher):
    schedule = {
        "hidden": {"kind": "constant", "start_step": 6},
        "ffn": {"kind": "step", "n_steps": 3, "start_step": 0, "end_step": 9},
        "default": {"kind": "linear", "start_step": 2, "ramp_steps": 4},
    }
    job = compress.attach(teacher, _recipe("magnitude", **{"prune.schedule": schedule}))
    history = _drive(job, 10)
    final = {"hidden": 32, "heads": 4, "ffn": 55}
    assert [h["hidden"] for h in history] == [48] * 5 + [32] * 5
    # 6 - round(2 * (step - 2) / 4), Python rounding half to even: 0.5 -> 0, 1.5 -> 2
    assert [h["heads"] for h in history] == [6, 6, 6, 5, 4, 4, 4, 4, 4, 4]
    assert [h["ffn"] for h in history] == [64, 64, 61, 61, 61, 58, 58, 58, 55, 55]
    assert history[-1] == final == job.final_sizes()
    assert abs(job.structure().encoder_sparsity - 0.5) <= 0.01
    assert _fold_error(job, token_batch(teacher.config.vocab_size)) <= TOL


def test_custom_schedule_callable_named_in_a_recipe_is_used(teacher, tmp_path, monkeypatch):
    (tmp_path / "my_schedules.py").write_text(textwrap.dedent("""
        def halves(step):
            return 0.0 if step < 3 else 0.5 if step < 7 else 1.0
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(textwrap.dedent("""
        name: mine
        prune: {method: random, axes: [ffn], target_sparsity: null, target: {ffn: 16},
                schedule: "my_schedules:halves"}
    """))
    job = compress.attach(teacher, compress.load_recipe(recipe_file))
    assert [h["ffn"] for h in _drive(job, 8)] == [64, 64, 40, 40, 40, 40, 16, 16]
    sys.modules.pop("my_schedules", None)


def test_minilm_one_shot_magnitude_to_half_the_encoder(minilm, sentences):
    teacher, tokenizer = minilm
    job = compress.attach(teacher, "bert-magnitude")
    job.method.one_shot()
    assert abs(job.structure().encoder_sparsity - 0.5) <= 0.01
    job.model.eval()
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        gated = job.model(**batch).last_hidden_state[..., job.kept()["hidden"]]
        student = job.fold()
        folded = student(**batch).last_hidden_state
    assert type(student) is transformers.BertModel, "a uniform structure saves with the stock config"
    assert (folded - gated).abs().max().item() <= TOL
