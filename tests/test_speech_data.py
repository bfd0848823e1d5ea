"""Audio data (decode, resample, bucket, crop) and a short real DPHuBERT run on a tiny random HuBERT."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import soundfile
import torch
import transformers

import compress
from conftest import offline_env
from compress.audio import CropCollator, LengthBuckets, load_clips, split_clips
from compress.errors import DataError
from speech_helpers import one_thread, tiny_speech_config, waveform, write_clips  # noqa: F401 (fixture)
from test_driver import SCRIPT, _interrupt_after_checkpoint, _start, _student_tensors

pytestmark = pytest.mark.usefixtures("one_thread")


def _peak_hz(wave: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(wave))
    return float(np.fft.rfftfreq(len(wave), 1 / rate)[spectrum.argmax()])


@pytest.mark.parametrize("rate, suffix, channels", [(8000, "wav", 1), (44100, "flac", 2), (22050, "wav", 1), (16000, "flac", 1)])
def test_files_are_decoded_mixed_to_mono_and_resampled(tmp_path, rate, suffix, channels):
    t = np.arange(rate // 2) / rate
    tone = (0.5 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
    soundfile.write(tmp_path / f"a.{suffix}", np.stack([tone] * channels, 1) if channels > 1 else tone, rate)
    (clip,) = load_clips(tmp_path, 16000)
    assert clip.wave.dtype == np.float32 and clip.wave.ndim == 1
    assert len(clip.wave) == 8000, "half a second at 16 kHz"
    assert abs(_peak_hz(clip.wave, 16000) - 440.0) <= 2.0
    assert abs(np.abs(clip.wave).max() - 0.5) < 0.02


def test_unreadable_file_error_names_the_file_and_the_fix(tmp_path):
    write_clips(tmp_path, 2)
    (tmp_path / "broken.wav").write_bytes(b"RIFF not really a wav file")
    with pytest.raises(DataError, match=r"broken\.wav.*ffmpeg"):
        load_clips(tmp_path, 16000)


def test_folder_without_audio_says_what_to_pass(tmp_path):
    (tmp_path / "notes.txt").write_text("no audio here")
    with pytest.raises(DataError, match="folder of .wav / .flac files"):
        load_clips(tmp_path, 16000)


def test_dataset_audio_columns(tmp_path):
    paths = write_clips(tmp_path / "files", 3, rate=8000)
    arrays = [{"array": waveform(0.25, 8000, seed=i).tolist(), "sampling_rate": 8000} for i in range(2)]
    datasets.Dataset.from_dict({"speech": arrays}).save_to_disk(tmp_path / "arrays")
    clips = load_clips(tmp_path / "arrays", 16000, column="speech")
    assert [len(c.wave) for c in clips] == [4000, 4000]
    featured = datasets.Dataset.from_dict({"audio": [str(p) for p in paths]}).cast_column("audio", datasets.Audio())
    featured.to_parquet(tmp_path / "audio.parquet")
    from_files = load_clips(tmp_path / "files", 16000)
    from_table = load_clips(tmp_path / "audio.parquet", 16000)
    assert all(np.allclose(a.wave, b.wave, atol=1e-4) for a, b in zip(from_files, from_table))
    with pytest.raises(DataError, match="no column 'audio'.*data.column"):
        load_clips(tmp_path / "arrays", 16000)


def test_length_buckets_group_similar_lengths_into_full_batches():
    rng = np.random.default_rng(0)
    waves = [np.zeros(int(n), np.float32) for n in rng.integers(100, 1000, size=23)]
    buckets = LengthBuckets(waves, batch_size=4, seed=1)
    epoch0 = buckets.batches()
    assert len(epoch0) == 5 and all(len(b) == 4 for b in epoch0)
    used = np.concatenate(epoch0)
    assert len(set(used.tolist())) == 20
    # Each batch is a run of consecutive clips in length order: no other used clip lies inside its range.
    lengths = np.array([len(w) for w in waves])
    for batch in epoch0:
        low, high = lengths[batch].min(), lengths[batch].max()
        inside = [i for i in used if low < lengths[i] < high and i not in batch]
        assert not inside
    items = [item["input_values"] for item in buckets]
    assert len(items) == len(buckets) == 20
    assert [len(w) for w in items] == [lengths[b].min() for b in epoch0 for _ in b], "each clip cut to its batch's shortest"
    buckets.set_epoch(1)
    assert not all(np.array_equal(a, b) for a, b in zip(epoch0, buckets.batches())), "a new order every epoch"
    with pytest.raises(DataError, match="fewer than one batch.*train.batch_size"):
        LengthBuckets(waves[:3], batch_size=4)


def test_crops_are_random_slices_drawn_from_the_seed_and_epoch_alone():
    """A crop is a contiguous slice of its clip at the batch's length; the global RNG plays no part."""
    waves = [np.arange(n, dtype=np.float32) for n in range(100, 2100, 100)]
    buckets = LengthBuckets(waves, batch_size=4, seed=3, max_samples=500)
    torch.manual_seed(0)
    np.random.seed(0)
    first = list(buckets)
    torch.manual_seed(1)
    np.random.seed(1)
    assert all(np.array_equal(a["input_values"], b["input_values"]) for a, b in zip(first, buckets))
    starts = []
    for bucket, number in zip(buckets.batches(), range(0, len(first), 4)):
        crops = [first[number + k]["input_values"] for k in range(4)]
        length = min(500, min(len(waves[i]) for i in bucket))
        for index, crop in zip(bucket, crops):
            start = int(crop[0])
            assert len(crop) == length and np.array_equal(crop, waves[index][start : start + length])
            starts.append(start)
    assert len(set(starts)) > 10, "offsets vary"
    buckets.set_epoch(1)
    assert not all(np.array_equal(a["input_values"], b["input_values"]) for a, b in zip(first, buckets))


