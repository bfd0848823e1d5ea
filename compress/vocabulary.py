"""Vocabulary pruning of a saved text student: keep the tokens a corpus uses, drop the other rows.

A student keeps its teacher's whole vocabulary (30,522 rows for BERT and MiniLM), most of which one
domain never uses, and for a small student the word embeddings are a large share of the file.
``prune_vocabulary`` keeps the special and added tokens, every token the original tokenizer gives
the corpus at least ``min_count`` times, and the token ids the config names (``pad_token_id`` ...).
The kept tokens are renumbered in their old order (``[PAD]``, id 0, stays 0). Their rows are sliced
out of the word embeddings and, when the model has one, out of the MLM decoder (weight rows and
bias; a tied decoder stays tied). The tokenizer gets the kept tokens as its WordPiece vocabulary.
The result is a new student folder; the input folder is never changed.

What the pruned tokenizer does. It is the original tokenizer (same normalisation, pre-tokenisation,
special tokens and settings) with a smaller vocabulary, and WordPiece splits each word greedily,
longest vocabulary piece first:

- A word whose pieces were all kept is split exactly as before, into the same tokens under their new
  ids, which carry the original embedding rows. The kept vocabulary holds every piece the original
  split took, and no longer piece, because it is a subset. So the student's outputs on that text are
  the original's. With ``min_count=1`` this holds for all corpus text, and it is checked before
  the new folder is put in place.
- A word that needs a removed piece is split again over the kept pieces, longest first. It is not the
  original split with ``[UNK]`` in place of the removed piece. If the kept pieces cannot spell the
  word, the whole word becomes one ``[UNK]``, even when some of its original pieces were kept. With
  MiniLM and a corpus whose only words are "tokenize" and "tokens" (``token ##ize``, ``token ##s``),
  "tokenizes" (``token ##izes``) becomes ``token ##ize ##s``, while "tokenizer" (``token ##izer``)
  and "zebra" become ``[UNK]``.
- A corpus word the original tokenizer cannot spell (one ``[UNK]``) also keeps the pieces WordPiece
  matched before giving up. Those pieces count as used, so the word stays ``[UNK]``.

Why no ``[UNK]`` per removed piece: the original split needs the removed pieces in the vocabulary,
where they would all share the ``[UNK]`` id. The tokenizers library saves a WordPiece vocabulary with
one token per id, so the first save would silently drop all but one of the tokens sharing that id
(possibly ``[UNK]`` itself), and the splits would change.

Only WordPiece tokenizers are handled (the BERT family: BERT, MiniLM, DistilBERT, ELECTRA). Every
other type is refused, naming it. For BPE and Unigram tokenizers (RoBERTa, XLM-R) removing tokens
changes how kept text tokenises: BPE builds kept tokens by merging removed ones, and Unigram would
score other splits. Pruning those would need more than a smaller vocabulary.

The folder is a complete student, written with ``write_student`` (staged, so a failure leaves
nothing). It holds the weights, the config with the new ``vocab_size``, any modeling code, the
tokenizer, the sentence-transformers modules, the model card and any ``training_log.json``.
``compression.json`` is the input's record with new file hashes and parameter counts
(``student_parameters``, and ``structure.parameters`` lowered by the rows removed), plus a
``vocabulary`` section. An ONNX export (``onnx/``) is not carried over: it holds the old embedding,
so run ``compress export`` on the new folder again.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import cycle, islice
from pathlib import Path
from typing import Any

import datasets
import torch
import transformers
from tokenizers import Tokenizer
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoTokenizer, PreTrainedModel

from compress.data import load_texts
from compress.errors import CompressError, DataError, OutputDirError, RunFolderError
from compress.export import RECORD_FILE, TRAINING_LOG_FILE, load_student, write_student
from compress.outputs import StagedOutput, check_output_path
from compress.sentence import read_pipeline
from compress.teachers import TOKENIZER_FILES

#: the record's section that says what the vocabulary pruning kept
RECORD_KEY = "vocabulary"
#: the tokenizer model whose vocabulary a subset of its tokens can replace without changing kept splits
WORDPIECE = "WordPiece"
#: why the common other tokenizer models are refused
REFUSED = {
    "BPE": "BPE builds kept tokens by merging removed ones, so kept words would tokenize differently",
    "Unigram": "Unigram chooses among all vocabulary splits by score, which a smaller vocabulary changes",
}
#: documents tokenised at a time while counting and checking
BATCH_DOCS = 256
#: at most this many kept tokens are run through the model before and after pruning, to compare outputs
CHECK_TOKENS = 256
#: largest max abs difference allowed between the outputs before and after pruning
TOLERANCE = 1e-5
#: init arguments that describe the old vocabulary; the pruned backend replaces them
VOCAB_KWARGS = ("vocab", "vocab_file", "merges", "tokenizer_file", "added_tokens_decoder", "name_or_path")


class VocabularyError(CompressError, ValueError):
    """A student whose vocabulary cannot be pruned as asked (tokenizer type, min_count, a weight indexed by token)."""


def _batches(texts: Iterable[str], size: int = BATCH_DOCS) -> Iterator[list[str]]:
    iterator = iter(texts)
    while batch := list(islice(iterator, size)):
        yield batch


def _tokenizer_spec(tokenizer: Any) -> dict[str, Any]:
    """The ``tokenizer.json`` of a WordPiece tokenizer as a dict; any other tokenizer is refused by name."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    name = type(tokenizer).__name__
    if not isinstance(backend, Tokenizer):
        raise VocabularyError(
            f"the student's tokenizer ({name}) is not backed by the tokenizers library, so its vocabulary cannot be "
            "cut; only WordPiece tokenizers (the BERT family: BERT, MiniLM, DistilBERT, ELECTRA) can be pruned"
        )
    spec = json.loads(backend.to_str())
    kind = spec["model"].get("type")
    if kind != WORDPIECE:
        reason = REFUSED.get(kind, "pruning is only implemented and checked for WordPiece")
        raise VocabularyError(
            f"the student's tokenizer ({name}) is a {kind} tokenizer, and only WordPiece tokenizers (the BERT family: "
            f"BERT, MiniLM, DistilBERT, ELECTRA) can be pruned: {reason}"
        )
    if tokenizer.unk_token_id is None or spec["model"].get("unk_token") not in spec["model"]["vocab"]:
        raise VocabularyError(
            f"the student's tokenizer ({name}) has no unknown token in its vocabulary, so a word it can no longer "
            "spell would have no id; add one (unk_token) before pruning"
        )
    return spec


