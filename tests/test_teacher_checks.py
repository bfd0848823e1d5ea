"""Teachers and speech data that would load damaged are refused (or loaded honestly), with one clear line each.

Each test reproduces a reported failure on a 2-layer random BERT teacher (or a tiny HuBERT): a folder without
tokenizer files that trained on a 5-token stand-in tokenizer, a question-answering teacher loaded as a bare
encoder, a folder without weights ending in an OSError, a relative teacher path that ``compress report`` could
not find from another folder, and audio paths answered with text-data advice.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import datasets
import pytest
import transformers

import compress
from compress.audio import load_clips
from compress.cli import main
from compress.errors import CompressError, DataError, TeacherError, UnsupportedModelError
from compress.teachers import (
    default_teacher_path,
    load_teacher,
    load_teacher_model,
    small_random_bert,
    tokenizer_problem,
)
from conftest import ONE_SHOT, save_tiny_teacher
from speech_helpers import tiny_speech_config, write_clips

#: the smallest training that reaches the data: two steps of each stage
TRAINS = {**ONE_SHOT, "train.max_steps": 2, "finetune.max_steps": 2, "train.logging_steps": 1}
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message, message
    assert isinstance(err.value, CompressError)
    return message


@pytest.fixture(scope="module")
def no_tokenizer_dir(tmp_path_factory) -> Path:
    """A 2-layer random BERT saved with ``save_pretrained`` only: config and weights, no tokenizer files."""
    folder = tmp_path_factory.mktemp("no-tokenizer") / "teacher"
    small_random_bert(30522).save_pretrained(folder)
    return folder


# --- 1a: tokenizers -------------------------------------------------------------------------------------------


def test_a_folder_without_tokenizer_files_has_no_tokenizer(no_tokenizer_dir, caplog):
    """transformers 5 builds a 5-token tokenizer (every word [UNK]) for such a folder: it is not the teacher's."""
    with caplog.at_level(logging.WARNING, logger="compress.teachers"):
        model, tokenizer = load_teacher(no_tokenizer_dir)
    assert tokenizer is None
    assert type(model).__name__ == "BertModel"
    warning = caplog.text
    assert "no tokenizer files" in warning and "tokenizer.save_pretrained" in warning


def test_a_one_shot_run_without_tokenizer_claims_no_fidelity(no_tokenizer_dir, tmp_path):
    """The reported run scored fidelity 0.998 on [UNK]-only input; without a tokenizer nothing is scored."""
    out = compress.run("bert-l0", teacher=no_tokenizer_dir, out=tmp_path / "run", overrides=ONE_SHOT, progress=False)
    record = json.loads((out / "compression.json").read_text())
    assert not any(key.startswith("fidelity") for key in record.get("metrics", {})), record["metrics"]
    assert not (out / "tokenizer.json").exists() and not (out / "vocab.txt").exists()
    assert (out / "model.safetensors").is_file()


def test_training_without_the_teachers_tokenizer_is_refused(no_tokenizer_dir, tmp_path):
    with pytest.raises(CompressError) as err:
        compress.run("bert-l0", teacher=no_tokenizer_dir, out=tmp_path / "run", overrides=TRAINS, progress=False)
    assert "training needs the teacher's tokenizer" in _one_line(err)
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_tokenizer_files_that_do_not_fit_the_model_are_refused(tmp_path):
    """Tokenizer files are present, but they cover 7 of the model's 30522 embedding rows."""
    folder = tmp_path / "teacher"
    small_random_bert(30522).save_pretrained(folder)
    (folder / "vocab.txt").write_text("\n".join([*SPECIAL, "the", "a"]) + "\n")
    with pytest.raises(TeacherError) as err:
        load_teacher(folder)
    message = _one_line(err)
    assert f"the teacher folder {folder} has no usable tokenizer" in message
    assert "7 tokens" in message and "30522" in message
    assert "tokenizer.save_pretrained" in message and "processor=" in message


