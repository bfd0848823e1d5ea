"""Cost of a model's forward pass on CPU: multiply-accumulates (MACs) and latency, teacher vs student.

Shared by ``compress report`` and the benchmarks so every figure of speed is measured the same way:
MACs come from torch's ``FlopCounterMode`` (every matmul, convolution and attention product,
counted as 2 FLOPs per MAC; the CPU fused attention kernel, which torch does not count, is counted
like the GPU ones), latency is the median of rounds that alternate between the models,
so machine noise hits all of them alike.
"""

from __future__ import annotations

import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from compress.adapters import modality_of

#: Sampling rate of the speech teachers (HuBERT / wav2vec2); MACs for speech are per second of it.
AUDIO_RATE = 16_000


def _cpu_attention_flops(query: tuple, key: tuple, value: tuple, *args: object, out_shape: object = None, **kwargs: object) -> int:
    """FLOPs of ``scaled_dot_product_attention``'s CPU kernel: Q K^T and the weighted sum of V, as for the GPU kernels."""
    return sdpa_flop_count(query, key, value)


def forward_flops(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> int:
    """FLOPs of one forward pass of ``model`` on ``batch`` (a MAC counts as 2), attention products included."""
    extra = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flops}
    # no_grad, not inference_mode: the counter's module tracking breaks weight-norm parametrisations (HuBERT) there.
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=extra) as counter:
        model(**batch)
    return counter.get_total_flops()


def timed_rounds(models: dict[str, torch.nn.Module], batch: dict[str, torch.Tensor], rounds: int) -> dict[str, float]:
    """Median seconds per forward for each model, alternating models every round (two warm-up passes each)."""
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for model in models.values():
            for _ in range(2):
                model(**batch)
        for _ in range(rounds):
            for name, model in models.items():
                start = time.perf_counter()
                model(**batch)
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def token_batch(vocab_size: int, batch: int, seq: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random token ids (above the special-token range) without padding: a fixed-cost text input."""
    generator = torch.Generator().manual_seed(seed)
    low = min(1000, vocab_size - 1)
    return {
        "input_ids": torch.randint(low, vocab_size, (batch, seq), generator=generator),
        "attention_mask": torch.ones(batch, seq, dtype=torch.long),
    }


def audio_batch(batch: int, seconds: float, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random 16 kHz waveforms of ``seconds`` each: a fixed-cost speech input."""
    generator = torch.Generator().manual_seed(seed)
    return {"input_values": torch.randn(batch, int(seconds * AUDIO_RATE), generator=generator)}


def example_batch(model: torch.nn.Module, batch: int, seq: int, seconds: float) -> dict[str, torch.Tensor]:
    """An input for ``model``: ``batch`` x ``seq`` tokens for text, ``batch`` x ``seconds`` of audio for speech."""
    if modality_of(model) == "speech":
        return audio_batch(batch, seconds)
    return token_batch(model.config.vocab_size, batch, seq)


def position_limit(model: torch.nn.Module) -> int | float:
    """The longest text input ``model``'s position embeddings take (those counted after a padding index lose it)."""
    positions = getattr(model.config, "max_position_embeddings", None)
    if positions is None:
        return float("inf")
    padding = getattr(getattr(model.base_model, "embeddings", None), "padding_idx", None)
    return positions - (padding + 1 if padding is not None else 0)


def macs_per_unit(model: torch.nn.Module, seq: int, seconds: float) -> float:
    """MACs of one forward per token (text, one sequence of ``seq`` tokens) or per second of audio (speech).

    ``seq`` is cut to what the model's positions take (a teacher with fewer positions than ``seq``).
    """
    inputs = example_batch(model, 1, min(seq, position_limit(model)), seconds)
    units = seconds if "input_values" in inputs else inputs["input_ids"].shape[1]
    return forward_flops(model, inputs) / 2 / units