def check_prunable(tokenizer: Any) -> None:
    """Refuse, naming the reason, a tokenizer whose vocabulary cannot be pruned (a run checks before training)."""
    _tokenizer_spec(tokenizer)


def _encoder(tokenizer: Any) -> Tokenizer:
    """A copy of the tokenizer's backend that neither truncates nor pads, so every token of a text counts."""
    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_truncation()
    backend.no_padding()
    return backend


def _special_ids(tokenizer: Any) -> set[int]:
    """The special tokens and any other added tokens: always kept, whatever the corpus holds."""
    return set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)


def _matched_pieces(word: str, vocab: Mapping[str, int], prefix: str, max_chars: int) -> list[int]:
    """The ids of the pieces WordPiece's greedy longest match takes for ``word``, up to where it gives up."""
    if len(word) > max_chars:
        return []
    ids, start = [], 0
    while start < len(word):
        for end in range(len(word), start, -1):
            piece = word[start:end] if start == 0 else prefix + word[start:end]
            if piece in vocab:
                ids.append(vocab[piece])
                start = end
                break
        else:
            return ids
    return ids


def _words(backend: Tokenizer, text: str) -> list[str]:
    """``text`` as the words WordPiece sees: normalised, then pre-tokenised."""
    if backend.normalizer is not None:
        text = backend.normalizer.normalize_str(text)
    if backend.pre_tokenizer is None:
        return [text]
    return [word for word, _ in backend.pre_tokenizer.pre_tokenize_str(text)]


