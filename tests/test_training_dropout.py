"""``train.dropout``: the student trains with the dropout it sets, and gets its own back when training ends.

Every kind of dropout site counts: ``nn.Dropout`` modules and the float probabilities attention
modules keep (Hugging Face BERT reads its module's ``p``, HuBERT a float ``dropout``, the compressed
BERT student a float ``attention_dropout``). A site left out would keep the model stochastic in
training mode, which these tests see as two forward passes that differ.
"""

from __future__ import annotations

import json

import pytest
import torch
import transformers
from transformers import BertModel, HubertModel

import compress
from compress.errors import RecipeError
from compress.students import modeling_compressed_bert as mcb
from compress.trainer import CompressionTrainer, TrainingDropout, dropout_sites
from conftest import tiny_bert_config, token_batch
from speech_helpers import tiny_speech_config
from test_driver import SHORT


def _compressed_bert() -> mcb.CompressedBertModel:
    return mcb.CompressedBertModel(mcb.CompressedBertConfig(
        vocab_size=120, hidden_size=48, num_hidden_layers=2, layer_heads=[6, 3], layer_head_size=[8, 8],
        layer_intermediate_size=[64, 32], max_position_embeddings=32, attention_probs_dropout_prob=0.3,
        hidden_dropout_prob=0.3,
    ))


def _models_and_inputs() -> list[tuple[str, torch.nn.Module, dict]]:
    batch = token_batch(120)
    generator = torch.Generator().manual_seed(0)
    speech = {"input_values": torch.randn(2, 4000, generator=generator)}
    bert = BertModel(tiny_bert_config(hidden_dropout_prob=0.3, attention_probs_dropout_prob=0.3))
    # SpecAugment's time masks are not dropout: the override leaves them, so this model has none
    dropouts = dict(hidden_dropout=0.3, attention_dropout=0.3, activation_dropout=0.3, feat_proj_dropout=0.3)
    hubert = HubertModel(tiny_speech_config(**dropouts, layerdrop=0.0, mask_time_prob=0.0))
    return [("bert", bert, batch), ("compressed-bert", _compressed_bert(), batch), ("hubert", hubert, speech)]


def _hidden(model: torch.nn.Module, inputs: dict) -> torch.Tensor:
    return model(**inputs).last_hidden_state


@pytest.mark.parametrize("name, model, inputs", _models_and_inputs(), ids=lambda v: v if isinstance(v, str) else "")
def test_training_dropout_makes_training_mode_deterministic_and_restores_the_models_own(name, model, inputs):
    torch.manual_seed(0)
    before = [(module, attr, getattr(module, attr)) for module, attr in dropout_sites(model)]
    assert before and all(value == 0.3 for *_, value in before)
    model.train()
    assert not torch.equal(_hidden(model, inputs), _hidden(model, inputs)), "dropout is active in training mode"

    override = TrainingDropout(0.0)
    override.on_train_begin(None, None, None, model=model)
    model.train()
    first, second = _hidden(model, inputs), _hidden(model, inputs)
    assert torch.equal(first, second)
    with torch.no_grad():
        assert torch.allclose(first, _hidden(model.eval(), inputs), atol=1e-6), "training mode now computes what eval mode does"

    override.on_train_end(None, None, None)
    assert [(m, a, getattr(m, a)) for m, a, _ in before] == before
    model.train()
    assert not torch.equal(_hidden(model, inputs), _hidden(model, inputs)), "the model's own dropout is back"


def test_dropout_outside_a_probability_is_refused():
    with pytest.raises(RecipeError, match=r"train\.dropout.*must be in \[0, 1\)"):
        compress.load_recipe("bert-l0").override({"train.dropout": 1.0})
    with pytest.raises(ValueError, match="dropout must be in"):
        TrainingDropout(-0.1)


def test_a_run_trains_without_dropout_and_exports_the_teachers(tiny_teacher_dir, tmp_path):
    seen: list[float] = []

    class Probe(transformers.TrainerCallback):
        def on_step_begin(self, args, state, control, model=None, **kwargs):
            seen.extend(getattr(module, attr) for module, attr in dropout_sites(model))

    original = CompressionTrainer.__init__

    def with_probe(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.add_callback(Probe())

    overrides = {**SHORT, "train.max_steps": 4, "finetune.max_steps": 2, "train.dropout": 0.0}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(CompressionTrainer, "__init__", with_probe)
        out = compress.run("bert-l0", teacher=tiny_teacher_dir, out=tmp_path / "run", overrides=overrides, progress=False)
    assert seen and set(seen) == {0.0}, "both stages trained every dropout site at 0"
    teacher = json.loads((tiny_teacher_dir / "config.json").read_text())
    student = json.loads((out / "config.json").read_text())
    for key in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
        assert student[key] == teacher[key] > 0
    assert json.loads((out / "compression.json").read_text())["recipe"]["train"]["dropout"] == 0.0
