"""Recipes: bundled names, files, overrides and validation."""

from __future__ import annotations

import pytest

import compress


def test_bundled_recipe_loads_with_its_values():
    recipe = compress.load_recipe("bert-l0")
    assert "bert-l0" in compress.bundled_recipes()
    assert recipe.name == "bert-l0" and recipe.family == "bert"
    assert recipe.prune["axes"] == ["hidden", "heads", "ffn", "attention", "mlp"]
    assert recipe["prune.target_sparsity"] == 0.5 and recipe["train.gate_lr"] == 0.1
    assert recipe.export["format"] == "auto"


def test_override_returns_a_new_validated_recipe():
    recipe = compress.load_recipe("bert-l0")
    changed = recipe.override({"prune.target_sparsity": 0.6, "train.max_steps": 10})
    assert changed["prune.target_sparsity"] == 0.6 and changed["train.max_steps"] == 10
    assert recipe["prune.target_sparsity"] == 0.5, "the original is unchanged"
    explicit = recipe.override({"prune.target_sparsity": None, "prune.target": {"hidden": 256, "ffn": 1024}})
    assert explicit["prune.target"] == {"hidden": 256, "ffn": 1024}


def test_with_steps_keeps_the_schedule_the_same_share_of_stage_one():
    magnitude = compress.load_recipe("bert-magnitude")  # cubic to step 300 of 400, every 25 steps
    short = magnitude.with_steps(100, 30)
    assert (short.train["max_steps"], short.finetune["max_steps"]) == (100, 30)
    assert short.prune["schedule"] == {"kind": "cubic", "start_step": 0, "end_step": 75, "interval": 6}
    l0 = compress.load_recipe("bert-l0")
    ramp = l0.prune["schedule"]["ramp_steps"] / l0.train["max_steps"]
    longer = l0.with_steps(4 * l0.train["max_steps"], 10)
    assert longer.prune["schedule"]["ramp_steps"] / longer.train["max_steps"] == ramp
    layer_drop = compress.load_recipe("bert-layer-drop").with_steps(0, 50)  # no stage 1: nothing to scale
    assert layer_drop.prune["schedule"] == {"kind": "constant"} and layer_drop.finetune["max_steps"] == 50


def test_file_recipe_gets_defaults(tmp_path):
    path = tmp_path / "small.yaml"
    path.write_text("name: small\nprune: {axes: [heads, ffn], target_sparsity: 0.3}\n")
    recipe = compress.load_recipe(path)
    assert recipe.family == "bert" and recipe.prune["method"] == "l0"
    assert recipe["train.seq_len"] == 64 and recipe["data.held_out"] == 0.1


@pytest.mark.parametrize(
    "updates, message",
    [
        ({"prune.target_sparsity": 1.0}, "must be in \\[0, 1\\)"),
        ({"prune.target_sparsity": "half"}, "must be int or float"),
        ({"prune.target": {"hidden": 256}}, "exactly one of 'prune.target_sparsity'"),
        ({"prune.target_sparsity": None}, "exactly one of"),
        ({"prune.axes": ["hidden", "neurons"]}, "must be a non-empty list of hidden, heads"),
        ({"prune.method": "magic"}, "must be one of l0"),
        ({"train.batch_size": 0}, "must be >= 1"),
        ({"train.lr": -1.0}, "must be > 0"),
        ({"distill.layers": [[0, 1, 2]]}, "pairs"),
        ({"export.format": "onnx"}, "must be one of auto, stock, heterogeneous"),
        ({"prune.schedule": "no_colon"}, "module:function"),
        ({"name": None}, "'name' is required"),
        ({"train.max_steps.x": 1}, "unknown key"),
    ],
)
def test_bad_values_are_clear_errors(updates, message):
    with pytest.raises(compress.RecipeError, match=message):
        compress.load_recipe("bert-l0").override(updates)


def test_l0_takes_a_single_schedule():
    recipe = compress.load_recipe("bert-l0")
    with pytest.raises(compress.RecipeError, match="one schedule per axis, but method l0"):
        recipe.override({"prune.schedule": {"ffn": {"kind": "linear", "ramp_steps": 10}, "default": {"kind": "constant"}}})


def test_target_for_an_ungated_axis_is_an_error():
    recipe = compress.load_recipe("bert-l0")
    with pytest.raises(compress.RecipeError, match="not in 'prune.axes'"):
        recipe.override({"prune.axes": ["heads"], "prune.target_sparsity": None, "prune.target": {"ffn": 100}})


def test_unknown_recipe_name_lists_the_bundled_ones(tmp_path):
    with pytest.raises(compress.RecipeError, match="no recipe named 'bert-l1'.*bert-l0"):
        compress.load_recipe("bert-l1")
    with pytest.raises(compress.RecipeError, match="does not exist"):
        compress.load_recipe(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(compress.RecipeError, match="not valid YAML"):
        compress.load_recipe(bad)
