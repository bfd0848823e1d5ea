"""BERT-like families (RoBERTa, XLM-RoBERTa, CamemBERT, ELECTRA): exact fold of every head, reload without the library."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

import compress
from compress.errors import RecipeError, UnsupportedModelError
from compress.objective import auto_layer_map
from conftest import load_many_elsewhere, randomise_gates, token_batch

TOL = 1e-4
SMALL = dict(vocab_size=120, hidden_size=48, num_hidden_layers=4, num_attention_heads=6, intermediate_size=64,
             max_position_embeddings=40, num_labels=2)  # QA heads need 2
HEADS = ("Model", "ForMaskedLM", "ForSequenceClassification", "ForTokenClassification", "ForQuestionAnswering")

FAMILIES = {
    "roberta": (transformers.RobertaConfig, "Roberta", "CompressedRoberta", HEADS),
    "xlm-roberta": (transformers.XLMRobertaConfig, "XLMRoberta", "CompressedRoberta", HEADS),
    "camembert": (transformers.CamembertConfig, "Camembert", "CompressedRoberta", HEADS),
    "electra": (transformers.ElectraConfig, "Electra", "CompressedElectra", (*HEADS, "ForPreTraining")),
    "distilbert": (transformers.DistilBertConfig, "DistilBert", "CompressedDistilBert", HEADS),
    "mpnet": (transformers.MPNetConfig, "MPNet", "CompressedMPNet", HEADS),
}
#: DistilBERT's own names for the sizes
DISTILBERT_KEYS = {"hidden_size": "dim", "num_attention_heads": "n_heads", "num_hidden_layers": "n_layers",
                   "intermediate_size": "hidden_dim"}
CASES = [(family, head) for family, (*_, heads) in FAMILIES.items() for head in heads]


def _config(family: str, **overrides) -> transformers.PretrainedConfig:
    config_cls = FAMILIES[family][0]
    extra = {"embedding_size": 24} if family == "electra" else {}
    params = {**SMALL, **extra, **overrides}
    if family == "distilbert":
        params = {DISTILBERT_KEYS.get(k, k): v for k, v in params.items()}
    return config_cls(**params)


def _teacher(family: str, head: str, seed: int = 0, **overrides) -> transformers.PreTrainedModel:
    torch.manual_seed(seed)
    return getattr(transformers, f"{FAMILIES[family][1]}{head}")(_config(family, **overrides)).eval()


def _batch(config: transformers.PretrainedConfig) -> dict[str, torch.Tensor]:
    """A padded batch in the family's own way: padding positions hold the pad token (RoBERTa counts positions on it)."""
    batch = token_batch(config.vocab_size)
    ids = batch["input_ids"]
    ids[ids == config.pad_token_id] = config.pad_token_id + 1
    ids[batch["attention_mask"] == 0] = config.pad_token_id
    return batch


def _output(out: transformers.utils.ModelOutput) -> torch.Tensor:
    for key in ("logits", "start_logits", "last_hidden_state"):
        if getattr(out, key, None) is not None:
            return getattr(out, key)
    raise AssertionError(f"no output in {out.keys()}")


def _fold_random(family: str, head: str, seed: int, **overrides):
    teacher = _teacher(family, head, seed, **overrides)
    job = compress.attach(teacher, "bert-l0")
    randomise_gates(job, seed)
    batch = _batch(teacher.config)
    with torch.no_grad():
        gated = job.model.eval()(**batch)
        student = job.fold()
        folded = student.eval()(**batch)
    return job, student, batch, gated, folded


@pytest.mark.parametrize("family, head", CASES)
def test_random_gates_on_every_axis_fold_exactly(family, head):
    job, student, _, gated, folded = _fold_random(family, head, seed=1)
    structure = job.structure()
    # The random state removed something of every kind, so the student is heterogeneous.
    assert structure.per_layer("attention")[1] == 0 and structure.per_layer("mlp")[-1] == 0
    assert structure.sizes["hidden"] < 48 and structure.per_layer("heads")[0] <= 4
    assert type(student).__name__ == f"{FAMILIES[family][2]}{head}"
    expected = _output(gated)
    if head == "Model":
        expected = expected[..., job.kept()["hidden"]]
        if getattr(gated, "pooler_output", None) is not None:  # ELECTRA and DistilBERT have no pooler
            assert (folded.pooler_output - gated.pooler_output[..., job.kept()["hidden"]]).abs().max().item() <= TOL
    assert (_output(folded) - expected).abs().max().item() <= TOL
    assert sum(p.numel() for p in student.parameters()) == structure.parameters


def test_electra_without_embedding_projection_folds_exactly():
    # embedding_size == hidden_size: no embeddings_project, so the embeddings are the hidden axis's writers.
    job, student, _, gated, folded = _fold_random("electra", "ForPreTraining", seed=2, embedding_size=48)
    assert not hasattr(student.electra, "embeddings_project")
    assert (folded.logits - gated.logits).abs().max().item() <= TOL


