"""Audio for distilling speech encoders: clips from files or a dataset, length-bucketed, cropped per batch.

As DPHuBERT does, clips are resampled to the model's rate (16 kHz for HuBERT / wav2vec2), grouped into
batches of clips of similar length, and every clip of a batch is cropped at a random offset to the
batch's shortest clip: batches need no padding and no attention mask. Order and crops are drawn from
the seed and the epoch alone, so resumed and distributed runs see the same batches. Decoding uses
``soundfile`` (libsndfile: wav, flac, ogg) and resampling ``scipy.signal.resample_poly`` (polyphase,
exact for integer rate ratios such as 44.1 / 48 kHz -> 16 kHz).
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import soundfile
import torch
from scipy.signal import resample_poly
from torch.utils.data import IterableDataset
from transformers import PretrainedConfig, Wav2Vec2FeatureExtractor

from compress.data import FILE_BUILDERS, HUB_ID, load_raw
from compress.errors import DataError

AUDIO_SUFFIXES = (".wav", ".flac")
#: dataset files an audio column is read from
DATASET_SUFFIXES = tuple(FILE_BUILDERS)
#: what ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` write at the top of their folder
SAVED_DATASET_FILES = ("state.json", "dataset_info.json", "dataset_dict.json")
SUPPORTED = (
    "a folder of .wav / .flac files, one such file, or a dataset with an audio column (a save_to_disk folder, "
    "a .parquet / .jsonl / .csv file or a hub dataset id)"
)
CONVERT = "convert it to 16-bit PCM .wav or .flac (e.g. ffmpeg -i IN -ac 1 -ar 16000 OUT.wav) or remove it"


@dataclass(frozen=True)
class Clip:
    """One mono waveform at the model's sampling rate, with the file or row it came from."""

    name: str
    wave: np.ndarray


