"""The builtin world-facts set: real facts extracted from PyPI data packages (GeoNames, CLDR,
mendeleev, us) by scripts/build_facts.py and shipped as package data; see builtin/ATTRIBUTION.md."""

from __future__ import annotations

import gzip
import json
from importlib import resources

from knowtune.data.records import QADataset, QAExample
from knowtune.data.validate import require_answers, require_number, require_str
from knowtune.errors import DataError

FACTS = "builtin/facts.jsonl.gz"
RELATIONS = "builtin/relations.json"


def builtin_relations() -> dict[str, dict]:
    """Relation metadata: label, description, templates, source and popularity proxy."""
    return json.loads(resources.files("knowtune.data").joinpath(RELATIONS).read_text(encoding="utf-8"))


def question_for(template: str, subject: str) -> str:
    """Fill a relation template with a subject."""
    return template.replace("{subject}", subject)


def load_builtin() -> QADataset:
    """Load the builtin facts with their fixed exemplar / train / dev / test split."""
    relations = builtin_relations()
    path = resources.files("knowtune.data").joinpath(FACTS)
    examples = []
    with gzip.open(str(path), "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            obj = json.loads(line)
            rel = require_str(obj, "relation", FACTS, lineno)
            if rel not in relations:
                raise DataError(f"{FACTS}, record {lineno}, field 'relation': unknown relation {rel!r}")
            subject = require_str(obj, "subject", FACTS, lineno)
            examples.append(
                QAExample(
                    id=require_str(obj, "id", FACTS, lineno),
                    relation=rel,
                    subject=subject,
                    question=question_for(relations[rel]["templates"][0], subject),
                    answers=require_answers(obj, FACTS, lineno),
                    popularity=require_number(obj, "popularity", FACTS, lineno),
                    split=require_str(obj, "split", FACTS, lineno),
                )
            )
    templates = {r: list(meta["templates"]) for r, meta in relations.items()}
    return QADataset("builtin", examples, exemplar_split="exemplar", templates=templates, source="knowtune builtin facts")