def test_a_tokenizer_that_reads_english_as_unknown_is_refused(tmp_path):
    """Large enough for the model (39 of 60 rows), but every word of a plain sentence comes out [UNK]."""
    folder = tmp_path / "teacher"
    small_random_bert(60).save_pretrained(folder)
    greek = [chr(0x3B1 + i) for i in range(24)]
    (folder / "vocab.txt").write_text("\n".join([*SPECIAL, *greek, *map(str, range(10))]) + "\n")
    with pytest.raises(TeacherError) as err:
        load_teacher(folder)
    message = _one_line(err)
    assert "has no usable tokenizer" in message and "[UNK]" in message


def test_a_processor_given_by_the_caller_replaces_the_folders(tmp_path, minilm):
    folder = tmp_path / "teacher"
    small_random_bert(30522).save_pretrained(folder)
    (folder / "vocab.txt").write_text("\n".join([*SPECIAL, "the", "a"]) + "\n")
    _, tokenizer = load_teacher(folder, processor=minilm[1])
    assert tokenizer is minilm[1]
    assert type(load_teacher_model(folder)).__name__ == "BertModel", "the model alone never reads the tokenizer"


def test_the_real_minilm_folder_and_a_saved_tiny_teacher_pass(minilm, tmp_path):
    teacher, tokenizer = minilm
    assert tokenizer is not None and len(tokenizer) == teacher.config.vocab_size == 30522
    assert tokenizer_problem(tokenizer, teacher.config) is None
    assert teacher.config.name_or_path == str(default_teacher_path())
    folder = save_tiny_teacher(tmp_path / "tiny", tokenizer)
    _, loaded = load_teacher(folder)
    assert loaded is not None and len(loaded) == 30522
    assert "[UNK]" not in loaded.tokenize("Structured pruning removes whole heads, neurons and layers.")


# --- 1b: heads no adapter supports -----------------------------------------------------------------------------


def test_a_multiple_choice_teacher_is_refused_not_loaded_as_an_encoder(tmp_path):
    folder = tmp_path / "choice"
    small_random_bert(60, model_cls=transformers.BertForMultipleChoice).save_pretrained(folder)
    with pytest.raises(UnsupportedModelError) as err:
        load_teacher(folder)
    message = _one_line(err)
    assert "BertForMultipleChoice" in message and "BertModel" in message and "drop" in message
    assert "bert: BertModel, BertForMaskedLM, BertForSequenceClassification, BertForTokenClassification" in message
    assert "base_model.save_pretrained" in message


def test_a_head_of_a_family_without_adapter_is_refused_its_encoder_loads(tmp_path):
    """DeBERTa-v2 has no adapter (only the generic FFN path): its encoder loads, a classifier would lose its head."""
    config = transformers.DebertaV2Config(vocab_size=60, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                          intermediate_size=40)
    transformers.DebertaV2ForSequenceClassification(config).save_pretrained(tmp_path / "cls")
    with pytest.raises(UnsupportedModelError, match="DebertaV2ForSequenceClassification.*drop"):
        load_teacher_model(tmp_path / "cls")
    transformers.DebertaV2Model(config).save_pretrained(tmp_path / "encoder")
    assert type(load_teacher_model(tmp_path / "encoder")).__name__ == "DebertaV2Model"
    # A head an adapter knows keeps it: question answering is one now.
    small_random_bert(60, model_cls=transformers.BertForQuestionAnswering).save_pretrained(tmp_path / "qa")
    assert type(load_teacher_model(tmp_path / "qa")).__name__ == "BertForQuestionAnswering"


def test_a_config_without_architectures_still_loads_as_an_encoder(tmp_path):
    folder = tmp_path / "teacher"
    small_random_bert(60).save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    del config["architectures"]
    (folder / "config.json").write_text(json.dumps(config))
    assert type(load_teacher_model(folder)).__name__ == "BertModel"


# --- 1c: no weights --------------------------------------------------------------------------------------------


