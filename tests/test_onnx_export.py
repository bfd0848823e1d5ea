"""``compress export DIR --onnx``: the ONNX graph computes what the torch student does; int8; refusals."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
import transformers

import compress
from compress.audio import default_feature_extractor
from compress.cli import main
from compress.onnx_export import INSTALL, OnnxCheckError, OnnxEncoder, check_graph, export_onnx
from compress.teachers import small_random_bert
from conftest import randomise_gates
from speech_helpers import randomise_speech_gates, speech_recipe, tiny_speech_config, write_clips

TOL = 1e-4


def _student_dir(tmp_path: Path, tokenizer, kind: str) -> Path:
    """A small random BERT over the MiniLM vocabulary, folded to a stock or a heterogeneous student and saved."""
    teacher = small_random_bert(tokenizer.vocab_size, layers=2)
    job = compress.attach(teacher, "bert-l0")
    if kind == "stock":
        job.prune_to({"ffn": 40})
    else:
        randomise_gates(job, 3)
    student, record = compress.fold(job)
    assert (type(student).__name__ == "BertModel") == (kind == "stock")
    return compress.save_student(student, tmp_path / kind, processor=tokenizer, record=record)


def _run(session: onnxruntime.InferenceSession, batch: dict[str, torch.Tensor]) -> np.ndarray:
    names = [i.name for i in session.get_inputs()]
    return session.run(None, {name: batch[name].numpy() for name in names})[0]


@pytest.mark.parametrize("kind", ["stock", "heterogeneous"])
def test_onnx_equals_the_torch_student_on_two_shapes(kind, minilm, sentences, tmp_path, capsys):
    tokenizer = minilm[1]
    folder = _student_dir(tmp_path, tokenizer, kind)
    assert main(["export", str(folder), "--onnx"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {folder / 'onnx' / 'model.onnx'}" in printed and "check passed" in printed
    session = onnxruntime.InferenceSession(str(folder / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask", "token_type_ids"]
    assert [o.name for o in session.get_outputs()] == ["last_hidden_state"]
    # Loaded as a user would (remote code for the heterogeneous one), not the object that was exported.
    model = transformers.AutoModel.from_pretrained(folder, trust_remote_code=kind != "stock").eval()
    for texts in (sentences, sentences[:2] * 3):  # batch 4, then 6 with other lengths and padding
        batch = dict(tokenizer(texts, padding=True, return_tensors="pt"))
        assert (batch["attention_mask"] == 0).any()
        with torch.no_grad():
            expected = model(**batch).last_hidden_state.numpy()
        got = _run(session, batch)
        assert got.shape == expected.shape and np.abs(got - expected).max() <= TOL
    record = json.loads((folder / "onnx" / "onnx_export.json").read_text())
    assert len(record["max_abs_diff"]) == 2 and max(record["max_abs_diff"].values()) <= TOL
    assert record["int8_file"] is None


def test_int8_model_runs_with_the_right_shapes_and_keeps_fidelity(minilm, sentences, tmp_path):
    tokenizer = minilm[1]
    folder = _student_dir(tmp_path, tokenizer, "heterogeneous")
    result = export_onnx(folder, quantize="int8")
    int8_path = folder / "onnx" / "model_int8.onnx"
    assert int8_path.stat().st_size == result.int8_bytes < 0.6 * result.fp32_bytes
    session = onnxruntime.InferenceSession(str(int8_path), providers=["CPUExecutionProvider"])
    hidden = json.loads((folder / "config.json").read_text())["hidden_size"]
    for batch_size, seq in ((1, 5), (3, 17)):
        ids = torch.randint(1000, tokenizer.vocab_size, (batch_size, seq))
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
        out = _run(session, batch)
        assert out.shape == (batch_size, seq, hidden) and np.isfinite(out).all()
    assert result.fidelity_items == 64
    assert result.fidelity["onnx fp32"] > 0.9999
    assert 0.5 < result.fidelity["onnx int8"] < 1.0
    assert "int8 fidelity vs the fp32 student" in result.text()


def test_speech_student_exports_and_matches_torch(tmp_path):
    torch.manual_seed(0)
    teacher = transformers.HubertModel(tiny_speech_config("hubert")).eval()
    job = compress.attach(teacher, speech_recipe("hubert"))
    randomise_speech_gates(job, 4)
    student, record = compress.fold(job)
    extractor = default_feature_extractor(student.config)
    folder = compress.save_student(student, tmp_path / "speech", processor=extractor, record=record)
    result = export_onnx(folder, quantize="int8")
    assert result.inputs == ["input_values"] and max(result.max_abs_diff.values()) <= TOL
    assert "pass --data AUDIO" in result.fidelity_note and not result.fidelity
    write_clips(tmp_path / "clips", 30)  # the run's 10% held-out split: 3 clips
    result = export_onnx(folder, quantize="int8", overwrite=True, data=tmp_path / "clips")
    assert result.fidelity_items == 3 and result.fidelity["onnx fp32"] > 0.9999
    encoder = OnnxEncoder(folder / "onnx" / "model.onnx")
    waves = torch.randn(2, 5000)
    with torch.no_grad():
        expected = student(waves).last_hidden_state
    assert (encoder(waves).last_hidden_state - expected).abs().max().item() <= TOL


def test_check_names_the_difference_of_a_graph_that_is_not_the_model(minilm, tmp_path):
    tokenizer = minilm[1]
    stock = _student_dir(tmp_path, tokenizer, "stock")
    export_onnx(stock)
    other = small_random_bert(tokenizer.vocab_size, layers=2, seed=1)
    with pytest.raises(OnnxCheckError, match=r"differs from the torch student by [\d.]+ \(max abs, input (1x7|3x23)"):
        check_graph(other, OnnxEncoder(stock / "onnx" / "model.onnx"))


def test_cli_refuses_a_folder_that_is_not_a_student(tmp_path, capsys):
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "config.json").write_text("{}")
    assert main(["export", str(plain), "--onnx"]) == 2
    assert "is not a compression run: it has no compression.json" in capsys.readouterr().err
    assert not (plain / "onnx").exists()
    assert main(["export", str(tmp_path / "missing"), "--onnx"]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_an_earlier_export_is_replaced_only_with_overwrite_and_other_files_never(minilm, tmp_path, capsys):
    folder = _student_dir(tmp_path, minilm[1], "stock")
    assert main(["export", str(folder), "--onnx"]) == 0
    first = (folder / "onnx" / "model.onnx").stat().st_mtime_ns
    assert main(["export", str(folder), "--onnx"]) == 2
    assert "holds an earlier ONNX export; pass --overwrite" in capsys.readouterr().err
    assert (folder / "onnx" / "model.onnx").stat().st_mtime_ns == first
    assert main(["export", str(folder), "--onnx", "--overwrite"]) == 0
    assert (folder / "onnx" / "model.onnx").stat().st_mtime_ns != first
    (folder / "onnx" / "onnx_export.json").unlink()  # now the folder is not recognisably ours
    assert main(["export", str(folder), "--onnx", "--overwrite"]) == 2
    assert "did not write" in capsys.readouterr().err
    assert (folder / "onnx" / "model.onnx").is_file()
    assert not [p for p in folder.iterdir() if p.name.startswith(".")], "no staging folder is left behind"


def test_missing_onnxruntime_names_the_extra(minilm, tmp_path, monkeypatch, capsys):
    folder = _student_dir(tmp_path, minilm[1], "stock")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now raises ImportError
    assert main(["export", str(folder), "--onnx"]) == 2
    assert INSTALL in capsys.readouterr().err
    assert not (folder / "onnx").exists()