def vocabulary_from_texts(tokenizer: Any, texts: Iterable[str], min_count: int = 1, progress: bool = False) -> list[int]:
    """The old ids to keep, sorted: the special and added tokens, and every token used ``min_count`` times.

    A token's count is how often the original tokenizer gives it on ``texts`` (no truncation, no
    special tokens). A word it cannot spell (one ``[UNK]``) also counts the pieces WordPiece matched
    before giving up, so the pruned tokenizer still gives ``[UNK]`` for it (see the module docstring).
    """
    if not isinstance(min_count, int) or isinstance(min_count, bool) or min_count < 1:
        raise VocabularyError(
            f"min_count is {min_count!r}; pass a whole number >= 1 (1 keeps every token the corpus uses)"
        )
    model = _tokenizer_spec(tokenizer)["model"]
    vocab, prefix, max_chars = model["vocab"], model["continuing_subword_prefix"], model["max_input_chars_per_word"]
    unk_id, unk_token = tokenizer.unk_token_id, str(tokenizer.unk_token)
    backend = _encoder(tokenizer)
    counts: Counter[int] = Counter()
    documents = 0
    with tqdm(desc="counting tokens", unit=" docs", disable=not progress) as bar:
        for batch in _batches(texts):
            for text, encoding in zip(batch, backend.encode_batch(batch, add_special_tokens=False)):
                counts.update(encoding.ids)
                for token, (start, end) in zip(encoding.ids, encoding.offsets):
                    if token == unk_id and text[start:end] != unk_token:  # a word WordPiece could not spell
                        for word in _words(backend, text[start:end]):
                            counts.update(_matched_pieces(word, vocab, prefix, max_chars))
            documents += len(batch)
            bar.update(len(batch))
    if documents == 0:
        raise DataError("the corpus has no text to count tokens in; pass a corpus with text")
    return sorted(_special_ids(tokenizer) | {token for token, count in counts.items() if count >= min_count})


def _remap_processor(processor: dict[str, Any] | None, token_id: Callable[[str], int]) -> None:
    """Point a ``tokenizer.json`` post-processor's special tokens at their new ids (in place)."""
    if processor is None or processor["type"] == "ByteLevel":
        return
    if processor["type"] == "Sequence":
        for inner in processor["processors"]:
            _remap_processor(inner, token_id)
    elif processor["type"] == "TemplateProcessing":
        for special in processor["special_tokens"].values():
            special["ids"] = [token_id(token) for token in special["tokens"]]
    elif processor["type"] in ("BertProcessing", "RobertaProcessing"):
        for key in ("cls", "sep"):
            processor[key] = [processor[key][0], token_id(processor[key][0])]
    else:
        raise VocabularyError(
            f"the student's tokenizer adds special tokens with a {processor['type']} post-processor, whose ids this "
            "library cannot renumber; only Template, Bert and Roberta processing are handled"
        )


def _pruned_tokenizer(tokenizer: Any, kept: Sequence[int]) -> Any:
    """``tokenizer`` with the kept tokens only, renumbered in their old order; the same class and settings."""
    spec = _tokenizer_spec(tokenizer)
    new_id = {old: new for new, old in enumerate(kept)}
    vocab = sorted((old, token) for token, old in spec["model"]["vocab"].items() if old in new_id)
    spec["model"]["vocab"] = {token: new_id[old] for old, token in vocab}
    spec["added_tokens"] = [{**added, "id": new_id[added["id"]]} for added in spec["added_tokens"]]
    ids = {**spec["model"]["vocab"], **{added["content"]: added["id"] for added in spec["added_tokens"]}}
    _remap_processor(spec["post_processor"], ids.__getitem__)
    if spec.get("padding"):
        spec["padding"]["pad_id"] = ids[spec["padding"]["pad_token"]]
    backend = Tokenizer.from_str(json.dumps(spec))
    settings = {key: value for key, value in tokenizer.init_kwargs.items() if key not in VOCAB_KWARGS}
    return type(tokenizer)(tokenizer_object=backend, **settings)


