"""Answer matching exactly as docs/design.md defines it: normalised exact match against any alias."""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Iterable

_PUNCT = set(string.punctuation)
ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """NFKC, lower-case, strip punctuation and the articles a/an/the, collapse whitespace."""
    text = strip_punctuation(unicodedata.normalize("NFKC", text).lower())
    text = ARTICLES.sub(" ", text)
    return " ".join(text.split())


class _PunctuationTable(dict):
    """`str.translate` table: code point → None (dropped) for punctuation, else itself; filled on first sight
    (a dict subclass's `__missing__` is the lookup `str.translate` makes), so the category is asked once per
    character instead of once per character of every text: the exact estimator normalises every prefix it visits."""

    def __missing__(self, code: int) -> int | None:
        ch = chr(code)
        self[code] = None if ch in _PUNCT or unicodedata.category(ch).startswith("P") else code
        return self[code]


_PUNCTUATION = _PunctuationTable()


def strip_punctuation(text: str) -> str:
    """`text` without ASCII punctuation and Unicode punctuation (category P*), as `normalize_answer` drops them."""
    # Removed, not replaced by a space, as in the SQuAD normaliser ("U.S." == "US"); Unicode punctuation
    # (e.g. '’', '–') counts too, so typographic quotes never block a match.
    return text.translate(_PUNCTUATION)


def is_correct(prediction: str, answers: Iterable[str]) -> bool:
    """True when the normalised prediction equals any normalised gold alias."""
    pred = normalize_answer(prediction)
    return any(pred == normalize_answer(a) for a in answers)
