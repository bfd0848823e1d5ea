"""The shape of a text source, checked without loading anything: a corpus, a ``+`` join, or a mix with shares.

Torch-free, so the recipe validates ``data.text`` with the same rule ``compress.data`` applies to a
source passed from Python.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: joins several corpora into one source: python-docs+wordnet, python-docs+my_corpus.jsonl
JOIN = "+"
MIX_EXAMPLE = "{python-docs: 1, wordnet: 3}"
#: how text becomes training examples (data.examples): full blocks across documents, or one per paragraph
TEXT_EXAMPLES = ("blocks", "paragraphs")


def is_join(source: Any) -> bool:
    """Whether ``source`` is a ``+`` join of corpora (a path that exists is one corpus, ``+`` or not)."""
    return isinstance(source, str) and JOIN in source and not Path(source).expanduser().exists()


def named_corpora(source: Any) -> list[Any]:
    """The corpora a source names, unchecked: a mix's keys, a join's parts, else the source itself."""
    if isinstance(source, Mapping):
        return list(source)
    if is_join(source):
        return [part.strip() for part in source.split(JOIN)]
    return [source]


def mix_problem(mix: Mapping[Any, Any]) -> str | None:
    """What is wrong with a mix ``{corpus: share}``, or None: each key one corpus, each share a number > 0."""
    if not mix:
        return f"is an empty mix; name the corpora and their shares, e.g. {MIX_EXAMPLE}"
    for name, share in mix.items():
        if not isinstance(name, str) or not name.strip() or is_join(name):
            return f"names {name!r} in a mix; each key is one corpus (a built-in name, file or folder), e.g. {MIX_EXAMPLE}"
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not share > 0:
            return f"gives {name!r} the share {share!r}; shares are numbers > 0, e.g. {MIX_EXAMPLE}"
    return None
