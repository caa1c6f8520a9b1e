"""Generic QA in JSON lines: {question, answers, [id, relation, subject, popularity, split]}."""

from __future__ import annotations

from pathlib import Path

from knowtune.data.records import QADataset, QAExample
from knowtune.data.validate import (
    check_unique_ids,
    require_answers,
    require_number,
    require_str,
)
from knowtune.errors import DataError, where
from knowtune.files import iter_jsonl


def load_jsonl(path: str | Path) -> QADataset:
    """Load a JSONL QA file; records with split 'exemplar' form the few-shot pool."""
    path = Path(path)
    examples = []
    for lineno, obj in iter_jsonl(path):
        rec = obj.get("id", f"line {lineno}")
        question = require_str(obj, "question", path, rec)
        ex_id = obj.get("id", f"{path.stem}/{lineno}")
        if not isinstance(ex_id, (str, int)) or isinstance(ex_id, bool):
            raise DataError(f"{where(path, f'on line {lineno}', 'id')}: expected a string")
        examples.append(
            QAExample(
                id=str(ex_id),
                relation=require_str(obj, "relation", path, rec, optional=True) or "default",
                subject=require_str(obj, "subject", path, rec, optional=True) or question,
                question=question,
                answers=require_answers(obj, path, rec),
                popularity=require_number(obj, "popularity", path, rec),
                split=require_str(obj, "split", path, rec, optional=True) or "test",
            )
        )
    if not examples:
        raise DataError(f"{path}: no records")
    check_unique_ids([e.id for e in examples], path)
    has_pool = any(e.split == "exemplar" for e in examples)
    return QADataset(path.stem, examples, exemplar_split="exemplar" if has_pool else None, source=str(path))
