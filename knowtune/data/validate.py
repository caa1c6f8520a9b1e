"""Field checks shared by the QA loaders: each failure names the file, record and field."""

from __future__ import annotations

import math
from typing import Any

from knowtune.errors import DataError, where


def require_str(obj: dict, key: str, path: object, record: object, *, optional: bool = False) -> str | None:
    """Return obj[key] as a non-empty string, or raise DataError naming file, record and field."""
    if key not in obj or obj[key] is None:
        if optional:
            return None
        raise DataError(f"{where(path, record, key)}: missing")
    value = obj[key]
    if not isinstance(value, str):
        raise DataError(f"{where(path, record, key)}: expected a string, got {type(value).__name__}")
    if not value.strip():
        raise DataError(f"{where(path, record, key)}: empty")
    return value


def require_answers(obj: dict, path: object, record: object, key: str = "answers") -> tuple[str, ...]:
    """Return the record's answers as a non-empty tuple of non-empty strings (a bare string is one answer)."""
    value: Any = obj.get(key)
    if value is None:
        raise DataError(f"{where(path, record, key)}: missing")
    answers = require_str_list({key: [value] if isinstance(value, str) else value}, key, path, record, noun="answer")
    if not answers:
        raise DataError(f"{where(path, record, key)}: no answers")
    return answers


def require_str_list(obj: dict, key: str, path: object, record: object, *, noun: str = "item") -> tuple[str, ...]:
    """Return obj[key] as a tuple of non-empty strings (the list itself may be empty); errors call each a `noun`."""
    value: Any = obj.get(key)
    if value is None:
        raise DataError(f"{where(path, record, key)}: missing")
    if not isinstance(value, list):
        raise DataError(f"{where(path, record, key)}: expected a list of strings, got {type(value).__name__}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise DataError(f"{where(path, record, key)}: {noun} {i} is {type(item).__name__}, not a string")
        if not item.strip():
            raise DataError(f"{where(path, record, key)}: {noun} {i} is empty")
    return tuple(value)


def require_number(obj: dict, key: str, path: object, record: object) -> float | None:
    """Return obj[key] as a finite float, None when absent or null; raise for anything else."""
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(f"{where(path, record, key)}: expected a number, got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond the float range
        number = math.inf if value > 0 else -math.inf
    if not math.isfinite(number):
        raise DataError(f"{where(path, record, key)}: expected a finite number, got {number}")
    return number


def check_unique_ids(ids: list[str], path: object) -> None:
    """Raise DataError naming the first duplicated id."""
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            raise DataError(f"{where(path, i, 'id')}: duplicate id")
        seen.add(i)


def require_probe_record(rec: dict, path: object, lineno: int, categories: tuple[str, ...]) -> dict:
    """Check the fields of a SliCK probe record that later stages rely on; answers come back as a list."""
    at = f"on line {lineno}"
    for key in ("id", "relation", "question"):
        require_str(rec, key, path, at)
    answers = require_answers(rec, path, at)
    require_str(rec, "label", path, at, optional=True)
    require_number(rec, "popularity", path, at)
    category = rec.get("category")
    if category is None:
        raise DataError(f"{where(path, at, 'category')}: missing")
    if category not in categories:
        raise DataError(f"{where(path, at, 'category')}: unknown {category!r}")
    return {**rec, "answers": list(answers)}
