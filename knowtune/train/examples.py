"""Training examples from JSONL rows of the common QA shapes, so `knowtune train` reads any of them:
`{question, answer | answers | label}` (the QA prompt format; a curated set's relabelled `label` wins)
or `{prompt, target}` (used verbatim), with an optional `group` (or SliCK `category`, or the
self-align sets' `label_source`) that splits the fit, and an optional `id` (else the line number)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from knowtune.data.formats import qa_prompt
from knowtune.data.validate import check_unique_ids, require_answers, require_str
from knowtune.errors import DataError, where
from knowtune.files import iter_jsonl

GROUP_KEYS = ("group", "category", "label_source")


@dataclass(frozen=True)
class SFTExample:
    """One training pair; the loss covers `target` only. `group` (e.g. a SliCK category) splits the fit."""

    id: str
    prompt: str
    target: str
    group: str = "all"


def answer_label(row: dict, path: object = "row", record: object = None) -> str:
    """The answer a QA row trains on: its relabelled `label` (e.g. "I don't know"), else `answer`, else the first of `answers`."""
    for key in ("label", "answer"):
        if row.get(key) is not None:
            return require_str(row, key, path, record)
    return require_answers(row, path, record)[0]


def example_from_row(row: dict, path: object = "row", record: object = None) -> SFTExample:
    """One SFTExample from a row of either shape; a row of neither names the fields it lacks."""
    if "prompt" in row:
        prompt, target = require_str(row, "prompt", path, record), require_str(row, "target", path, record)
    elif "question" in row:
        prompt, target = qa_prompt(require_str(row, "question", path, record)), f" {answer_label(row, path, record)}\n"
    else:
        raise DataError(f"{where(path, record)}: a training row needs 'question' and an answer, or 'prompt' and 'target'")
    key = next((k for k in GROUP_KEYS if row.get(k) is not None), None)
    group = "all" if key is None else row[key]
    if not isinstance(group, str):
        raise DataError(f"{where(path, record, key)}: expected a string, got {type(group).__name__}")
    row_id = row.get("id", record)
    if row_id is None:
        raise DataError(f"{where(path, record, 'id')}: missing")
    if not isinstance(row_id, (str, int)) or isinstance(row_id, bool):
        raise DataError(f"{where(path, record, 'id')}: expected a string")
    return SFTExample(str(row_id), prompt, target, group)


def read_examples(path: str | Path) -> list[SFTExample]:
    """Every row of a training JSONL file; an empty file or a repeated id is an error."""
    path = Path(path)
    examples = []
    for lineno, row in iter_jsonl(path):
        ex = example_from_row(row, path, f"on line {lineno}")
        examples.append(ex if "id" in row else SFTExample(f"{path.stem}/{lineno}", ex.prompt, ex.target, ex.group))
    if not examples:
        raise DataError(f"{path}: no training examples")
    check_unique_ids([e.id for e in examples], path)
    return examples
