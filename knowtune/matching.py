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


def strip_punctuation(text: str) -> str:
    """`text` without ASCII punctuation and Unicode punctuation (category P*), as `normalize_answer` drops them."""
    # Removed, not replaced by a space, as in the SQuAD normaliser ("U.S." == "US"); Unicode punctuation
    # (e.g. '’', '–') counts too, so typographic quotes never block a match.
    return "".join(ch for ch in text if ch not in _PUNCT and not unicodedata.category(ch).startswith("P"))


def is_correct(prediction: str, answers: Iterable[str]) -> bool:
    """True when the normalised prediction equals any normalised gold alias."""
    pred = normalize_answer(prediction)
    return any(pred == normalize_answer(a) for a in answers)