def _config_token_ids(config: transformers.PretrainedConfig) -> dict[str, int]:
    """The vocabulary ids the config names (``pad_token_id``, ``bos_token_id`` ...), which the model may use itself."""
    return {
        key: value
        for key, value in config.to_dict().items()
        if key.endswith("_token_id") and isinstance(value, int) and 0 <= value < config.vocab_size
    }


def _vocabulary_parameters(model: PreTrainedModel) -> list[nn.Parameter]:
    """The parameters indexed by token: word embeddings, MLM decoder weight and bias, the head's own bias."""
    size = model.get_input_embeddings().num_embeddings
    found = [model.get_input_embeddings().weight]
    decoder = model.get_output_embeddings()
    if decoder is not None:
        name = next(name for name, module in model.named_modules() if module is decoder)
        head = model.get_submodule(name.rpartition(".")[0])
        found += [decoder.weight, decoder.bias, *(p for p in head.parameters(recurse=False) if p.shape == (size,))]
    unique = list({id(p): p for p in found if p is not None}.values())
    listed = {id(p) for p in unique}
    other = [
        name
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]
        if id(tensor) not in listed and size in tensor.shape
    ]
    if other:
        raise VocabularyError(
            f"{', '.join(other)} of {type(model).__name__} have a dimension of the vocabulary size {size}, and only the "
            "word embeddings and the MLM decoder are known to be indexed by token; this model cannot be pruned safely"
        )
    return unique


def _prune_model(model: PreTrainedModel, kept: Sequence[int]) -> None:
    """Keep only the ``kept`` rows of every token-indexed parameter (in place, ties kept) and renumber the config."""
    parameters, named = _vocabulary_parameters(model), _config_token_ids(model.config)
    index = torch.tensor(kept, dtype=torch.long)
    new_id = {old: new for new, old in enumerate(kept)}
    for parameter in parameters:
        parameter.data = parameter.data.index_select(0, index.to(parameter.device))
    embeddings, decoder = model.get_input_embeddings(), model.get_output_embeddings()
    embeddings.num_embeddings = len(kept)
    if embeddings.padding_idx is not None:
        embeddings.padding_idx = new_id.get(embeddings.padding_idx)
    if decoder is not None:
        decoder.out_features = len(kept)
    model.config.vocab_size = len(kept)
    for key, old in named.items():
        setattr(model.config, key, new_id[old])


