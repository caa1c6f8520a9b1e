"""Choosing questions from a dataset: splits, relations and a relation-balanced limit."""

from __future__ import annotations

from typing import TypeVar

from knowtune.data.records import QADataset, QAExample
from knowtune.errors import ConfigError
from knowtune.files import stable_int

T = TypeVar("T")


def round_robin(queues: list[list[T]], n: int | None = None) -> list[T]:
    """Up to `n` items (None: all) taken from the queues in turn, each queue in its own order: a
    sample balanced across groups (relations, subjects) that a smaller `n` keeps a prefix of."""
    queues = [list(q) for q in queues]
    picked: list[T] = []
    while any(queues) and (n is None or len(picked) < n):
        for q in queues:
            if q and (n is None or len(picked) < n):
                picked.append(q.pop(0))
    return picked


def check_relations(data: QADataset, relations: list[str]) -> None:
    """Refuse a relation the dataset does not have, naming the ones it has."""
    for r in relations:
        if r not in data.relations():
            raise ConfigError(f"unknown relation {r!r} in {data.name!r} (has: {', '.join(data.relations())})")


def select_examples(data: QADataset, split: str, relations: str | None = None, limit: int | None = None) -> list[QAExample]:
    """The questions to probe: a split (or 'all' non-exemplar splits), optional relations and a
    limit that takes a relation-balanced, seed-independent subset (stable hash of each id)."""
    splits = [s for s in data.splits() if s != data.exemplar_split] if split == "all" else split.split(",")
    for s in splits:
        if s not in data.splits():
            raise ConfigError(f"dataset {data.name!r} has no split {s!r} (has: {', '.join(data.splits())})")
        if s == data.exemplar_split:
            raise ConfigError(f"split {s!r} is the exemplar pool; probing it would show questions their own answers")
    chosen = [e for e in data.examples if e.split in splits]
    if relations:
        wanted = [r.strip() for r in relations.split(",")]
        check_relations(data, wanted)
        chosen = [e for e in chosen if e.relation in wanted]
    if limit is not None:
        by_rel: dict[str, list] = {}
        for e in sorted(chosen, key=lambda e: stable_int("limit", e.id)):
            by_rel.setdefault(e.relation, []).append(e)
        keep = {e.id for e in round_robin([by_rel[r] for r in sorted(by_rel)], limit)}
        chosen = [e for e in chosen if e.id in keep]
    return chosen
