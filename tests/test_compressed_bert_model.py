"""Tests for the self-contained heterogeneous BERT in compress/students/modeling_compressed_bert.py.

The model file is imported by path: it must work without the package (it is shipped alone next to exported
checkpoints), and package ``__init__`` files may not exist yet.
"""

import ast
import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    BertConfig,
    BertForMaskedLM,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
)

MODEL_FILE = Path(__file__).resolve().parents[1] / "compress" / "students" / "modeling_compressed_bert.py"


def _load_model_module():
    spec = importlib.util.spec_from_file_location("modeling_compressed_bert", MODEL_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


mcb = _load_model_module()

VOCAB, HIDDEN = 100, 32
BATCH, SEQ = 3, 9

# Four layers so every special case appears once:
# layer 0 full size; layer 1 odd head width and a zero-width (but present) FFN;
# layer 2 zero heads (attention present) and FFN removed; layer 3 attention removed and a tiny FFN.
HETERO = dict(
    vocab_size=VOCAB,
    hidden_size=HIDDEN,
    num_hidden_layers=4,
    layer_heads=[4, 1, 0, 2],
    layer_head_size=[8, 5, 8, 3],
    layer_intermediate_size=[48, 0, 7, 16],
    layer_attention=[True, True, True, False],
    layer_mlp=[True, True, False, True],
    max_position_embeddings=64,
)


def bert_config(**overrides) -> BertConfig:
    values = dict(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=64,
    )
    values.update(overrides)
    return BertConfig(**values)


def twin_config(config: BertConfig):
    """The CompressedBertConfig describing exactly the same (uniform) architecture as a BertConfig."""
    n = config.num_hidden_layers
    return mcb.CompressedBertConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        num_hidden_layers=n,
        layer_heads=[config.num_attention_heads] * n,
        layer_head_size=[config.hidden_size // config.num_attention_heads] * n,
        layer_intermediate_size=[config.intermediate_size] * n,
        hidden_act=config.hidden_act,
        max_position_embeddings=config.max_position_embeddings,
        type_vocab_size=config.type_vocab_size,
        layer_norm_eps=config.layer_norm_eps,
        pad_token_id=config.pad_token_id,
        num_labels=config.num_labels,
        problem_type=config.problem_type,
    )


def padded_batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(1, VOCAB, (BATCH, SEQ), generator=generator)
    attention_mask = torch.ones(BATCH, SEQ, dtype=torch.long)
    attention_mask[1, 6:] = 0
    attention_mask[2, 3:] = 0
    input_ids[attention_mask == 0] = 0
    token_type_ids = torch.zeros(BATCH, SEQ, dtype=torch.long)
    token_type_ids[:, 4:] = 1
    return dict(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)


def randomize_(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every parameter (biases and LayerNorms included) non-trivial values, so nothing passes by being zero."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.3)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a - b).abs().max().item()


def expected_param_count(cfg, pooler: bool) -> int:
    h = cfg.hidden_size
    total = (cfg.vocab_size + cfg.max_position_embeddings + cfg.type_vocab_size) * h + 2 * h
    for heads, size, ffn, attention, mlp in zip(
        cfg.layer_heads, cfg.layer_head_size, cfg.layer_intermediate_size, cfg.layer_attention, cfg.layer_mlp
    ):
        width = heads * size
        total += 2 * h + 2 * h  # the two LayerNorms always exist
        if attention:
            total += 3 * (h * width + width) + width * h + h
        if mlp:
            total += h * ffn + ffn + ffn * h + h
    if pooler:
        total += h * h + h
    return total


# ---------------------------------------------------------------- 1. uniform config == stock BERT


def _labels(kind: str, batch: dict[str, torch.Tensor], num_labels: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    if kind == "token":
        labels = torch.randint(0, num_labels, (BATCH, SEQ), generator=generator)
        labels[batch["attention_mask"] == 0] = -100
        return labels
    if kind == "mlm":
        labels = torch.full((BATCH, SEQ), -100)
        labels[:, 1:4] = torch.randint(0, VOCAB, (BATCH, 3), generator=generator)
        return labels
    if kind == "single_label_classification":
        return torch.randint(0, num_labels, (BATCH,), generator=generator)
    if kind == "regression":
        return torch.randn(BATCH, generator=generator)
    return torch.randint(0, 2, (BATCH, num_labels), generator=generator).float()  # multi-label


@pytest.mark.parametrize(
    "stock_cls, twin_name, label_kind, num_labels",
    [
        (BertModel, "CompressedBertModel", None, 2),
        (BertForMaskedLM, "CompressedBertForMaskedLM", "mlm", 2),
        (BertForSequenceClassification, "CompressedBertForSequenceClassification", "single_label_classification", 3),
        (BertForSequenceClassification, "CompressedBertForSequenceClassification", "regression", 1),
        (BertForSequenceClassification, "CompressedBertForSequenceClassification", "multi_label", 4),
        (BertForTokenClassification, "CompressedBertForTokenClassification", "token", 5),
    ],
)
def test_uniform_config_matches_stock_bert(stock_cls, twin_name, label_kind, num_labels):
    torch.manual_seed(0)
    config = bert_config(num_labels=num_labels)
    stock = stock_cls(config).eval()
    randomize_(stock)
    twin = getattr(mcb, twin_name)(twin_config(config)).eval()
    twin.load_state_dict(stock.state_dict(), strict=True)

    batch = padded_batch()
    if label_kind is not None:
        batch["labels"] = _labels(label_kind, batch, num_labels)
    with torch.no_grad():
        want = stock(**batch, output_hidden_states=True)
        got = twin(**batch, output_hidden_states=True)

    if stock_cls is BertModel:
        assert max_diff(got.last_hidden_state, want.last_hidden_state) <= 1e-5
        assert max_diff(got.pooler_output, want.pooler_output) <= 1e-5
    else:
        assert max_diff(got.logits, want.logits) <= 1e-5
        assert abs(got.loss.item() - want.loss.item()) <= 1e-5
        assert twin.config.problem_type == stock.config.problem_type
    assert len(got.hidden_states) == len(want.hidden_states) == config.num_hidden_layers + 1
    for mine, theirs in zip(got.hidden_states, want.hidden_states):
        assert max_diff(mine, theirs) <= 1e-5


def test_uniform_attentions_match_stock_eager_bert():
    config = bert_config(attn_implementation="eager")
    stock = BertModel(config).eval()
    randomize_(stock)
    twin = mcb.CompressedBertModel(twin_config(config)).eval()
    twin.load_state_dict(stock.state_dict(), strict=True)
    batch = padded_batch()
    with torch.no_grad():
        want = stock(**batch, output_attentions=True)
        got = twin(**batch, output_attentions=True)
    assert len(got.attentions) == config.num_hidden_layers
    for mine, theirs in zip(got.attentions, want.attentions):
        assert max_diff(mine, theirs) <= 1e-5
    assert max_diff(got.last_hidden_state, want.last_hidden_state) <= 1e-5


def test_mlm_decoder_is_tied_like_bert():
    model = mcb.CompressedBertForMaskedLM(twin_config(bert_config()))
    stock = BertForMaskedLM(bert_config())
    assert model._tied_weights_keys == stock._tied_weights_keys
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    assert model.cls.predictions.decoder.bias is model.cls.predictions.bias
    assert model.get_output_embeddings() is model.cls.predictions.decoder
    assert model.get_input_embeddings() is model.bert.embeddings.word_embeddings
    assert torch.count_nonzero(model.cls.predictions.bias) == 0
    padding_row = model.bert.embeddings.word_embeddings.weight[0]
    assert torch.count_nonzero(padding_row) == 0


# ---------------------------------------------------------------- 2. heterogeneous layers


def test_heterogeneous_forward_shapes_and_outputs():
    torch.manual_seed(0)
    config = mcb.CompressedBertConfig(**HETERO)
    model = mcb.CompressedBertModel(config).eval()
    randomize_(model)
    batch = padded_batch()
    with torch.no_grad():
        out = model(**batch, output_hidden_states=True, output_attentions=True)
        fast = model(**batch)

    assert out.last_hidden_state.shape == (BATCH, SEQ, HIDDEN)
    assert out.pooler_output.shape == (BATCH, HIDDEN)
    assert len(out.hidden_states) == config.num_hidden_layers + 1
    assert all(h.shape == (BATCH, SEQ, HIDDEN) for h in out.hidden_states)
    assert torch.equal(out.hidden_states[-1], out.last_hidden_state)
    assert fast.hidden_states is None and fast.attentions is None
    # The eager path (taken to return attentions) and the SDPA path agree.
    assert max_diff(out.last_hidden_state, fast.last_hidden_state) <= 1e-5

    assert [a.shape for a in out.attentions] == [
        (BATCH, 4, SEQ, SEQ),
        (BATCH, 1, SEQ, SEQ),
        (BATCH, 0, SEQ, SEQ),
        (BATCH, 0, SEQ, SEQ),
    ]
    for probs in out.attentions[:2]:
        assert torch.allclose(probs.sum(-1), torch.ones(()), atol=1e-5)
        padded_keys = (batch["attention_mask"] == 0)[:, None, None, :].expand_as(probs)
        assert probs[padded_keys].max() < 1e-6


def test_heterogeneous_parameter_count():
    config = mcb.CompressedBertConfig(**HETERO)
    with_pooler = mcb.CompressedBertModel(config)
    without_pooler = mcb.CompressedBertModel(config, add_pooling_layer=False)
    assert sum(p.numel() for p in with_pooler.parameters()) == expected_param_count(config, pooler=True)
    assert sum(p.numel() for p in without_pooler.parameters()) == expected_param_count(config, pooler=False)
    names = set(with_pooler.state_dict())
    assert "encoder.layer.3.attention.self.query.weight" not in names
    assert "encoder.layer.3.attention.output.dense.weight" not in names
    assert "encoder.layer.3.attention.output.LayerNorm.weight" in names
    assert "encoder.layer.2.intermediate.dense.weight" not in names
    assert "encoder.layer.2.output.dense.weight" not in names
    assert "encoder.layer.2.output.LayerNorm.weight" in names
    assert with_pooler.encoder.layer[2].attention.output.dense.weight.shape == (HIDDEN, 0)
    assert with_pooler.encoder.layer[1].output.dense.weight.shape == (HIDDEN, 0)


def _layer_norm(x: torch.Tensor, norm: torch.nn.LayerNorm) -> torch.Tensor:
    mean = x.mean(-1, keepdim=True)
    var = x.var(-1, unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


def test_removed_and_empty_sublayers_compute_the_residual_path():
    """Check layers 1-3 against hand-written formulas on their own weights."""
    config = mcb.CompressedBertConfig(**HETERO)
    model = mcb.CompressedBertModel(config).eval()
    randomize_(model, seed=3)
    batch = padded_batch()
    with torch.no_grad():
        states = model(**batch, output_hidden_states=True).hidden_states
        gelu = torch.nn.functional.gelu

        # Layer 3: attention removed -> LayerNorm(residual); then a normal 16-wide FFN.
        layer = model.encoder.layer[3]
        x = states[3]
        attended = _layer_norm(x, layer.attention.output.LayerNorm)
        assert not hasattr(layer.attention, "self") and not hasattr(layer.attention.output, "dense")
        ffn = layer.output.dense(gelu(layer.intermediate.dense(attended)))
        assert max_diff(states[4], _layer_norm(attended + ffn, layer.output.LayerNorm)) <= 1e-5

        # Layer 2: zero heads (attention present) -> LayerNorm(residual + dense.bias); FFN removed.
        layer = model.encoder.layer[2]
        x = states[2]
        attended = _layer_norm(x + layer.attention.output.dense.bias, layer.attention.output.LayerNorm)
        assert max_diff(states[3], _layer_norm(attended, layer.output.LayerNorm)) <= 1e-5

        # Layer 1: zero-width FFN (present) -> LayerNorm(attention_output + output.dense.bias).
        layer = model.encoder.layer[1]
        update = layer._attention(states[1], None, False)[0]
        attention_output = _layer_norm(states[1] + update, layer.attention.output.LayerNorm)
        expected = _layer_norm(attention_output + layer.output.dense.bias, layer.output.LayerNorm)
        # Row 0 has no padding, so the unmasked attention call above is what the model computed for it.
        assert max_diff(states[2][0], expected[0]) <= 1e-5


@pytest.mark.parametrize(
    "name, labels",
    [
        ("CompressedBertForMaskedLM", torch.full((BATCH, SEQ), 7)),
        ("CompressedBertForSequenceClassification", torch.tensor([0, 1, 0])),
        ("CompressedBertForTokenClassification", torch.ones(BATCH, SEQ, dtype=torch.long)),
    ],
)
def test_heterogeneous_heads_train(name, labels):
    """Loss and gradients flow through every head and every non-empty parameter."""
    model = getattr(mcb, name)(mcb.CompressedBertConfig(**HETERO)).train()
    out = model(**padded_batch(), labels=labels, output_hidden_states=True)
    assert len(out.hidden_states) == HETERO["num_hidden_layers"] + 1
    assert torch.isfinite(out.loss)
    out.loss.backward()
    for param_name, param in model.named_parameters():
        if param.numel():  # q/k/v of a zero-head layer are empty and never used
            assert param.grad is not None and torch.isfinite(param.grad).all(), param_name
    as_tuple = model.eval()(**padded_batch(), labels=labels, return_dict=False)
    assert isinstance(as_tuple, tuple) and as_tuple[0].dim() == 0


# ---------------------------------------------------------------- 3. save / load


@pytest.mark.parametrize("name", ["CompressedBertModel", "CompressedBertForMaskedLM"])
def test_save_and_load_round_trip(tmp_path, name):
    cls = getattr(mcb, name)
    model = cls(mcb.CompressedBertConfig(**HETERO)).eval()
    randomize_(model)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()

    loaded, info = cls.from_pretrained(tmp_path, output_loading_info=True)
    loaded.eval()
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    for field in ("layer_heads", "layer_head_size", "layer_intermediate_size", "layer_attention", "layer_mlp"):
        assert getattr(loaded.config, field) == HETERO[field]
    # A non-persistent buffer: rebuilt by _init_weights, not read from the file.
    assert torch.equal(loaded.base_model.embeddings.position_ids, torch.arange(64)[None])

    batch = padded_batch()
    with torch.no_grad():
        want = model(**batch, output_hidden_states=True)
        got = loaded(**batch, output_hidden_states=True)
    main = "last_hidden_state" if name == "CompressedBertModel" else "logits"
    assert max_diff(got[main], want[main]) <= 1e-6
    for mine, theirs in zip(got.hidden_states, want.hidden_states):
        assert max_diff(mine, theirs) <= 1e-6

    if name == "CompressedBertForMaskedLM":
        saved = load_file(tmp_path / "model.safetensors")
        assert "cls.predictions.decoder.weight" not in saved  # tied copies are not stored
        assert loaded.cls.predictions.decoder.weight is loaded.bert.embeddings.word_embeddings.weight
        assert loaded.cls.predictions.decoder.bias is loaded.cls.predictions.bias


def test_model_file_imports_only_torch_transformers_and_stdlib():
    tree = ast.parse(MODEL_FILE.read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative imports break the standalone copy"
            roots.add(node.module.split(".")[0])
    assert roots - set(sys.stdlib_module_names) <= {"torch", "transformers"}


def test_standalone_copy_loads_with_trust_remote_code(tmp_path):
    """Ship the file alone next to a checkpoint and load it with the Auto classes in a fresh process."""
    export = tmp_path / "export"
    model = mcb.CompressedBertForMaskedLM(mcb.CompressedBertConfig(**HETERO)).eval()
    randomize_(model)
    model.config.auto_map = {
        "AutoConfig": "modeling_compressed_bert.CompressedBertConfig",
        "AutoModel": "modeling_compressed_bert.CompressedBertModel",
        "AutoModelForMaskedLM": "modeling_compressed_bert.CompressedBertForMaskedLM",
    }
    model.save_pretrained(export)
    shutil.copy(MODEL_FILE, export / "modeling_compressed_bert.py")
    batch = padded_batch()
    with torch.no_grad():
        expected = {
            "logits": model(**batch).logits,
            "last_hidden_state": model.bert(**batch).last_hidden_state,
        }
    torch.save({"batch": batch, "expected": expected}, tmp_path / "io.pt")

    script = textwrap.dedent(
        f"""
        import sys, torch
        from transformers import AutoModel, AutoModelForMaskedLM
        io = torch.load({str(tmp_path / "io.pt")!r})
        mlm = AutoModelForMaskedLM.from_pretrained({str(export)!r}, trust_remote_code=True).eval()
        base = AutoModel.from_pretrained({str(export)!r}, trust_remote_code=True).eval()
        assert type(mlm).__name__ == "CompressedBertForMaskedLM", type(mlm)
        assert mlm.cls.predictions.decoder.weight is mlm.bert.embeddings.word_embeddings.weight
        with torch.no_grad():
            diffs = [
                (mlm(**io["batch"]).logits - io["expected"]["logits"]).abs().max().item(),
                (base(**io["batch"]).last_hidden_state - io["expected"]["last_hidden_state"]).abs().max().item(),
            ]
        print(diffs)
        sys.exit(0 if max(diffs) <= 1e-6 else 1)
        """
    )
    env = dict(os.environ, HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1")
    # Run from tmp_path so the repository (and its `compress` package) is not importable.
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------- 4. config validation


@pytest.mark.parametrize(
    "field, value",
    [
        ("layer_heads", [4, 4]),
        ("layer_head_size", [8, 8, 8, 8, 8]),
        ("layer_intermediate_size", [48, -1, 7, 16]),
        ("layer_attention", [True, False]),
        ("layer_mlp", [True, True, 1, True]),
        ("layer_heads", 4),
    ],
)
def test_bad_layer_list_raises_value_error_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        mcb.CompressedBertConfig(**{**HETERO, field: value})


def test_config_defaults_are_bert_base_and_round_trip_through_dict():
    config = mcb.CompressedBertConfig()
    assert config.layer_heads == [12] * 12
    assert config.layer_head_size == [64] * 12
    assert config.layer_intermediate_size == [3072] * 12
    assert config.layer_attention == [True] * 12 and config.layer_mlp == [True] * 12
    assert config.tie_word_embeddings is True
    assert not hasattr(config, "num_attention_heads") and not hasattr(config, "intermediate_size")
    again = mcb.CompressedBertConfig.from_dict(mcb.CompressedBertConfig(**HETERO).to_dict())
    assert again.layer_heads == HETERO["layer_heads"] and again.layer_mlp == HETERO["layer_mlp"]
