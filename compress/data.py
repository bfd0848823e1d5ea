"""Text data for distillation and evaluation: load a corpus, split it by document, cut it into examples.

Every loader returns a ``datasets.Dataset`` with one column, ``text``, one document per row, so
training and evaluation see the same shape whatever the source.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow.compute as pc
import torch
from datasets import Dataset, DatasetDict, concatenate_datasets
from datasets.exceptions import DatasetsError

from compress.corpora import BUILTINS
from compress.errors import DataError
from compress.sources import TEXT_EXAMPLES, mix_problem, named_corpora

BUILTIN = "python-docs"
FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
TEXT_SUFFIX = ".txt"
SUPPORTED = "a .txt, .jsonl, .json, .csv or .parquet file, or a folder written by Dataset.save_to_disk"
PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n")
#: a paragraph or line with a letter holds text (not a rule of dashes or a row of numbers)
LETTER = re.compile(r"[^\W\d_]")
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


def load_texts(source: str | Path | Mapping[str, float] = BUILTIN, column: str | None = None) -> Dataset:
    """Load a corpus as a Dataset with one ``text`` column, one non-blank document per row.

    ``source`` is a built-in corpus (``"python-docs"``, the CPython documentation topics, always
    available offline; ``"wordnet"``, see ``compress.corpora``), a file (.txt with blank-line separated
    paragraphs, .jsonl/.json, .csv, .parquet), a folder written by ``save_to_disk``, or a hub dataset id
    (``name`` or ``owner/name``); or several of them joined by ``+`` (``python-docs+wordnet``), their
    documents one after the other; or a mix, ``{corpus: share}``, here all its corpora whole (the shares
    apply to the training split: ``split_source``). ``column`` names the text column (default ``text``).
    """
    parts = source_parts(source)
    if len(parts) > 1 or isinstance(source, Mapping):
        return concatenate_datasets([load_texts(part, column) for part in parts])
    if isinstance(source, str) and source in BUILTINS:
        raw = BUILTINS[source]()
    else:
        raw = load_raw(source)
    return _text_column(raw, column or "text", str(source))


def source_parts(source: str | Path | Mapping[str, float]) -> list[str | Path]:
    """The corpora a source names, in order: a ``+`` join's parts or a mix's keys (a path that exists is one source)."""
    if isinstance(source, Mapping):
        problem = mix_problem(source)
        if problem:
            raise DataError(f"data mix {dict(source)} {problem}")
        return list(source)
    parts = named_corpora(source)
    if not all(parts):
        raise DataError(f"data source {source!r} has an empty part; join corpora as python-docs+wordnet")
    return parts


def load_raw(source: str | Path) -> Dataset:
    """Dispatch on what ``source`` is: a folder, a file, a missing path, or a hub id (all columns kept).

    Also the dataset loader of ``compress.audio``, which reads an audio column instead of text.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        return _load_folder(path)
    if path.is_file():
        return _load_file(path)
    if _looks_like_path(source):
        raise DataError(f"no such file or folder: {path}; check the path, or pass {SUPPORTED}")
    return _load_hub(str(source))


def _looks_like_path(source: str | Path) -> bool:
    """True for a Path, a known file suffix, or text that cannot be a hub id (``name``/``owner/name``)."""
    if isinstance(source, Path):
        return True
    suffix = Path(source).suffix.lower()
    return suffix in FILE_BUILDERS or suffix == TEXT_SUFFIX or not HUB_ID.fullmatch(source)


def _load_file(path: Path) -> Dataset:
    """Read one file by its suffix: paragraphs of a .txt, or rows of a json/csv/parquet file."""
    suffix = path.suffix.lower()
    if suffix == TEXT_SUFFIX:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise DataError(f"{path} is not UTF-8 text ({err}); convert it to UTF-8") from err
        return Dataset.from_dict({"text": [p.strip() for p in PARAGRAPH_BREAK.split(text)]})
    builder = FILE_BUILDERS.get(suffix)
    if builder is None:
        raise DataError(f"cannot read {path}: unknown format {suffix or '(no suffix)'}; pass {SUPPORTED}")
    try:
        return datasets.load_dataset(builder, data_files=str(path), split="train")
    except (DatasetsError, OSError, ValueError) as err:
        raise DataError(f"could not read {path} as {builder} ({err}); check that it is valid {builder}") from err