def test_under_ddp_each_rank_reads_whole_buckets_of_its_own():
    """Each DDP rank iterates the buckets through accelerate's shard (the driver turns off batch dispatch)."""
    from accelerate.data_loader import IterableDatasetShard

    waves = [np.arange(n, dtype=np.float32) for n in range(100, 2100, 100)]
    buckets = LengthBuckets(waves, batch_size=4, seed=0)
    items = [item["input_values"] for item in buckets]
    batches = [items[k : k + 4] for k in range(0, len(items), 4)]
    for rank in (0, 1):
        shard = IterableDatasetShard(buckets, batch_size=4, num_processes=2, process_index=rank)
        got = [item["input_values"] for item in shard]
        # Rank r gets buckets r, r + 2, ...; the last round is completed from the first buckets.
        expected = [w for batch in batches[rank::2] + (batches[:1] if rank == 1 else []) for w in batch]
        assert len(got) == len(expected) and all(np.array_equal(a, b) for a, b in zip(got, expected))


def test_crop_collator_cuts_longer_clips_to_the_shortest():
    extractor = transformers.Wav2Vec2FeatureExtractor(do_normalize=False)
    waves = [np.arange(n, dtype=np.float32) for n in (50, 80, 65)]
    batch = CropCollator(extractor)([{"input_values": w} for w in waves])["input_values"]
    assert batch.shape == (3, 50) and all(torch.equal(row, torch.arange(50.0)) for row in batch)
    normalised = CropCollator(transformers.Wav2Vec2FeatureExtractor(do_normalize=True))([{"input_values": w} for w in waves])
    assert normalised["input_values"].mean(1).abs().max() < 1e-4


def test_held_out_split_is_disjoint_and_seeded(tmp_path):
    write_clips(tmp_path, 10)
    clips = load_clips(tmp_path, 16000)
    train, held = split_clips(clips, 0.2, seed=3)
    assert len(held) == 2 and len(train) == 8
    assert not {c.name for c in train} & {c.name for c in held}
    assert [c.name for c in split_clips(clips, 0.2, seed=3)[1]] == [c.name for c in held]


SHORT = {
    "train.max_steps": 30,
    "train.batch_size": 4,
    "train.logging_steps": 2,
    "train.save_steps": 30,
    "train.gate_lr": 0.1,
    "train.lambda_lr": 0.1,
    "finetune.max_steps": 16,
    "prune.schedule": {"kind": "linear", "start_step": 0, "ramp_steps": 15},
    "distill.layers": [[0, 0], [1, 1], [2, 2]],
    "data.min_seconds": 0.2,
    "data.held_out": 0.25,
}


