"""Text data (load, split, pack) and embedding fidelity, on the built-in corpus and the real MiniLM."""

from __future__ import annotations

import copy
import itertools
import json
import math

import datasets
import huggingface_hub
import pytest
import torch
from datasets import Dataset, DatasetDict
from pydoc_data.topics import topics
from transformers import BertConfig, BertForMaskedLM, BertModel

from compress.data import load_texts, pack_tokens, paragraph_examples, split_held_out, text_datasets
from compress.errors import CompressError, DataError
from compress.evaluate import (
    embedding_fidelity,
    held_out_sentences,
    mean_pooled_embeddings,
    pairwise_cosine,
    spearman,
)

ROWS = {"text": ["First document.", "", "   ", "Second document, longer."], "id": [1, 2, 3, 4]}
KEPT = ["First document.", "Second document, longer."]


@pytest.fixture(autouse=True)
def private_datasets_cache(tmp_path, monkeypatch):
    """Keep the json/csv/parquet builders' cache out of the user's ~/.cache."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


@pytest.fixture(scope="module")
def corpus() -> Dataset:
    return load_texts()


@pytest.fixture(scope="module")
def packed(corpus, minilm) -> Dataset:
    return pack_tokens(corpus, minilm[1], 128)


@pytest.fixture(scope="module")
def snippets(corpus) -> list[str]:
    return held_out_sentences(corpus, limit=16)


# ---------------------------------------------------------------- loading


def test_builtin_corpus_is_every_pydoc_topic_in_name_order(corpus):
    assert corpus.column_names == ["text"]
    assert len(corpus) == len(topics) > 50
    assert corpus[0]["text"] == topics[min(topics)] and corpus[-1]["text"] == topics[max(topics)]
    assert all(text.strip() for text in corpus["text"])
    assert list(load_texts("python-docs")["text"]) == list(corpus["text"])


def test_txt_file_gives_one_row_per_paragraph(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("First line\nstill the first paragraph.\n\n \t\n\nSecond paragraph.\n\n\n", encoding="utf-8")
    assert list(load_texts(path)["text"]) == ["First line\nstill the first paragraph.", "Second paragraph."]


def _write_json_array(dataset: Dataset, path) -> None:
    path.write_text(json.dumps(dataset.to_list()), encoding="utf-8")


@pytest.mark.parametrize(
    "name, write",
    [
        ("rows.jsonl", lambda ds, path: ds.to_json(str(path))),
        ("rows.json", _write_json_array),
        ("rows.csv", lambda ds, path: ds.to_csv(str(path), index=False)),
        ("rows.parquet", lambda ds, path: ds.to_parquet(str(path))),
    ],
)
def test_table_files_keep_the_text_column_without_blank_rows(tmp_path, name, write):
    path = tmp_path / name
    write(Dataset.from_dict(ROWS), path)
    texts = load_texts(str(path))
    assert texts.column_names == ["text"]
    assert list(texts["text"]) == KEPT


def test_save_to_disk_folders(tmp_path):
    Dataset.from_dict(ROWS).save_to_disk(tmp_path / "plain")
    assert list(load_texts(tmp_path / "plain")["text"]) == KEPT

    splits = DatasetDict({"test": Dataset.from_dict({"text": ["held"]}), "train": Dataset.from_dict(ROWS)})
    splits.save_to_disk(tmp_path / "splits")
    assert list(load_texts(str(tmp_path / "splits"))["text"]) == KEPT
    assert sorted(p.name for p in (tmp_path / "plain").iterdir()) == [
        "data-00000-of-00001.arrow",
        "dataset_info.json",
        "state.json",
    ], "loading must not write cache files into the user's folder"


def test_dataset_dict_without_train_split_lists_its_splits(tmp_path):
    DatasetDict({"validation": Dataset.from_dict(ROWS), "test": Dataset.from_dict(ROWS)}).save_to_disk(tmp_path / "d")
    with pytest.raises(DataError, match=r"without a 'train' split \(splits: validation, test\)"):
        load_texts(tmp_path / "d")


def test_custom_column_is_renamed_text(tmp_path):
    path = tmp_path / "rows.jsonl"
    Dataset.from_dict({"body": ["Alpha text.", " ", "Beta text."], "title": ["a", "b", "c"]}).to_json(str(path))
    texts = load_texts(path, column="body")
    assert texts.column_names == ["text"]
    assert list(texts["text"]) == ["Alpha text.", "Beta text."]


# ---------------------------------------------------------------- loading errors


def test_data_error_is_a_compress_error_and_a_value_error():
    assert issubclass(DataError, CompressError) and issubclass(DataError, ValueError)


@pytest.mark.parametrize("missing", ["corpus.jsonl", "some/folder/that/is/not/there", "./texts"])
def test_missing_path_is_reported_as_such(tmp_path, monkeypatch, missing):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="no such file or folder"):
        load_texts(missing)


def test_empty_corpus(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("\n  \n\n\t\n", encoding="utf-8")
    with pytest.raises(DataError, match="has no text"):
        load_texts(path)


def test_wrong_column_lists_the_available_ones(tmp_path):
    path = tmp_path / "rows.jsonl"
    Dataset.from_dict({"body": ["x"], "title": ["y"]}).to_json(str(path))
    with pytest.raises(DataError, match=r"no column 'text' \(columns: body, title\).*data\.column=NAME"):
        load_texts(path)


def test_non_string_column(tmp_path):
    path = tmp_path / "rows.csv"
    Dataset.from_dict(ROWS).to_csv(str(path), index=False)
    with pytest.raises(DataError, match="column 'id'.*not strings"):
        load_texts(path, column="id")


def test_hub_id_while_offline_suggests_local_data(monkeypatch):
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(name, "1")
    # the libraries read these variables at import, so set their copies too
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    with pytest.raises(DataError, match="could not be loaded from the Hugging Face hub.*offline.*pass a .txt"):
        load_texts("someone/no-such-dataset")


def test_unknown_suffix_and_unreadable_files(tmp_path):
    docx = tmp_path / "notes.docx"
    docx.write_bytes(b"PK\x03\x04 not text")
    with pytest.raises(DataError, match=r"unknown format \.docx; pass a \.txt, \.jsonl"):
        load_texts(docx)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "fine"}\n{"text": \n', encoding="utf-8")
    with pytest.raises(DataError, match="could not read .*broken.jsonl as json"):
        load_texts(broken)
    (tmp_path / "folder").mkdir()
    with pytest.raises(DataError, match="not a folder written by save_to_disk"):
        load_texts(tmp_path / "folder")


# ---------------------------------------------------------------- held-out split


def test_held_out_split_is_by_document_and_deterministic(corpus):
    train, held = split_held_out(corpus, fraction=0.1, seed=0)
    assert len(held) == round(len(corpus) * 0.1) and len(train) + len(held) == len(corpus)
    assert set(train["text"]).isdisjoint(held["text"])
    assert set(train["text"]) | set(held["text"]) == set(corpus["text"])
    again_train, again_held = split_held_out(corpus, fraction=0.1, seed=0)
    assert list(again_held["text"]) == list(held["text"]) and list(again_train["text"]) == list(train["text"])
    assert list(split_held_out(corpus, fraction=0.1, seed=1)[1]["text"]) != list(held["text"])


@pytest.mark.parametrize("fraction", [0.01, 0.5, 0.99])
def test_each_part_keeps_at_least_one_document(fraction):
    train, held = split_held_out(Dataset.from_dict({"text": ["one", "two"]}), fraction=fraction)
    assert len(train) == len(held) == 1


def test_held_out_split_errors():
    with pytest.raises(DataError, match="at least 2"):
        split_held_out(Dataset.from_dict({"text": ["alone"]}))
    for fraction in (0.0, 1.0, -0.5):
        with pytest.raises(DataError, match="not between 0 and 1"):
            split_held_out(Dataset.from_dict({"text": ["one", "two"]}), fraction=fraction)


# ---------------------------------------------------------------- packing


def test_packed_blocks_are_full_and_wrapped(packed, minilm):
    tokenizer = minilm[1]
    ids = packed[:]["input_ids"]
    assert packed.column_names == ["input_ids", "attention_mask", "token_type_ids"]
    assert ids.dtype == torch.int64 and ids.shape == (len(packed), 128)
    assert (ids[:, 0] == tokenizer.cls_token_id).all() and (ids[:, -1] == tokenizer.sep_token_id).all()
    special = torch.tensor(tokenizer.all_special_ids)
    assert not torch.isin(ids[:, 1:-1], special).any()
    assert (packed[:]["attention_mask"] == 1).all() and (packed[:]["token_type_ids"] == 0).all()


def test_packed_blocks_are_the_corpus_token_stream_in_order(packed, corpus, minilm):
    tokenizer = minilm[1]
    encoded = tokenizer(list(corpus["text"]), add_special_tokens=False, verbose=False)["input_ids"]
    stream = torch.tensor(list(itertools.chain.from_iterable(encoded)))
    assert len(packed) == len(stream) // 126 > 900
    assert torch.equal(packed[:]["input_ids"][:, 1:-1].flatten(), stream[: len(packed) * 126])
    decoded = tokenizer.decode(packed[0]["input_ids"], skip_special_tokens=True)
    assert "".join(decoded.split()) in "".join(corpus[0]["text"].lower().split())


def test_tokenizer_without_special_tokens_packs_bare_blocks(minilm):
    tokenizer = copy.deepcopy(minilm[1])
    tokenizer.cls_token = None
    texts = Dataset.from_dict({"text": ["one two three four five six seven eight nine ten eleven"]})
    blocks = pack_tokens(texts, tokenizer, 4)
    stream = tokenizer(texts["text"][0], add_special_tokens=False)["input_ids"]
    assert blocks[:]["input_ids"].flatten().tolist() == stream[: len(blocks) * 4] and len(blocks) == len(stream) // 4


def test_corpus_too_small_for_one_block(minilm):
    tiny = Dataset.from_dict({"text": ["Just a few words."]})
    with pytest.raises(DataError, match="fewer than one block of 126.*smaller seq_len"):
        pack_tokens(tiny, minilm[1], 128)
    with pytest.raises(DataError, match="seq_len >= 3"):
        pack_tokens(tiny, minilm[1], 2)


def test_text_datasets_packs_train_and_held_out_separately(minilm, corpus):
    train, held_blocks, held_texts = text_datasets("python-docs", minilm[1], 64, held_out_fraction=0.2, seed=3)
    expected_held = split_held_out(corpus, 0.2, 3)[1]
    assert list(held_texts["text"]) == list(expected_held["text"])
    assert train[:]["input_ids"].shape[1] == held_blocks[:]["input_ids"].shape[1] == 64
    assert len(train) > len(held_blocks) > 0


def test_paragraph_examples_are_one_per_paragraph_and_never_join_two(minilm):
    tokenizer = minilm[1]
    long = " ".join(f"word{i}" for i in range(60))
    texts = Dataset.from_dict({"text": ["A short one.\n\nAnother   paragraph\nover two lines.", f"----\n\n{long}"]})
    examples = paragraph_examples(texts, tokenizer, 16)
    rows = examples["input_ids"]
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    assert all(row[0] == cls and row[-1] == sep and 3 <= len(row) <= 16 for row in rows)
    decoded = [tokenizer.decode(row[1:-1]) for row in rows]
    assert decoded[:2] == ["a short one.", "another paragraph over two lines."]  # the rule "----" is skipped
    long_ids = tokenizer(long, add_special_tokens=False)["input_ids"]
    assert [token for row in rows[2:] for token in row[1:-1]] == long_ids  # cut in 14-token pieces, in order
    assert len(rows) == 2 + math.ceil(len(long_ids) / 14)
    assert examples["attention_mask"] == [[1] * len(row) for row in rows]
    assert examples["token_type_ids"] == [[0] * len(row) for row in rows]


def test_paragraph_examples_refuse_text_without_letters_and_unknown_modes(minilm):
    with pytest.raises(DataError, match="no paragraph with a letter"):
        paragraph_examples(Dataset.from_dict({"text": ["1234\n\n----"]}), minilm[1], 16)
    with pytest.raises(DataError, match="seq_len >= 3"):
        paragraph_examples(Dataset.from_dict({"text": ["words"]}), minilm[1], 2)
    with pytest.raises(DataError, match="examples='sentences': pass one of blocks, paragraphs"):
        text_datasets("python-docs", minilm[1], 64, examples="sentences")


def test_text_datasets_cuts_paragraphs_of_the_same_documents(minilm):
    blocks, _, held = text_datasets("python-docs", minilm[1], 64, held_out_fraction=0.2, seed=3)
    paragraphs, _, held_again = text_datasets("python-docs", minilm[1], 64, 0.2, 3, examples="paragraphs")
    assert list(held["text"]) == list(held_again["text"])
    lengths = [len(row) for row in paragraphs["input_ids"]]
    assert max(lengths) == 64 and min(lengths) < 16 and len(paragraphs) > len(blocks)
    # the same text: the paragraphs hold the blocks' tokens, give or take whitespace-only paragraphs
    tokens = sum(lengths) - 2 * len(paragraphs)
    assert 0.95 < tokens / (len(blocks) * 62) < 1.1


# ---------------------------------------------------------------- fidelity


def test_spearman_with_ties_matches_hand_computation():
    # ranks [1, 2.5, 2.5, 4] vs [1, 2, 3, 4]: 4.5 / sqrt(4.5 * 5) = 3 / sqrt(10)
    assert spearman(torch.tensor([1.0, 2.0, 2.0, 3.0]), torch.tensor([10.0, 20.0, 30.0, 40.0])) == pytest.approx(
        3 / math.sqrt(10), abs=1e-12
    )
    # ranks [4, 1.5, 1.5, 3, 5] vs [2, 4, 4, 4, 1]: -8 / sqrt(9.5 * 8)
    a, b = torch.tensor([3, 1, 1, 2, 5]), torch.tensor([1, 2, 2, 2, 0])
    assert spearman(a, b) == pytest.approx(-8 / math.sqrt(76), abs=1e-12)
    x = torch.tensor([0.3, -1.0, 2.5, 0.7])
    assert spearman(x, x.exp()) == pytest.approx(1.0) and spearman(x, -x) == pytest.approx(-1.0)
    assert math.isnan(spearman(x, torch.ones(4)))
    with pytest.raises(DataError, match="same length"):
        spearman(x, x[:3])


def test_pairwise_cosine_is_the_upper_triangle():
    emb = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    expected = torch.tensor([0.0, 1 / math.sqrt(2), 1 / math.sqrt(2)], dtype=torch.float64)
    assert torch.allclose(pairwise_cosine(emb), expected)


def test_mean_pooling_ignores_padding_and_restores_train_mode(minilm, snippets):
    model, tokenizer = minilm
    model.train()
    try:
        batched = mean_pooled_embeddings(model, tokenizer, [snippets[0], "Short."], max_length=64)
        alone = mean_pooled_embeddings(model, tokenizer, ["Short."], max_length=64)
        assert model.training
    finally:
        model.eval()
    hooked = [name for name, m in model.named_modules() if m._forward_hooks or m._forward_pre_hooks]
    assert not hooked, "embedding must leave no hooks on the teacher"
    assert batched.shape == (2, model.config.hidden_size)
    assert torch.allclose(batched[1], alone[0], atol=1e-5)


def test_fidelity_of_the_teacher_with_itself_is_one(minilm, snippets):
    model, tokenizer = minilm
    assert embedding_fidelity(model, model, tokenizer, snippets, max_length=64) == pytest.approx(1.0, abs=1e-6)


def test_fidelity_of_a_random_smaller_model_is_clearly_lower(minilm, snippets):
    model, tokenizer = minilm
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
    )
    random_student = BertModel(config)
    assert embedding_fidelity(model, random_student, tokenizer, snippets, max_length=64) < 0.9
    masked_lm = BertForMaskedLM(config)
    assert mean_pooled_embeddings(masked_lm, tokenizer, snippets[:3], max_length=32).shape == (3, 64)


def test_fidelity_needs_three_texts(minilm):
    model, tokenizer = minilm
    with pytest.raises(DataError, match="at least 3 texts"):
        embedding_fidelity(model, model, tokenizer, ["one text", "two texts"])


def test_held_out_sentences_are_clean_bounded_and_deterministic(corpus):
    sentences = held_out_sentences(corpus, limit=50)
    assert len(sentences) == 50 and sentences == held_out_sentences(corpus, limit=50)
    assert all(40 <= len(s) <= 500 and "\n" not in s and "***" not in s for s in sentences)
    flat_corpus = " ".join(" ".join(corpus["text"]).split())
    assert all(s in flat_corpus for s in sentences)


def test_held_out_sentences_skip_short_paragraphs_and_cut_long_ones():
    long = " ".join(f"word{i}" for i in range(200))
    documents = [f"Title\n=====\n\nToo short.\n\n{long}", "A second document that is long enough."]
    texts = Dataset.from_dict({"text": documents})
    sentences = held_out_sentences(texts, min_chars=20, max_chars=100)
    assert len(sentences) == 2 and sentences[1] == "A second document that is long enough."
    assert len(sentences[0]) <= 100 and long.startswith(sentences[0] + " ")
    assert held_out_sentences(texts, limit=1, min_chars=20, max_chars=100) == sentences[:1]