def _load_folder(path: Path) -> Dataset:
    """Load a ``save_to_disk`` folder; a DatasetDict gives its ``train`` split."""
    try:
        loaded = datasets.load_from_disk(str(path))
    except FileNotFoundError as err:
        raise DataError(f"{path} is not a folder written by save_to_disk; pass {SUPPORTED}") from err
    if isinstance(loaded, DatasetDict):
        if "train" not in loaded:
            raise DataError(
                f"{path} holds a DatasetDict without a 'train' split (splits: {', '.join(loaded)}); "
                "save the split to train on under the name 'train', or save it alone with Dataset.save_to_disk"
            )
        return loaded["train"]
    return loaded


def _load_hub(name: str) -> Dataset:
    """The ``train`` split of a hub dataset; any failure says how to use local data instead."""
    try:
        return datasets.load_dataset(name, split="train")
    except (DatasetsError, OSError, ValueError) as err:
        raise DataError(
            f"dataset {name!r} could not be loaded from the Hugging Face hub ({err}), and it is no local "
            f"file or folder; this machine may be offline: pass {SUPPORTED} instead, or {BUILTIN!r}"
        ) from err


def _text_column(raw: Dataset, column: str, source: str) -> Dataset:
    """Keep only ``column`` (renamed ``text``), drop blank rows, and check that text remains.

    The result lives in memory, so later maps and selections never write cache files into the
    user's ``save_to_disk`` folder (packing holds the whole token stream in memory anyway).
    """
    _check_text_column(raw, column, source)
    texts = raw.select_columns([column])
    if column != "text":
        texts = texts.rename_column(column, "text")
    texts = texts.filter(_non_blank, batched=True, keep_in_memory=True).flatten_indices(keep_in_memory=True)
    if len(texts) == 0:
        raise DataError(f"{source} has no text: every row of column {column!r} is empty; pass a corpus with text")
    return texts


