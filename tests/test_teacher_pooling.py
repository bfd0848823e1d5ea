"""Fidelity embeds the teacher's way: a sentence-transformers teacher's pooling, normalisation and length.

Also: a ``SentenceTransformer`` object is a teacher like its folder, and pipelines the student cannot
carry are refused the same way for both.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers
from sentence_transformers import SentenceTransformer, models

import compress
from compress.data import split_source
from compress.errors import UnsupportedModelError
from compress.evaluate import embedding_fidelity, held_out_sentences, pairwise_cosine, spearman
from compress.sentence import PIPELINE_SOURCE, POOLERS, Pooling, pooling_modes, read_pipeline
from compress.teachers import default_teacher_path, small_random_bert

#: a short real run on the tiny teacher (2 layers, hidden 48): both training stages, fidelity after each
SHORT = {
    "train.max_steps": 4,
    "train.batch_size": 4,
    "train.seq_len": 32,
    "finetune.max_steps": 2,
    "prune.schedule": {"kind": "linear", "start_step": 0, "ramp_steps": 2},
    "distill.layers": [[0, 0], [1, 1], [2, 2]],
}
#: the CLS teacher's max_seq_length: shorter than many held-out snippets, so a wrong length shows
MAX_SEQ = 64
#: files that describe a sentence-transformers pipeline in a student folder
PIPELINE_FILES = (
    "modules.json",
    "1_Pooling/config.json",
    "2_Normalize/config.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
)
CARRY_ONLY = "can carry over Transformer, Pooling and Normalize only"


def sentence_teacher(folder: Path, tokenizer, pooling_mode: str = "cls", extra: tuple = ()) -> SentenceTransformer:
    """A random tiny BERT wrapped as a sentence-transformers pipeline (pooling, then unit length)."""
    encoder_dir = folder / "encoder"
    small_random_bert(tokenizer.vocab_size).save_pretrained(encoder_dir)
    tokenizer.save_pretrained(encoder_dir)
    encoder = models.Transformer(str(encoder_dir), max_seq_length=MAX_SEQ)
    pooling = models.Pooling(encoder.auto_model.config.hidden_size, pooling_mode=pooling_mode)
    return SentenceTransformer(modules=[encoder, pooling, models.Normalize(), *extra], device="cpu")


@pytest.fixture(scope="module")
def cls_teacher_dir(tmp_path_factory, minilm) -> Path:
    folder = tmp_path_factory.mktemp("cls-teacher")
    sentence_teacher(folder, minilm[1]).save(str(folder / "teacher"))
    return folder / "teacher"


@pytest.fixture(scope="module")
def cls_student(cls_teacher_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cls-runs") / "from-folder"
    return compress.run("bert-l0", teacher=cls_teacher_dir, out=out, overrides=SHORT, progress=False)


def held_out_texts() -> list[str]:
    """The held-out sentences a bert-l0 run on the built-in corpus scores fidelity on."""
    recipe = compress.load_recipe("bert-l0")
    _, held = split_source(recipe.data["text"], recipe.data["held_out"], recipe.train["seed"])
    return held_out_sentences(held)


def record(folder: Path) -> dict:
    return json.loads((folder / "compression.json").read_text())


def random_states(left_padding: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Random (3, 7, 5) token states and a mask with rows of 7, 4 and 1 tokens, padded at one end."""
    hidden = torch.randn(3, 7, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mask = torch.zeros(3, 7, dtype=torch.long)
    for row, length in enumerate((7, 4, 1)):
        (mask[row, 7 - length :] if left_padding else mask[row, :length]).fill_(1)
    return hidden, mask


@pytest.mark.parametrize("left_padding", [False, True])
@pytest.mark.parametrize("modes", [(mode,) for mode in POOLERS] + [("cls", "mean", "max")])
def test_every_pooling_mode_pools_as_sentence_transformers_does(modes, left_padding):
    hidden, mask = random_states(left_padding)
    theirs = models.Pooling(hidden.shape[-1], pooling_mode=modes if len(modes) > 1 else modes[0])
    expected = theirs({"token_embeddings": hidden, "attention_mask": mask})["sentence_embedding"]
    pooled = Pooling(modes)(hidden, mask)
    assert pooled.shape == (3, 5 * len(modes))
    assert (pooled - expected).abs().max().item() <= 1e-10
    unit = Pooling(modes, normalize=True)(hidden, mask)
    assert torch.allclose(unit, torch.nn.functional.normalize(expected, dim=-1), atol=1e-10)


def test_pooling_configs_of_every_version_and_unknown_modes():
    assert pooling_modes({"pooling_mode": "cls", "include_prompt": True}) == ("cls",)
    assert pooling_modes({"pooling_mode": ["mean", "max"]}) == ("mean", "max")
    # sentence-transformers < 5: one flag per mode, concatenated in its fixed order; none set is mean.
    assert pooling_modes({"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": True}) == ("cls", "mean")
    assert pooling_modes({"word_embedding_dimension": 8, "pooling_mode_cls_token": False}) == ("mean",)
    with pytest.raises(UnsupportedModelError, match="pooling_mode_fancy_tokens"):
        pooling_modes({"pooling_mode_fancy_tokens": True})
    with pytest.raises(UnsupportedModelError, match="'attention'.*pooling modes"):
        Pooling(("attention",))


def test_the_minilm_pipeline_pools_by_mean_to_unit_length_over_256_tokens():
    assert read_pipeline(default_teacher_path()).pooling == Pooling(("mean",), True, 256, PIPELINE_SOURCE)


def test_a_cls_teacher_gives_a_cls_student_and_its_fidelity_uses_cls_pooling(cls_teacher_dir, cls_student, minilm):
    student_width = transformers.AutoConfig.from_pretrained(cls_student, trust_remote_code=True).hidden_size
    pooling = json.loads((cls_student / "1_Pooling/config.json").read_text())
    assert pooling["pooling_mode"] == "cls" and pooling["embedding_dimension"] == student_width < 48
    metrics = record(cls_student)["metrics"]
    assert metrics["pooling"] == {"modes": ["cls"], "normalize": True, "max_length": MAX_SEQ, "source": PIPELINE_SOURCE}

    # The figure is what sentence-transformers' own embeddings of teacher and student give.
    texts = held_out_texts()
    assert len(texts) == metrics["held_out_sentences"]
    teacher = SentenceTransformer(str(cls_teacher_dir), device="cpu")
    student = SentenceTransformer(str(cls_student), device="cpu", trust_remote_code=True)
    assert teacher.max_seq_length == student.max_seq_length == MAX_SEQ
    embedded = [model.encode(texts, convert_to_tensor=True) for model in (teacher, student)]
    independent = spearman(*(pairwise_cosine(e) for e in embedded))
    assert metrics["fidelity_after_finetune"] == pytest.approx(independent, abs=1e-5)

    # Mean pooling (what a plain transformers teacher gets) would have given another figure.
    encoders = teacher[0].auto_model, student[0].auto_model
    mean = embedding_fidelity(*encoders, minilm[1], texts, pooling=Pooling(max_length=MAX_SEQ))
    assert abs(mean - metrics["fidelity_after_finetune"]) > 0.05


def test_a_plain_transformers_teacher_records_mean_pooling(tiny_teacher_dir, tmp_path):
    overrides = {"train.max_steps": 0, "finetune.max_steps": 0, "distill.layers": [[0, 0], [2, 2]]}
    out = compress.run("bert-l0", teacher=tiny_teacher_dir, out=tmp_path / "s", progress=False, overrides=overrides)
    metrics = record(out)["metrics"]
    assert "fidelity_after_prune" in metrics
    assert metrics["pooling"] == {"modes": ["mean"], "normalize": False, "max_length": 128, "source": Pooling().source}


def test_a_sentence_transformer_object_is_a_teacher_like_its_folder(cls_teacher_dir, cls_student, tmp_path):
    teacher = SentenceTransformer(str(cls_teacher_dir), device="cpu")
    out = compress.run("bert-l0", teacher=teacher, out=tmp_path / "from-object", overrides=SHORT, progress=False)

    def layout(folder: Path) -> set[str]:
        return {str(p.relative_to(folder)) for p in folder.rglob("*")}

    assert layout(out) == layout(cls_student)
    for name in PIPELINE_FILES:
        assert json.loads((out / name).read_text()) == json.loads((cls_student / name).read_text()), name
    from_object, from_folder = record(out)["metrics"], record(cls_student)["metrics"]
    assert from_object["pooling"] == from_folder["pooling"]
    for key in ("fidelity_after_prune", "fidelity_after_finetune"):
        assert from_object[key] == pytest.approx(from_folder[key], abs=1e-6), key
    assert SentenceTransformer(str(out), device="cpu", trust_remote_code=True).max_seq_length == MAX_SEQ


def test_attach_takes_a_sentence_transformer_as_its_encoder(cls_teacher_dir):
    teacher = SentenceTransformer(str(cls_teacher_dir), device="cpu")
    job = compress.attach(teacher, "bert-magnitude")  # fixed gates, all open: the teacher's outputs at attach
    texts = ["A sentence to embed.", "Another, longer sentence to embed here."]
    batch = teacher.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = teacher[0].auto_model.eval()(**batch).last_hidden_state
        got = job.model.eval()(**batch).last_hidden_state
    assert (got - expected).abs().max().item() <= 1e-5


def test_a_sentence_transformer_with_a_dense_layer_is_refused_like_its_folder(tmp_path, minilm):
    teacher = sentence_teacher(tmp_path, minilm[1], "mean", extra=(models.Dense(48, 16),))
    teacher.save(str(tmp_path / "folder"))
    for given in (teacher, tmp_path / "folder"):
        with pytest.raises(UnsupportedModelError, match=f"has modules .*Dense.*{CARRY_ONLY}"):
            compress.run("bert-l0", teacher=given, out=tmp_path / "student", progress=False, overrides=SHORT)
        assert not (tmp_path / "student").exists()
    with pytest.raises(UnsupportedModelError, match=CARRY_ONLY):
        compress.attach(teacher, "bert-l0")
