"""knowtune's own edit file: one `EditExample.to_dict()` per JSON line (what the F-Learning study
writes as `edits.jsonl`), so a set of edits, builtin counterfactuals included, can be updated and
evaluated again by `knowtune update` / `knowtune evaluate --edits`. Bad records name file, record
and field."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from knowtune.data.edits import EditDataset, EditExample, edit_format, load_edits
from knowtune.data.validate import (
    check_unique_ids,
    require_answers,
    require_str,
    require_str_list,
)
from knowtune.errors import DataError, where
from knowtune.files import atomic_write_jsonl, iter_jsonl


def write_edit_records(path: str | Path, examples: Iterable[EditExample]) -> None:
    """Write edits as JSON lines, atomically."""
    atomic_write_jsonl(path, [e.to_dict() for e in examples])


def read_edit_records(path: str | Path) -> EditDataset:
    """Read edits written by `write_edit_records`, checking every field."""
    path = Path(path)
    examples = []
    for lineno, obj in iter_jsonl(path):
        rec = obj.get("id") if isinstance(obj.get("id"), str) else f"on line {lineno}"
        fields = dict(
            id=str(require_str(obj, "id", path, rec)), subject=str(require_str(obj, "subject", path, rec)),
            prompt=str(require_str(obj, "prompt", path, rec)), target_new=str(require_str(obj, "target_new", path, rec)),
            ground_truth=require_answers(obj, path, rec, "ground_truth"),
            rephrase_prompts=require_str_list(obj, "rephrase_prompts", path, rec),
            locality_prompts=require_str_list(obj, "locality_prompts", path, rec),
            locality_answers=require_str_list(obj, "locality_answers", path, rec),
            relation=require_str(obj, "relation", path, rec, optional=True),
            split=require_str(obj, "split", path, rec, optional=True) or "test",
            prompt_style=require_str(obj, "prompt_style", path, rec, optional=True) or "completion",
        )
        try:
            examples.append(EditExample(**fields))
        except DataError as e:  # the record's own consistency checks (locality lengths, prompt style)
            raise DataError(f"{where(path, rec)}: {e}") from None
    if not examples:
        raise DataError(f"{path}: no records")
    check_unique_ids([e.id for e in examples], path)
    return EditDataset(path.stem, examples, source=str(path))


def resolve_edits(spec: str) -> EditDataset:
    """Edits from a knowtune `.jsonl` edit file or any spec `load_edits` reads (CounterFact, zsRE)."""
    # A prefix names the format whatever the file's suffix: zsre:FILE.jsonl is read as zsRE.
    return read_edit_records(spec) if spec.endswith(".jsonl") and edit_format(spec) is None else load_edits(spec)