def _probe(kept: Sequence[int], config: transformers.PretrainedConfig) -> torch.Tensor:
    """Rows of kept old ids (spread over the kept vocabulary, at most ``CHECK_TOKENS``) to run the model on."""
    length = min(128, getattr(config, "max_position_embeddings", None) or 128)
    sample = kept[:: -(-len(kept) // CHECK_TOKENS)]
    rows = -(-len(sample) // length)
    return torch.tensor(list(islice(cycle(sample), rows * length))).view(rows, length)


@torch.no_grad()
def _outputs(
    model: PreTrainedModel, rows: torch.Tensor, columns: Sequence[int] | None = None
) -> list[dict[str, torch.Tensor]]:
    """The model's tensor outputs, one row at a time (MLM logits are large), logits cut to ``columns`` if given."""
    found = []
    for ids in rows.split(1):
        output = model(input_ids=ids, attention_mask=torch.ones_like(ids))
        tensors = {key: value for key, value in output.items() if isinstance(value, torch.Tensor)}
        if columns is not None and "logits" in tensors:
            tensors["logits"] = tensors["logits"][..., list(columns)]
        found.append(tensors)
    return found


def _check_same_outputs(before: list[dict[str, torch.Tensor]], after: list[dict[str, torch.Tensor]]) -> None:
    """Refuse a pruned model whose outputs on the kept tokens differ from the original's."""
    for reference, pruned in zip(before, after):
        for key, value in reference.items():
            difference = (pruned[key] - value).abs().max().item()
            if not difference <= TOLERANCE:
                raise VocabularyError(
                    f"the pruned model's {key} differ from the original's by {difference:.2e} on kept tokens; the "
                    "model has a token-indexed weight this library does not prune correctly"
                )


def _check_tokenizer(original: Any, pruned: Any, texts: Iterable[str], kept: Sequence[int]) -> None:
    """Refuse a saved tokenizer that splits a corpus text of kept tokens otherwise than the original did."""
    new_id = {old: new for new, old in enumerate(kept)}
    before, after = _encoder(original), _encoder(pruned)
    for batch in _batches(texts):
        for text, old, new in zip(batch, before.encode_batch(batch), after.encode_batch(batch)):
            if all(i in new_id for i in old.ids) and [new_id[i] for i in old.ids] != new.ids:
                raise VocabularyError(
                    f"the pruned tokenizer splits {text[:60]!r}... otherwise than the original ({len(new.ids)} tokens "
                    f"against {len(old.ids)}); its tokenizer.json holds settings this library does not carry over"
                )


def _prune_checked(model: PreTrainedModel, tokenizer: Any, kept: Sequence[int]) -> Any:
    """Prune ``model`` to the ``kept`` ids in place, checked against its outputs before; return the pruned tokenizer."""
    size = model.get_input_embeddings().num_embeddings
    if kept[-1] >= size:
        raise VocabularyError(
            f"the tokenizer gives token id {kept[-1]}, beyond the model's {size} word embeddings: tokenizer and "
            "model do not belong together"
        )
    probe = _probe(kept, model.config)
    before = _outputs(model, probe, kept if model.get_output_embeddings() is not None else None)
    pruned = _pruned_tokenizer(tokenizer, kept)
    _prune_model(model, kept)
    new_ids = torch.zeros(size, dtype=torch.long)
    new_ids[torch.tensor(kept)] = torch.arange(len(kept))
    _check_same_outputs(before, _outputs(model, new_ids[probe]))
    return pruned


def _student_record(folder: Path) -> dict[str, Any]:
    """The record of a text student folder of this library; anything else is refused, naming what is missing."""
    if not folder.is_dir():
        raise RunFolderError(f"{folder} is not a folder; pass a student folder written by `compress run` (its --out)")
    path = folder / RECORD_FILE
    if not path.is_file():
        raise RunFolderError(
            f"{folder} is not a student of this library: it has no {RECORD_FILE}; pass a folder written by "
            "`compress run` or compress.save_student"
        )
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RunFolderError(f"{path} cannot be read as JSON ({err}); export the student again") from err
    if not isinstance(record, dict):
        raise RunFolderError(f"{path} holds no JSON object; export the student again")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise VocabularyError(
            f"{folder} holds no tokenizer, so there is no vocabulary to prune (a speech student has none); pass a "
            "text student saved with its tokenizer"
        )
    return record


def _output_folder(folder: Path, data: str | Path, out: str | Path, overwrite: bool) -> Path:
    """``out`` resolved, if it is not the input student, inside it or around it, and passes ``check_output_path``."""
    target = Path(out).expanduser().resolve()
    source = folder.resolve()
    if target == source or source in target.parents or target in source.parents:
        raise OutputDirError(
            f"refusing to write the pruned student to {target}: it is, lies in or contains the student being pruned "
            f"({source}); pass an --out folder of its own, e.g. {source.with_name(source.name + '-vocab')}"
        )
    return check_output_path(target, protected=[folder, data], overwrite=overwrite)


@contextlib.contextmanager
def _progress_bars(progress: bool) -> Iterator[None]:
    """Hide the progress bars of datasets and transformers unless ``progress``; restore them afterwards."""
    logs = transformers.utils.logging
    shown = datasets.is_progress_bar_enabled(), logs.is_progress_bar_enabled()
    if not progress:
        datasets.disable_progress_bars()
        logs.disable_progress_bar()
    try:
        yield
    finally:
        datasets.enable_progress_bars() if shown[0] else datasets.disable_progress_bars()
        logs.enable_progress_bar() if shown[1] else logs.disable_progress_bar()


@dataclass
class PrunedVocabulary:
    """What ``prune_loaded`` did: the pruned tokenizer, the kept old ids and the record section."""

    tokenizer: Any
    original: Any
    kept: list[int]
    section: dict[str, Any]
    removed_parameters: int

    def check_saved(self, folder: Path, texts: Iterable[str]) -> None:
        """Reload the tokenizer written to ``folder``: it must split every corpus text of kept tokens as before."""
        _check_tokenizer(self.original, AutoTokenizer.from_pretrained(folder), texts, self.kept)


def prune_loaded(
    model: PreTrainedModel, tokenizer: Any, texts: Sequence[str], corpus: str, min_count: int = 1, progress: bool = False
) -> PrunedVocabulary:
    """Prune a loaded student's vocabulary in place to what ``texts`` use, checked against its outputs before.

    ``corpus`` names the texts in the record section. The run's export (``export.vocabulary: corpus``)
    and ``prune_vocabulary`` share it; the caller writes the model with ``PrunedVocabulary.tokenizer``
    and then checks the saved tokenizer (``check_saved``).
    """
    counted = vocabulary_from_texts(tokenizer, texts, min_count, progress)
    kept = sorted(set(counted) | set(_config_token_ids(model.config).values()))
    original_size, original_weights = model.get_input_embeddings().num_embeddings, model.num_parameters()
    pruned_tokenizer = _prune_checked(model, tokenizer, kept)
    section = {
        "original_size": original_size,
        "kept_size": len(kept),
        "tokens_removed": original_size - len(kept),
        "min_count": min_count,
        "corpus": corpus,
    }
    return PrunedVocabulary(pruned_tokenizer, tokenizer, kept, section, original_weights - model.num_parameters())


def prune_vocabulary(
    student_dir: str | Path,
    data: str | Path,
    out: str | Path,
    min_count: int = 1,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write a copy of a text student whose vocabulary holds only what ``data`` uses; return the new folder.

    ``data`` is a corpus as ``compress run --data`` reads it (``compress.data.load_texts``: a text
    file, a dataset file or folder, a hub id, or ``"python-docs"``). Kept: the special and added
    tokens, the config's token ids and every token the corpus uses ``min_count`` times
    (``vocabulary_from_texts``). The model's outputs on the kept tokens are checked against the
    original's before anything is written. The saved tokenizer is reloaded from the staged folder
    and must split every corpus text of kept tokens as the original did. ``out`` follows the
    library's output policy (never the input, ``overwrite`` only replaces an earlier student) and
    appears complete or not at all. How text with removed tokens is tokenised: see the module docstring.
    """
    folder = Path(student_dir).expanduser()
    record = _student_record(folder)
    target = _output_folder(folder, data, out, overwrite)
    with _progress_bars(progress):
        texts = load_texts(data)["text"]
        model = load_student(folder).eval()
        pruned = prune_loaded(model, AutoTokenizer.from_pretrained(folder), texts, str(data), min_count, progress)
        record[RECORD_KEY] = pruned.section
        if isinstance(record.get("structure"), dict) and "parameters" in record["structure"]:
            record["structure"]["parameters"] -= pruned.removed_parameters
        with StagedOutput(target) as staged:
            write_student(model, staged.path, pruned.tokenizer, record, sentence_from=read_pipeline(folder))
            if (folder / TRAINING_LOG_FILE).is_file():
                shutil.copy2(folder / TRAINING_LOG_FILE, staged.path / TRAINING_LOG_FILE)
            pruned.check_saved(staged.path, texts)
            staged.commit()
    return target