def resample(wave: np.ndarray, source_rate: int, rate: int) -> np.ndarray:
    """``wave`` (float, mono) from ``source_rate`` to ``rate`` Hz, as float32."""
    if source_rate == rate:
        return wave.astype(np.float32, copy=False)
    common = math.gcd(int(source_rate), int(rate))
    return resample_poly(wave, rate // common, int(source_rate) // common).astype(np.float32)


def read_audio(source: str | Path | io.BytesIO, name: str, rate: int) -> np.ndarray:
    """Decode one audio file (path or bytes), mix it down to mono and resample it to ``rate`` Hz."""
    try:
        data, source_rate = soundfile.read(source, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, OSError, TypeError) as err:
        raise DataError(f"cannot decode audio {name} ({err}); {CONVERT}") from err
    if data.shape[0] == 0:
        raise DataError(f"audio {name} holds no samples; {CONVERT}")
    return resample(data.mean(axis=1), source_rate, rate)


def load_clips(source: str | Path, rate: int, column: str | None = None) -> list[Clip]:
    """Every clip of ``source`` (see ``SUPPORTED``) as mono float32 at ``rate`` Hz, in a stable order.

    A folder is searched recursively for .wav / .flac files (sorted by path); a folder without any is
    read as a ``save_to_disk`` dataset when it holds one, else refused (it holds no audio). A missing
    path is refused as such; only text that could be a hub dataset id (``name`` / ``owner/name``, no
    file suffix) and names nothing on disk is tried on the hub. ``column`` names a dataset's audio
    column (default ``audio``).
    """
    path = Path(source).expanduser()
    where = Path(os.path.abspath(path))
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in AUDIO_SUFFIXES:
            return [Clip(str(path), read_audio(path, str(path), rate))]
        if suffix not in DATASET_SUFFIXES:
            raise DataError(
                f"{path} is neither a .wav / .flac file nor a dataset file ({', '.join(DATASET_SUFFIXES)}); {CONVERT}"
            )
        return _column_clips(_dataset(path), column or "audio", rate, str(source))
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
        if files:
            return [Clip(str(f), read_audio(f, str(f), rate)) for f in files]
        if not any((path / name).is_file() for name in SAVED_DATASET_FILES):
            others = sorted({p.suffix.lower() or p.name for p in path.rglob("*") if p.is_file()})
            found = f" (it holds {', '.join(others[:6])} files)" if others else " (it is empty)"
            raise DataError(
                f"the folder {where} holds no .wav or .flac files, in it or its subfolders{found}, and no "
                f"save_to_disk dataset; put the audio there (convert other formats with "
                f"ffmpeg -i IN -ac 1 -ar 16000 OUT.wav), or pass {SUPPORTED}"
            )
        return _column_clips(_dataset(path), column or "audio", rate, str(source))
    if _names_a_path(source):
        raise DataError(
            f"the audio path {where} does not exist; check the path (or the folder you run from), or pass {SUPPORTED}"
        )
    try:
        table = load_raw(str(source))
    except DataError as err:
        raise DataError(
            f"the audio path {where} does not exist, and no hub dataset {str(source)!r} could be loaded either "
            f"({_cause(err)}); check the path (or the folder you run from), or pass {SUPPORTED}"
        ) from err
    return _column_clips(table, column or "audio", rate, str(source))


def _names_a_path(source: str | Path) -> bool:
    """Whether ``source`` can only be a local path: a Path, a suffix, absolute, ``~`` / ``.`` first, or no hub id."""
    if isinstance(source, Path):
        return True
    text = str(source)
    return (
        Path(text).suffix != ""
        or os.path.isabs(text)
        or text.startswith(("~", "."))
        or text.count("/") > 1
        or not HUB_ID.fullmatch(text)
    )


def _dataset(path: Path) -> datasets.Dataset:
    """A local dataset file or ``save_to_disk`` folder, its errors said for audio."""
    try:
        return load_raw(path)
    except DataError as err:
        raise DataError(
            f"cannot read {path} as a dataset with an audio column ({_cause(err)}); pass {SUPPORTED}"
        ) from err


def _cause(err: DataError) -> str:
    """The first line of what went wrong underneath ``err`` (its cause), else of ``err`` itself."""
    text = str(err.__cause__ or err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _column_clips(table: datasets.Dataset, column: str, rate: int, source: str) -> list[Clip]:
    """Decode a dataset's audio column: Audio features, {array, sampling_rate} rows, or file paths."""
    if column not in table.column_names:
        raise DataError(
            f"{source} has no column {column!r} (columns: {', '.join(table.column_names)}); "
            "pass data.column=NAME to choose the audio column"
        )
    if isinstance(table.features[column], datasets.Audio):
        # Decoding ourselves: datasets' own audio decoding needs torchcodec.
        table = table.cast_column(column, datasets.Audio(decode=False))
    return [_row_clip(item, f"{source} row {i} ({column})", rate) for i, item in enumerate(table[column])]


def _row_clip(item: Any, name: str, rate: int) -> Clip:
    if isinstance(item, dict) and item.get("array") is not None:
        if not item.get("sampling_rate"):
            raise DataError(f"{name} has an array but no sampling_rate; store the rate beside each array")
        return Clip(name, resample(np.asarray(item["array"], dtype=np.float32), item["sampling_rate"], rate))
    if isinstance(item, dict) and item.get("bytes"):
        return Clip(name, read_audio(io.BytesIO(item["bytes"]), name, rate))
    path = item.get("path") if isinstance(item, dict) else item
    if isinstance(path, str) and path:
        return Clip(name, read_audio(path, f"{name}: {path}", rate))
    raise DataError(
        f"{name} holds {type(item).__name__}, not audio; the column must hold audio files, file paths or "
        "{array, sampling_rate} records (pass data.column=NAME for another column)"
    )


def split_clips(clips: list[Clip], fraction: float, seed: int) -> tuple[list[Clip], list[Clip]]:
    """(train, held_out): a seeded random ``fraction`` of the clips (at least one) is held out."""
    if len(clips) < 2:
        raise DataError(f"the audio data has {len(clips)} clip(s); a held-out split needs at least 2, pass more audio")
    held = min(max(round(len(clips) * fraction), 1), len(clips) - 1)
    order = torch.randperm(len(clips), generator=torch.Generator().manual_seed(seed)).tolist()
    return [clips[i] for i in sorted(order[held:])], [clips[i] for i in sorted(order[:held])]


class LengthBuckets(IterableDataset):
    """Training clips in batches of similar length, each clip cropped to its batch's shortest.

    Each epoch, ``len % batch_size`` randomly chosen clips sit out so every batch is full (the
    DataLoader's batches then coincide with the buckets); the rest are sorted by length and cut into
    consecutive batches, whose order is shuffled. Every clip of a batch is cropped at a random offset to
    the batch's shortest clip (at most ``max_samples``). Order and crops depend only on the seed and the
    epoch, never on the global RNG, so a resumed run and every DDP rank read exactly the batches an
    uninterrupted run does. Yields ``{"input_values": wave}`` items, ``batch_size`` per bucket in a row;
    the length is the clips used per epoch, so the Trainer counts epochs (and resumes in the right one).
    """

    def __init__(self, waves: list[np.ndarray], batch_size: int, seed: int = 0, max_samples: int | None = None) -> None:
        super().__init__()
        if len(waves) < batch_size:
            raise DataError(
                f"{len(waves)} training clips are fewer than one batch of train.batch_size={batch_size}; "
                "pass more audio or lower train.batch_size"
            )
        self.waves = waves
        self.batch_size = batch_size
        self.seed = seed
        self.max_samples = max_samples
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.waves) - len(self.waves) % self.batch_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[np.ndarray]:
        """This epoch's batches as arrays of clip indices, in the order they are yielded."""
        rng = np.random.default_rng([self.seed, self.epoch])
        chosen = rng.permutation(len(self.waves))[: len(self)]
        by_length = chosen[np.argsort([len(self.waves[i]) for i in chosen], kind="stable")]
        buckets = by_length.reshape(-1, self.batch_size)
        return list(buckets[rng.permutation(len(buckets))])

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for number, bucket in enumerate(self.batches()):
            rng = np.random.default_rng([self.seed, self.epoch, number])
            length = min(len(self.waves[i]) for i in bucket)
            if self.max_samples is not None:
                length = min(length, self.max_samples)
            for index in bucket:
                wave = self.waves[index]
                start = int(rng.integers(len(wave) - length + 1))
                yield {"input_values": wave[start : start + length]}


@dataclass
class CropCollator:
    """A batch of clips through the feature extractor, any longer clip cut to the shortest (from its start).

    ``LengthBuckets`` already yields equal-length crops; the cut only matters for other datasets.
    """

    processor: Any

    def __call__(self, items: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
        waves = [item["input_values"] for item in items]
        length = min(len(w) for w in waves)
        return {"input_values": features(self.processor, [w[:length] for w in waves])}


def features(processor: Any, waves: list[np.ndarray]) -> torch.Tensor:
    """Equal-length waves through the feature extractor (its normalisation, if any) as a (batch, time) tensor."""
    out = processor(waves, sampling_rate=processor.sampling_rate, return_tensors="pt", return_attention_mask=False)
    return out["input_values"]


def default_feature_extractor(config: PretrainedConfig) -> Wav2Vec2FeatureExtractor:
    """The feature extractor a HuBERT / wav2vec2 checkpoint of this config ships with.

    16 kHz mono; checkpoints with a LayerNorm feature extractor (large ones) normalise each clip to zero
    mean and unit variance and take attention masks, group-norm ones (base) do neither.
    """
    layer_norm = getattr(config, "feat_extract_norm", "group") == "layer"
    return Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=layer_norm, return_attention_mask=layer_norm
    )
