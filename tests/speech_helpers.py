"""Tiny random HuBERT / wav2vec2 teachers, random gate states and generated audio for the speech tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import transformers

import compress
from conftest import randomise_gates, switch_off_some

FAMILY_CLASSES = {"hubert": "Hubert", "wav2vec2": "Wav2Vec2"}


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from a second thread, and on a shared 2-core machine it oversubscribes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_speech_config(family: str = "hubert", norm: str = "group", stable: bool = False, **overrides):
    """A 2-layer encoder (hidden 32, 4 heads) over a 3-conv feature extractor (20x downsampling)."""
    params = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        conv_dim=(16, 12, 8),
        conv_kernel=(10, 3, 3),
        conv_stride=(5, 2, 2),
        conv_bias=norm == "layer",
        feat_extract_norm=norm,
        do_stable_layer_norm=stable,
        num_conv_pos_embeddings=8,
        num_conv_pos_embedding_groups=4,
        vocab_size=11,
        num_labels=3,
        classifier_proj_size=16,
    )
    params.update(overrides)
    return getattr(transformers, f"{FAMILY_CLASSES[family]}Config")(**params)


def speech_recipe(family: str, **overrides) -> compress.Recipe:
    """The bundled DPHuBERT recipe for ``family``, with every prunable kind gated."""
    return compress.load_recipe("hubert-dphubert").override(
        {"family": family, "prune.axes": ["conv", "heads", "ffn", "attention", "mlp"], **overrides}
    )


def randomise_speech_gates(job: compress.CompressionJob, seed: int) -> None:
    """``conftest.randomise_gates`` (heads, a whole attention and a whole FFN sublayer off), plus a quarter
    of every conv's channels forced off."""
    randomise_gates(job, seed)
    switch_off_some(job, "conv", 0.25, seed + 1)


def waveform(seconds: float, rate: int, seed: int, channels: int = 1) -> np.ndarray:
    """A sum of two sines plus noise, (samples,) or (samples, channels), float32 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate)) / rate
    freqs = rng.uniform(150, 1500, size=2)
    wave = 0.4 * np.sin(2 * np.pi * freqs[0] * t) + 0.3 * np.sin(2 * np.pi * freqs[1] * t)
    wave = wave + 0.05 * rng.standard_normal(len(t))
    wave = wave.astype(np.float32)
    return wave if channels == 1 else np.stack([wave] * channels, axis=1)


def write_clips(folder: Path, count: int, rate: int = 16000, seconds: tuple[float, float] = (0.3, 0.6)) -> list[Path]:
    """``count`` generated clips of random lengths in ``seconds``, alternating .wav and .flac."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(count)
    paths = []
    for i in range(count):
        path = folder / f"clip{i:03d}.{'wav' if i % 2 == 0 else 'flac'}"
        soundfile.write(path, waveform(rng.uniform(*seconds), rate, seed=i), rate)
        paths.append(path)
    return paths
