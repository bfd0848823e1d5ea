"""``distill.layers: auto``: a layer map for any depth, so every student layer learns in stage 1."""

from __future__ import annotations

import json

import pytest
import torch

import compress
from compress import pipeline
from compress.objective import auto_layer_map
from conftest import save_tiny_teacher


def test_auto_maps_evenly_spaced_states_with_the_embeddings_and_the_last_layer():
    assert auto_layer_map(6) == [[0, 0], [2, 2], [4, 4], [6, 6]]  # MiniLM: the recipes' earlier explicit map
    assert auto_layer_map(12) == [[0, 0], [4, 4], [8, 8], [12, 12]]  # HuBERT Base, BERT-base, bge-small
    assert auto_layer_map(3) == [[0, 0], [1, 1], [2, 2], [3, 3]]
    assert auto_layer_map(1) == [[0, 0], [1, 1]]
    with pytest.raises(compress.RecipeError, match="at least one layer"):
        auto_layer_map(0)


@pytest.mark.parametrize("layers", [pytest.param(12, marks=pytest.mark.slow), 3])  # 12 layers: slow
def test_every_student_layer_trains_in_stage_1_at_any_depth(minilm, tmp_path, layers):
    """A 12-layer teacher used to get MiniLM's map, so layers 7-12 never changed; a 3-layer one crashed."""
    teacher_dir = save_tiny_teacher(tmp_path / "teacher", minilm[1], layers=layers)
    overrides = {"train.max_steps": 3, "finetune.max_steps": 0, "train.batch_size": 4, "train.seq_len": 32}
    run = pipeline.setup("bert-l0", teacher=teacher_dir, out=tmp_path / "s", overrides=overrides, progress=False)
    pipeline.prune_stage(run)
    teacher_layers, student_layers = run.teacher.encoder.layer, run.job.model.encoder.layer
    for i in range(layers):
        weight = student_layers[i].output.dense.weight
        assert not torch.equal(weight, teacher_layers[i].output.dense.weight), f"layer {i} did not train"
    for stage in pipeline.STAGES[1:]:
        stage(run)
    record = json.loads((tmp_path / "s" / "compression.json").read_text())
    assert record["recipe"]["distill"]["layers"] == auto_layer_map(layers)