@pytest.fixture(scope="module")
def teacher_and_audio(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny random HuBERT saved with its feature extractor, and 24 generated clips at 22.05 kHz."""
    root = tmp_path_factory.mktemp("speech")
    torch.manual_seed(0)
    config = tiny_speech_config("hubert", conv_dim=(32, 32, 32), intermediate_size=64)
    transformers.HubertModel(config).save_pretrained(root / "teacher")
    transformers.Wav2Vec2FeatureExtractor(do_normalize=False).save_pretrained(root / "teacher")
    write_clips(root / "audio", 24, rate=22050)
    return root / "teacher", root / "audio"


def test_short_dphubert_run_meets_the_target_and_exports_a_loadable_student(teacher_and_audio, tmp_path):
    teacher_dir, audio_dir = teacher_and_audio
    out = compress.run(
        "hubert-dphubert", teacher=teacher_dir, data=audio_dir, out=tmp_path / "run", overrides=SHORT, progress=False
    )
    record = json.loads((out / "compression.json").read_text())
    assert abs(record["structure"]["encoder_sparsity"] - 0.75) <= 0.01
    metrics = record["metrics"]
    assert metrics["held_out_clips"] == 6 and -1.0 <= metrics["fidelity_after_finetune"] <= 1.0
    logs = json.loads((out / "training_log.json").read_text())
    expected = [e["expected_sparsity"] for e in logs["prune"] if "expected_sparsity" in e]
    assert expected[-1] > 3 * expected[0], "the Lagrangian moved the gates toward the target"
    prune = [e["distill_loss"] for e in logs["prune"] if "distill_loss" in e]
    assert sum(prune[-3:]) < sum(prune[:3]), "distillation lowers the gated model's loss while it is pruned"
    finetune = [e["loss"] for e in logs["finetune"] if "loss" in e]
    assert sum(finetune[-2:]) < sum(finetune[:2]), "distillation of the folded student lowers its loss"
    student = transformers.AutoModel.from_pretrained(out, trust_remote_code=True).eval()
    assert sum(p.numel() for p in student.parameters()) == record["student_parameters"]
    assert transformers.AutoFeatureExtractor.from_pretrained(out).sampling_rate == 16000
    with torch.no_grad():
        hidden = student(torch.randn(2, 4000)).last_hidden_state
    assert hidden.shape == (2, 199, 32) and torch.isfinite(hidden).all()


@pytest.mark.parametrize("method", ["taylor", "wid"])
def test_scheduled_methods_run_the_speech_recipe(teacher_and_audio, tmp_path, method):
    """The DPHuBERT recipe with another prune.method: same data, distillation, target and export."""
    teacher_dir, audio_dir = teacher_and_audio
    overrides = {**SHORT, "prune.method": method, "train.max_steps": 12, "finetune.max_steps": 4,
                 "prune.schedule": {"kind": "linear", "start_step": 0, "ramp_steps": 8}}
    out = compress.run("hubert-dphubert", teacher=teacher_dir, data=audio_dir, out=tmp_path / method,
                       overrides=overrides, progress=False)
    record = json.loads((out / "compression.json").read_text())
    assert abs(record["structure"]["encoder_sparsity"] - 0.75) <= 0.01
    assert all(0 < record["structure"]["sizes"][f"conv.{j}"] < 32 for j in range(3))
    student = transformers.AutoModel.from_pretrained(out, trust_remote_code=True).eval()
    assert sum(p.numel() for p in student.parameters()) == record["student_parameters"]


def test_cli_runs_the_speech_recipe(teacher_and_audio, tmp_path):
    teacher_dir, audio_dir = teacher_and_audio
    overrides = [f"{k}={json.dumps(v)}" for k, v in {**SHORT, "train.max_steps": 4, "finetune.max_steps": 2}.items()]
    proc = subprocess.run(
        [SCRIPT, "run", "hubert-dphubert", "--teacher", str(teacher_dir), "--data", str(audio_dir), "--out", "run", *overrides],
        cwd=tmp_path, env=offline_env(), capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"conv channels per layer: \[\d+, \d+, \d+\]", proc.stdout)
    assert re.search(r"\((74\.\d|75\.\d)% removed\)", proc.stdout)
    assert transformers.AutoModel.from_pretrained(tmp_path / "run", trust_remote_code=True) is not None


def test_two_process_ddp_speech_run(teacher_and_audio, tmp_path):
    """torchrun with 2 CPU processes: ranks crop their own buckets to different lengths; one student is written."""
    teacher_dir, audio_dir = teacher_and_audio
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29632"]
    overrides = {**SHORT, "train.max_steps": 8, "train.save_steps": 4, "finetune.max_steps": 4}
    proc = subprocess.run(
        [*torchrun, "-m", "compress.cli", "run", "hubert-dphubert", "--teacher", str(teacher_dir), "--data",
         str(audio_dir), "--out", "run", *[f"{k}={json.dumps(v)}" for k, v in overrides.items()]],
        cwd=tmp_path, env=offline_env(),
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("student written to run") == 1
    record = json.loads((tmp_path / "run/compression.json").read_text())
    assert abs(record["structure"]["encoder_sparsity"] - 0.75) <= 0.01
    assert transformers.AutoModel.from_pretrained(tmp_path / "run", trust_remote_code=True) is not None


@pytest.mark.slow  # minutes-long on 2 cores; CI runs it in its -m slow pass
def test_killed_speech_run_resumes_to_the_same_student(teacher_and_audio, tmp_path):
    """Killed mid-epoch (4 batches an epoch, a checkpoint every 3 steps), --resume ends with the same student."""
    teacher_dir, audio_dir = teacher_and_audio
    overrides = {**SHORT, "train.save_steps": 3, "finetune.max_steps": 4}
    args = ["run", "hubert-dphubert", "--teacher", str(teacher_dir), "--data", str(audio_dir),
            *[f"{k}={json.dumps(v)}" for k, v in overrides.items()]]
    reference = subprocess.run([SCRIPT, *args, "--out", "reference"], cwd=tmp_path, env=offline_env(), capture_output=True, text=True)
    assert reference.returncode == 0, reference.stderr[-2000:]
    proc = _start([*args, "--out", "resumed"], tmp_path)
    code, _ = _interrupt_after_checkpoint(proc, tmp_path / "resumed.checkpoints/prune/checkpoint-9", signal.SIGKILL)
    assert code == -signal.SIGKILL
    resumed = subprocess.run([SCRIPT, *args, "--out", "resumed", "--resume"], cwd=tmp_path, env=offline_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    expected, got = _student_tensors(tmp_path / "reference"), _student_tensors(tmp_path / "resumed")
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected), "resumed run ends with the same student"


def test_speech_run_without_audio_says_what_to_pass(teacher_and_audio, tmp_path):
    teacher_dir, _ = teacher_and_audio
    depth = transformers.AutoConfig.from_pretrained(teacher_dir).num_hidden_layers
    layers = {"distill.layers": [[0, 0], [depth, depth]]}
    with pytest.raises(DataError, match="speech teacher needs audio.*--data AUDIO"):
        compress.run("hubert-dphubert", teacher=teacher_dir, out=tmp_path / "run", overrides=layers, progress=False)


def test_reconstruct_refits_a_one_shot_speech_student(teacher_and_audio, tmp_path):
    """Post-LN HuBERT layers: the stage reads the length-bucketed audio and lowers every sublayer's error."""
    teacher_dir, audio_dir = teacher_and_audio
    overrides = {**SHORT, "train.max_steps": 0, "finetune.max_steps": 0, "reconstruct.batches": 2}
    out = compress.run("hubert-dphubert", teacher=teacher_dir, data=audio_dir, out=tmp_path / "run",
                       overrides=overrides, progress=False)
    metrics = json.loads((out / "compression.json").read_text())["metrics"]
    assert metrics["reconstruct"]["sublayers"] == 4 and metrics["reconstruct"]["batches"] == 2
    assert metrics["reconstruct"]["error_after"] < metrics["reconstruct"]["error_before"]
    assert -1.0 <= metrics["fidelity_after_reconstruct"] <= 1.0