def test_a_folder_with_a_config_but_no_weights_is_refused(tmp_path, capsys):
    folder = tmp_path / "teacher"
    small_random_bert(60).save_pretrained(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(TeacherError) as err:
        load_teacher(folder)
    message = _one_line(err)
    assert f"the teacher folder {folder} has a config.json but no weights" in message
    assert "model.safetensors" in message and "save_pretrained" in message
    assert main(["run", "bert-l0", "--teacher", str(folder), "--out", str(tmp_path / "run"), "train.max_steps=0"]) == 2
    assert "compress: error: the teacher folder" in capsys.readouterr().err


# --- 1d: relative teacher paths --------------------------------------------------------------------------------


def test_a_relative_teacher_path_is_recorded_absolute_and_reported_from_elsewhere(
    minilm, tmp_path, monkeypatch, capsys
):
    save_tiny_teacher(tmp_path / "teacher", minilm[1])
    monkeypatch.chdir(tmp_path)
    model, _ = load_teacher("teacher")
    assert model.config.name_or_path == str(tmp_path / "teacher")
    compress.run("bert-l0", teacher="teacher", out="run", overrides=ONE_SHOT, progress=False)
    record = json.loads((tmp_path / "run" / "compression.json").read_text())
    assert record["teacher"] == str(tmp_path / "teacher")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert main(["report", str(tmp_path / "run"), "--no-latency", "--no-plots"]) == 0
    assert f"teacher: {tmp_path / 'teacher'}" in capsys.readouterr().out


# --- 2: speech data --------------------------------------------------------------------------------------------


def test_a_folder_without_audio_files_says_so(tmp_path):
    (tmp_path / "notes.txt").write_text("no audio here")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "song.mp3").write_bytes(b"ID3")
    with pytest.raises(DataError) as err:
        load_clips(tmp_path, 16000)
    message = _one_line(err)
    assert f"the folder {tmp_path} holds no .wav or .flac files" in message
    assert ".txt, .jsonl" not in message and "from the Hugging Face hub" not in message


MISSING = ["absent", "absent/clips", "absent.wav", "clips/a.flac", "./absent", "~/absent-audio-folder"]


@pytest.mark.parametrize("given", MISSING)
def test_a_missing_audio_path_says_it_does_not_exist(tmp_path, monkeypatch, given):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError) as err:
        load_clips(given, 16000)
    message = _one_line(err)
    assert "does not exist" in message, message
    assert str(Path(os.path.abspath(Path(given).expanduser()))) in message
    assert ".txt, .jsonl" not in message


def test_an_audio_file_of_another_format_names_the_conversion(tmp_path):
    (tmp_path / "song.mp3").write_bytes(b"ID3")
    with pytest.raises(DataError) as err:
        load_clips(tmp_path / "song.mp3", 16000)
    message = _one_line(err)
    assert "song.mp3" in message and "ffmpeg" in message and ".txt, .jsonl" not in message


def test_audio_in_subfolders_and_saved_datasets_still_load(tmp_path):
    write_clips(tmp_path / "audio" / "nested", 2)
    assert len(load_clips(tmp_path / "audio", 16000)) == 2
    table = datasets.Dataset.from_dict({"audio": [{"array": [0.0] * 800, "sampling_rate": 8000}] * 2})
    table.save_to_disk(str(tmp_path / "saved"))
    clips = load_clips(tmp_path / "saved", 16000)
    assert len(clips) == 2 and len(clips[0].wave) == 1600


def test_a_speech_run_on_a_missing_audio_folder_names_the_path(tmp_path):
    teacher_dir = tmp_path / "hubert"
    transformers.HubertModel(tiny_speech_config("hubert")).save_pretrained(teacher_dir)
    transformers.Wav2Vec2FeatureExtractor(do_normalize=False).save_pretrained(teacher_dir)
    with pytest.raises(DataError) as err:
        compress.run("hubert-dphubert", teacher=teacher_dir, data=tmp_path / "audio", out=tmp_path / "run",
                     overrides={"train.max_steps": 0, "finetune.max_steps": 0, "prune.target_sparsity": 0.5},
                     progress=False)  # 0.75 is more than this tiny teacher's gated axes can remove
    message = _one_line(err)
    assert f"{tmp_path / 'audio'} does not exist" in message and "from the Hugging Face hub" not in message
