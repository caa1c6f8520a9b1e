"""QA data: typed records and a registry of loaders, chosen by a dataset spec."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from knowtune.data.builtin import load_builtin
from knowtune.data.entityquestions import load_entityquestions
from knowtune.data.jsonl import load_jsonl
from knowtune.data.records import QADataset, QAExample, chance_rate
from knowtune.data.select import select_examples
from knowtune.errors import DataError
from knowtune.files import why_missing

# name → (loader, what the spec looks like); `knowtune data list` prints this table.
LOADERS: dict[str, tuple[Callable[..., QADataset], str]] = {
    "builtin": (lambda _spec: load_builtin(), "builtin — world facts shipped with knowtune"),
    "entityquestions": (load_entityquestions, "a directory of P<id>.<train|dev|test>.json files"),
    "jsonl": (load_jsonl, "a .jsonl file of {question, answers, [id, relation, subject, popularity, split]}"),
}


def detect(spec: str) -> str:
    """The loader name for a dataset spec: 'builtin', a `name:path`, or a path by its shape."""
    name, sep, _ = spec.partition(":")
    if sep and name in LOADERS:
        return name
    if spec == "builtin":
        return "builtin"
    path = Path(spec)
    if path.suffix == ".jsonl":
        return "jsonl"
    if path.is_dir():
        return "entityquestions"
    if not path.exists():
        raise DataError(f"{spec}: {why_missing(path, 'file or directory')} (and not a known dataset: {', '.join(LOADERS)})")
    raise DataError(f"{spec}: cannot tell the format; use a prefix such as jsonl:{spec}")


def load_qa(spec: str) -> QADataset:
    """Load a QA dataset from a spec such as 'builtin', 'path/to/entityquestions' or 'data.jsonl'."""
    name = detect(spec)
    _, sep, rest = spec.partition(":")
    return LOADERS[name][0](rest if sep and spec.split(":")[0] == name else spec)


__all__ = ["LOADERS", "QADataset", "QAExample", "chance_rate", "detect", "load_qa", "select_examples"]