def _check_text_column(raw: Dataset, column: str, source: str | Path) -> None:
    """Refuse a text column that is missing or does not hold strings, naming the columns there are."""
    if column not in raw.column_names:
        raise DataError(
            f"{source} has no column {column!r} (columns: {', '.join(raw.column_names)}); "
            "pass data.column=NAME to choose the text column"
        )
    feature = raw.features[column]
    if not (isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")):
        raise DataError(
            f"column {column!r} of {source} holds {feature}, not strings; pass data.column=NAME for a text column"
        )


def _non_blank(batch: dict[str, list]) -> list[bool]:
    """Which rows hold more than whitespace (``None`` counts as blank)."""
    return [bool(text and text.strip()) for text in batch["text"]]


def split_held_out(texts: Dataset, fraction: float = 0.1, seed: int = 0) -> tuple[Dataset, Dataset]:
    """Split documents into (train, held_out) so no held-out text is ever trained on.

    The split is by document, before tokenisation, chosen by a seeded permutation (the same
    seed gives the same split); each part keeps the corpus order and holds at least one document.
    """
    if not 0.0 < fraction < 1.0:
        raise DataError(f"held-out fraction {fraction} is not between 0 and 1; pass a value such as 0.1")
    count = len(texts)
    if count < 2:
        raise DataError(f"the corpus has {count} document(s); a held-out split needs at least 2, pass a larger corpus")
    held = min(max(round(count * fraction), 1), count - 1)
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()
    return texts.select(sorted(order[held:])), texts.select(sorted(order[:held]))


def _wrapping(tokenizer: Any, seq_len: int) -> tuple[int | None, int | None, int]:
    """The ids an example of at most ``seq_len`` tokens is wrapped in, and the tokens of text left between.

    ``[CLS] ... [SEP]`` when the tokenizer has both (else (None, None) and no wrapping).
    """
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    if cls is None or sep is None:
        cls = sep = None
    body = seq_len if cls is None else seq_len - 2
    if body < 1:
        raise DataError(f"seq_len {seq_len} leaves no room for text between [CLS] and [SEP]; pass seq_len >= 3")
    return cls, sep, body


def pack_tokens(texts: Dataset, tokenizer: Any, seq_len: int) -> Dataset:
    """Tokenise all documents, concatenate them and cut the stream into ``seq_len`` blocks.

    Each block is ``[CLS] ... [SEP]`` around ``seq_len - 2`` tokens (no special tokens if the
    tokenizer has none); the last partial block is dropped so every block is full and no padding
    is needed. Columns: input_ids, attention_mask (all ones) and, if the tokenizer uses them,
    token_type_ids (all zeros); formatted as torch tensors.
    """
    cls, sep, body = _wrapping(tokenizer, seq_len)
    special = cls is not None
    stream = _token_stream(texts, tokenizer)
    blocks = len(stream) // body
    if blocks == 0:
        raise DataError(
            f"the corpus has {len(stream)} tokens, fewer than one block of {body}; "
            "pass a larger corpus or a smaller seq_len"
        )
    ids = stream[: blocks * body].reshape(blocks, body)
    if special:
        ids = np.concatenate([np.full((blocks, 1), cls, ids.dtype), ids, np.full((blocks, 1), sep, ids.dtype)], 1)
    columns = {"input_ids": ids, "attention_mask": np.ones_like(ids, dtype=np.int8)}
    if "token_type_ids" in tokenizer.model_input_names:
        columns["token_type_ids"] = np.zeros_like(ids, dtype=np.int8)
    return Dataset.from_dict(columns).with_format("torch")


def paragraph_examples(texts: Dataset, tokenizer: Any, seq_len: int) -> Dataset:
    """One example per paragraph of every document (a longer paragraph is cut into ``seq_len`` pieces).

    Unlike ``pack_tokens`` no example joins text of two paragraphs, so the student trains on inputs
    shaped like the sentences and paragraphs a sentence encoder embeds: short ones stay short, and
    their pooled embeddings are of one text each. Each piece is ``[CLS] ... [SEP]`` (no special tokens
    if the tokenizer has none); the examples have different lengths, so the collator pads each batch
    (``DataCollatorWithPadding``). Paragraphs without a letter (rules, blank runs) are skipped.
    """
    cls, sep, body = _wrapping(tokenizer, seq_len)
    special = cls is not None

    def cut(batch: dict[str, list[str]]) -> dict[str, list[list[int]]]:
        paragraphs = [
            " ".join(paragraph.split())
            for document in batch["text"]
            for paragraph in PARAGRAPH_BREAK.split(document)
            if LETTER.search(paragraph)
        ]
        ids = tokenizer(paragraphs, add_special_tokens=False, verbose=False)["input_ids"] if paragraphs else []
        pieces = [row[start : start + body] for row in ids for start in range(0, len(row), body)]
        if special:
            pieces = [[cls, *piece, sep] for piece in pieces]
        columns = {"input_ids": pieces, "attention_mask": [[1] * len(piece) for piece in pieces]}
        if "token_type_ids" in tokenizer.model_input_names:
            columns["token_type_ids"] = [[0] * len(piece) for piece in pieces]
        return columns

    examples = texts.map(cut, batched=True, remove_columns=texts.column_names, desc="tokenising paragraphs")
    if len(examples) == 0:
        raise DataError("the corpus has no paragraph with a letter in it; pass a corpus of text")
    return examples


def _token_stream(texts: Dataset, tokenizer: Any) -> np.ndarray:
    """All documents' token ids (no special tokens) end to end, as one int32 array."""

    def tokenize(batch: dict[str, list[str]]) -> dict[str, list[list[int]]]:
        return {"ids": tokenizer(batch["text"], add_special_tokens=False, verbose=False)["input_ids"]}

    tokenized = texts.map(tokenize, batched=True, remove_columns=texts.column_names, desc="tokenising")
    flat = pc.list_flatten(tokenized.data.column("ids"))
    return flat.to_numpy().astype(np.int32, copy=False)


def split_source(
    source: str | Path | Mapping[str, float], fraction: float = 0.1, seed: int = 0, column: str | None = None
) -> tuple[Dataset, Dataset]:
    """``split_held_out`` of a source's documents: (train, held_out).

    A joined source or a mix is split corpus by corpus, so each corpus holds out the documents it holds
    out alone (a mix never trains on text a run on one of its corpora held out), and the held-out
    documents come in the order the corpora are named. A mix (``{corpus: share}``) then samples the
    training documents to those shares of characters (``mixed``); the held-out parts stay whole.
    """
    splits = [split_held_out(load_texts(part, column), fraction, seed) for part in source_parts(source)]
    trains = [train for train, _ in splits]
    if isinstance(source, Mapping):
        trains = mixed(trains, list(source.values()), seed)
    return concatenate_datasets(trains), concatenate_datasets([held for _, held in splits])


def mixed(corpora: Sequence[Dataset], shares: Sequence[float], seed: int = 0) -> list[Dataset]:
    """Each corpus cut to its share of the text: the largest mix in ``shares`` (by characters) that they hold.

    The corpus with the least text per share is kept whole; each other one keeps a seeded random
    selection of its documents (in corpus order) until its share is reached.
    """
    lengths = [np.array([len(text) for text in corpus["text"]]) for corpus in corpora]
    scale = min(sizes.sum() / share for sizes, share in zip(lengths, shares))
    kept = []
    for index, (corpus, sizes, share) in enumerate(zip(corpora, lengths, shares)):
        order = torch.randperm(len(corpus), generator=torch.Generator().manual_seed(seed + index)).numpy()
        taken = int(np.searchsorted(np.cumsum(sizes[order]), scale * share, side="left")) + 1
        kept.append(corpus.select(sorted(order[:taken].tolist())))
    return kept


def load_labelled(source: str | Path, label: str, label2id: Mapping[str, int], column: str | None = None) -> Dataset:
    """Rows of ``source`` as ``text`` and an integer ``labels`` column, for a teacher with a classification head.

    ``label`` names the column of class labels: integers in ``range(len(label2id))``, or names that the
    teacher's ``config.label2id`` maps. A row with another label is refused, naming it (training on
    labels the head does not have would silently learn the wrong task).
    """
    if isinstance(source, Mapping) or len(source_parts(source)) > 1:
        raise DataError(f"data.label reads one labelled file or dataset, not a joined source or a mix ({source!r})")
    if isinstance(source, str) and source in BUILTINS:
        raise DataError(f"the built-in corpus {source!r} has no labels; pass a labelled file with --data for data.label")
    raw = load_raw(source)
    if label not in raw.column_names:
        raise DataError(f"{source} has no label column {label!r} (columns: {', '.join(raw.column_names)}); set data.label=NAME")
    text = column or "text"
    _check_text_column(raw, text, source)
    ids = [_label_id(value, label2id, source) for value in raw[label]]
    rows = Dataset.from_dict({"text": raw[text], "labels": ids})
    rows = rows.filter(_non_blank, batched=True, keep_in_memory=True).flatten_indices(keep_in_memory=True)
    if len(rows) == 0:
        raise DataError(f"{source} has no text: every row of column {text!r} is empty; pass a labelled set with text")
    return rows


def _label_id(value: Any, label2id: Mapping[str, int], source: str | Path) -> int:
    """The class index of one label: an index the head has, or a name in ``label2id``."""
    count = len(label2id)
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and 0 <= value < count:
        return int(value)
    if isinstance(value, str) and value in label2id:
        return int(label2id[value])
    raise DataError(
        f"{source} has the label {value!r}, which the teacher's head does not have: its {count} classes are "
        f"0..{count - 1} or the names {sorted(label2id)[:8]}{' ...' if count > 8 else ''} (config.label2id); "
        "relabel the data, or fine-tune the teacher on these labels first"
    )


def tokenize_labelled(rows: Dataset, tokenizer: Any, max_length: int) -> Dataset:
    """Tokenise labelled rows one example each (truncated to ``max_length``, unpadded: the collator pads)."""

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        return tokenizer(batch["text"], truncation=True, max_length=max_length, verbose=False)

    return rows.map(tokenize, batched=True, remove_columns=["text"], desc="tokenising", keep_in_memory=True)


def text_datasets(
    source: str | Path | Mapping[str, float],
    tokenizer: Any,
    seq_len: int,
    held_out_fraction: float = 0.1,
    seed: int = 0,
    column: str | None = None,
    examples: str = "blocks",
) -> tuple[Dataset, Dataset, Dataset]:
    """Load ``source``, split it by document and cut both parts into examples: (train, held_out, held_out_texts).

    ``examples`` is ``blocks`` (``pack_tokens``: full blocks across documents) or ``paragraphs``
    (``paragraph_examples``: one per paragraph, padded per batch).
    """
    train_texts, held_out_texts = split_source(source, held_out_fraction, seed, column)
    if examples not in TEXT_EXAMPLES:
        raise DataError(f"examples={examples!r}: pass one of {', '.join(TEXT_EXAMPLES)}")
    cut = pack_tokens if examples == "blocks" else paragraph_examples
    return cut(train_texts, tokenizer, seq_len), cut(held_out_texts, tokenizer, seq_len), held_out_texts
