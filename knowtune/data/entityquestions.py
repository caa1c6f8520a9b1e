"""EntityQuestions (Sciavolino et al. 2021): per-relation JSON lists of {question, answers}."""

from __future__ import annotations

import os
import re
from pathlib import Path

from knowtune.data.records import QADataset, QAExample
from knowtune.data.validate import require_answers, require_str
from knowtune.errors import DataError, where
from knowtune.files import read_json

_FILE = re.compile(r"^(P\d+)\.(train|dev|test)\.json$")


def _subject_pattern(template: str) -> re.Pattern:
    """A regex that captures the [X] slot of a template such as 'Which country is [X] located in?'."""
    head, _, tail = template.partition("[X]")
    return re.compile("^" + re.escape(head) + "(.+)" + re.escape(tail) + "$")


def _infer_template(questions: list[str]) -> str:
    """The shared prefix + [X] + shared suffix of a relation's questions (used when no template file)."""
    pre = os.path.commonprefix(questions)
    suf = os.path.commonprefix([q[::-1] for q in questions])[::-1]
    # Keep the slot non-empty for the shortest question.
    shortest = min(len(q) for q in questions)
    while len(pre) + len(suf) >= shortest and suf:
        suf = suf[1:]
    return pre + "[X]" + suf


def load_entityquestions(root: str | Path) -> QADataset:
    """Load every `P*.{train,dev,test}.json` under `root`; the dev split is the exemplar pool."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: no such directory")
    files = sorted(p for p in root.rglob("P*.json") if _FILE.match(p.name))
    if not files:
        raise DataError(f"{root}: no EntityQuestions files (expected P<id>.<train|dev|test>.json)")
    tfile = root / "relation_query_templates.json"
    given = read_json(tfile) if tfile.exists() else {}
    if not isinstance(given, dict):
        raise DataError(f"{tfile}: expected a JSON object of relation → template")
    examples: list[QAExample] = []
    templates: dict[str, list[str]] = {}
    for path in files:
        rel, split = _FILE.match(path.name).groups()
        data = read_json(path)
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a JSON list of {{question, answers}} records")
        if not data:
            raise DataError(f"{path}: no records")
        for i, obj in enumerate(data):
            if not isinstance(obj, dict):
                raise DataError(f"{where(path, i)}: expected an object, got {type(obj).__name__}")
            require_str(obj, "question", path, i)
            require_answers(obj, path, i)
        if rel not in templates:
            t = given.get(rel)
            if t is not None and not (isinstance(t, str) and "[X]" in t):  # refused, not silently replaced by an inferred one
                raise DataError(f"{where(tfile, field=rel)}: a template must be a string with an [X] slot for the subject, "
                                f"got {t!r}")
            templates[rel] = [t if t is not None else _infer_template([o["question"] for o in data])]
        pattern = _subject_pattern(templates[rel][0])
        for i, obj in enumerate(data):
            m = pattern.match(obj["question"])
            examples.append(
                QAExample(
                    id=f"{rel}/{split}/{i}",
                    relation=rel,
                    subject=m.group(1) if m else obj["question"],
                    question=obj["question"],
                    answers=tuple(obj["answers"]),
                    split=split,
                )
            )
    # Templates are stored with knowtune's {subject} placeholder.
    templates = {r: [t.replace("[X]", "{subject}") for t in ts] for r, ts in templates.items()}
    return QADataset("entityquestions", examples, exemplar_split="dev", templates=templates, source=str(root))