@pytest.mark.parametrize("family", list(FAMILIES))
def test_students_reload_without_the_library(family, tmp_path):
    """Every head's heterogeneous student and a uniform (stock) one load in a process without compress."""
    cases, expected = [], []
    batch = _batch(_config(family))
    for head in FAMILIES[family][3]:
        _, student, _, _, folded = _fold_random(family, head, seed=3)
        out = compress.save_student(student, tmp_path / head)
        auto = "AutoModel" if head == "Model" else f"AutoModel{head}"
        cases.append((out, auto, True))
        expected.append(_output(folded))
    uniform = _teacher(family, "Model", seed=4)
    job = compress.attach(uniform, "bert-l0")
    # MPNet's shared position bias has a column per head: a stock MPNet keeps every head.
    job.prune_to({"ffn": 40} if family == "mpnet" else {"hidden": 32, "heads": 4, "ffn": 40})
    stock = job.fold().eval()
    out = compress.save_student(stock, tmp_path / "stock")
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == family and "auto_map" not in config
    assert type(stock) is type(uniform)
    with torch.no_grad():
        expected.append(stock(**batch).last_hidden_state)
    cases.append((out, "AutoModel", False))
    loaded = load_many_elsewhere(cases, batch, tmp_path)
    for (folder, _, _), (name, got), want in zip(cases, loaded, expected):
        assert (got - want).abs().max().item() <= 1e-5, folder.name
    assert loaded[-1][0] == type(uniform).__name__
    assert [name for name, _ in loaded[:-1]] == [f"{FAMILIES[family][2]}{h}" for h in FAMILIES[family][3]]


@pytest.mark.parametrize("family, pad", [("roberta", 1), ("mpnet", 1), ("mpnet", 0)])
def test_positions_follow_the_padding_like_the_teacher(family, pad):
    """Left padding shifts RoBERTa's and MPNet's positions (MPNet's padding index is 1 whatever the pad token)."""
    job, student, batch, _, _ = _fold_random(family, "Model", seed=5, pad_token_id=pad)
    ids = torch.full((1, 9), pad)
    ids[0, 3:] = torch.arange(10, 16)
    mask = (ids != pad).long()
    with torch.no_grad():
        gated = job.model.eval()(input_ids=ids, attention_mask=mask).last_hidden_state[..., job.kept()["hidden"]]
        folded = student(input_ids=ids, attention_mask=mask).last_hidden_state
    real = mask[0].bool()
    assert (folded[0, real] - gated[0, real]).abs().max().item() <= TOL


def test_bundled_text_recipe_applies_to_every_bert_like_family_and_others_are_refused():
    teacher = _teacher("roberta", "Model")
    assert compress.attach(teacher, "bert-l0").recipe.family == "roberta"
    recipe = compress.load_recipe("bert-l0").override({"family": "auto"})
    assert compress.attach(teacher, recipe).recipe.family == "roberta"
    electra_recipe = compress.load_recipe("bert-l0").override({"family": "electra"})
    with pytest.raises(RecipeError, match="recipe 'bert-l0' is for family 'electra' but the teacher is 'roberta'"):
        compress.attach(teacher, electra_recipe)
    with pytest.raises(RecipeError, match="is for family 'hubert' but the teacher is 'roberta'"):
        compress.attach(teacher, "hubert-dphubert")


def test_unknown_head_of_a_known_family_is_refused_at_attach():
    torch.manual_seed(0)
    teacher = transformers.RobertaForMultipleChoice(_config("roberta"))
    with pytest.raises(UnsupportedModelError, match="the roberta adapter does not know its head.*RobertaForMaskedLM"):
        compress.attach(teacher, "bert-l0")


@pytest.mark.parametrize("family", ["roberta", "distilbert"])
def test_bundled_recipe_runs_end_to_end_on_another_family(minilm, tmp_path, family):
    """`compress run bert-l0` on a RoBERTa / DistilBERT folder: both stages train, the student is that family's."""
    tokenizer = minilm[1]
    teacher = _teacher(family, "Model", vocab_size=tokenizer.vocab_size, pad_token_id=tokenizer.pad_token_id,
                       max_position_embeddings=40)  # the fidelity's 128 tokens are cut to what positions allow
    teacher.save_pretrained(tmp_path / "teacher")
    tokenizer.save_pretrained(tmp_path / "teacher")
    overrides = {"train.max_steps": 4, "finetune.max_steps": 2, "train.batch_size": 4, "train.seq_len": 32,
                 "family": "auto"}
    out = compress.run("bert-l0", teacher=tmp_path / "teacher", out=tmp_path / "s", overrides=overrides, progress=False)
    record = json.loads((out / "compression.json").read_text())
    assert record["recipe"]["family"] == family
    assert record["recipe"]["distill"]["layers"] == auto_layer_map(4)
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] in (family, f"compressed_{family}")
    student = compress.load_student(out).eval()
    batch = dict(tokenizer(["a short sentence", "and another, longer one"], padding=True, return_tensors="pt"))
    batch.pop("token_type_ids", None)
    with torch.no_grad():
        hidden = student(**batch).last_hidden_state
    assert hidden.shape[-1] == record["structure"]["sizes"]["hidden"] and torch.isfinite(hidden).all()


def test_mpnet_layers_read_their_own_heads_of_the_shared_position_bias():
    teacher = _teacher("mpnet", "Model", seed=6)
    with torch.no_grad():  # a bias large enough that reading the wrong heads' columns shows
        teacher.encoder.relative_attention_bias.weight.normal_(0, 3.0)
    job = compress.attach(teacher, "bert-l0")
    randomise_gates(job, 6)
    batch = _batch(teacher.config)
    with torch.no_grad():
        gated = job.model.eval()(**batch).last_hidden_state[..., job.kept()["hidden"]]
        student = job.fold().eval()
        assert (student(**batch).last_hidden_state - gated).abs().max().item() <= TOL
        index = student.config.layer_head_index
        assert index[0] == job.kept()["layers.0.heads"].tolist() and len(index[0]) < 6
        student.encoder.layer[0].head_index = list(reversed(index[0]))
        assert (student(**batch).last_hidden_state - gated).abs().max().item() > 1e-2
    with pytest.raises(ValueError, match="layer_head_index must list"):
        type(student.config)(**{**student.config.to_dict(), "layer_head_index": [[99]] * 4})
