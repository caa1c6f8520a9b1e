"""Knowledge-edit data: CounterFact (EasyEdit split and ROME schema), zsRE (MEND format) and a
builtin counterfactual set made from the facts a base model knows.

**Text the model sees.** Every prompt is stored without trailing whitespace and every target without
leading or trailing whitespace; the text a model is scored or trained on is always
`prompt + " " + target` (`join_target`), as in EasyEdit's `prompt + ' ' + target`. So the leading
space belongs to the target: in SFT terms the completion is `" " + target` (`knowledge_pairs`).
* CounterFact (both schemas) is completion style: "BBC One, by" → "BBC One, by Sega".
* zsRE keeps its questions as published: "What university did Watts Humphrey attend?" →
  "... attend? University of Michigan" (EasyEdit's usage, so numbers stay comparable). Its `loc`
  field starts with "nq question: "; we keep only the question after it (EasyEdit keeps the prefix).
* Builtin edits use knowtune's closed-book QA format `Q: {question}\\nA:`, so `Q: ...\\nA: Paris`
  is exactly the answer line of a few-shot prompt.
`prompt_style` says how a greedy answer ends in the exact-match protocol: "qa" answers end at the
first newline; "completion" answers are cut at the target's own token count (a completion prompt
has no natural stop).

Records that cannot be used raise `DataError` naming file, record and field. The one exception is
zsRE's `alt` when it is empty (2 of the 1,000 records of the published 1k subset): such a record
has no edit to make, so it is left out and listed in `EditDataset.skipped`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from knowtune.data.builtin import load_builtin, question_for
from knowtune.data.formats import question_block
from knowtune.data.records import QADataset
from knowtune.data.validate import (
    check_unique_ids,
    require_answers,
    require_str,
    require_str_list,
)
from knowtune.errors import DataError, shown, where
from knowtune.files import fingerprint, read_json, stable_int
from knowtune.matching import normalize_answer

PROMPT_STYLES = ("completion", "qa")
NQ_PREFIX = "nq question: "


@dataclass(frozen=True)
class EditExample:
    """One edit: `prompt` → `target_new` replaces the true `ground_truth` (canonical answer first);
    rephrase prompts test generality, locality prompts (with their true answers) test locality."""

    id: str
    subject: str
    prompt: str
    target_new: str
    ground_truth: tuple[str, ...]
    rephrase_prompts: tuple[str, ...]
    locality_prompts: tuple[str, ...]
    locality_answers: tuple[str, ...]
    relation: str | None = None
    split: str = "test"
    prompt_style: str = "completion"

    def __post_init__(self) -> None:
        if len(self.locality_prompts) != len(self.locality_answers):
            raise DataError(
                f"edit {shown(self.id)}: {len(self.locality_prompts)} locality prompts but {len(self.locality_answers)} answers"
            )
        if self.prompt_style not in PROMPT_STYLES:
            raise DataError(f"edit {shown(self.id)}: prompt_style {self.prompt_style!r} is not one of {PROMPT_STYLES}")

    def to_dict(self) -> dict:
        """A JSON-ready dict (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass
class EditDataset:
    """Edits from one source, and the records left out with the reason (see the module docstring)."""

    name: str
    examples: list[EditExample]
    source: str = ""
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.examples)

    def split(self, name: str) -> list[EditExample]:
        """The edits of one split, in dataset order."""
        return [e for e in self.examples if e.split == name]

    def fingerprint(self) -> str:
        """A short hash of every edit: equal data gives equal fingerprints."""
        return fingerprint([e.to_dict() for e in self.examples])


def join_target(prompt: str, target: str) -> str:
    """The text a model is scored or trained on: prompt, one space, target."""
    return f"{prompt} {target}"


def knowledge_pairs(examples: Iterable[EditExample], which: Literal["old", "new"]) -> list[tuple[str, str]]:
    """(prompt, completion) pairs for fine-tuning: 'old' = the true facts (K_old, canonical answer),
    'new' = the edits (K_new); the completion carries the leading space."""
    if which not in ("old", "new"):
        raise ValueError(f"which must be 'old' or 'new', not {which!r}")
    return [(e.prompt, " " + (e.ground_truth[0] if which == "old" else e.target_new)) for e in examples]


# ---------------------------------------------------------------- field checks


def _record(obj: Any, path: Path, index: int) -> dict:
    if not isinstance(obj, dict):
        raise DataError(f"{where(path, index)}: expected a JSON object, got {type(obj).__name__}")
    return obj


def _text(obj: dict, key: str, path: Path, rec: object) -> str:
    return str(require_str(obj, key, path, rec))


def _prompt(obj: dict, key: str, path: Path, rec: object) -> str:
    return _text(obj, key, path, rec).rstrip()


def _target(obj: dict, key: str, path: Path, rec: object) -> str:
    return _text(obj, key, path, rec).strip()


def _prompt_list(obj: dict, key: str, path: Path, rec: object) -> tuple[str, ...]:
    return tuple(p.rstrip() for p in require_str_list(obj, key, path, rec))


def _text_at(obj: dict, dotted: str, path: Path, rec: object) -> str:
    """A non-empty string at a dotted path such as 'requested_rewrite.target_new.str'."""
    *parents, last = dotted.split(".")
    node: Any = obj
    for depth, key in enumerate(parents):
        node = node.get(key)
        if not isinstance(node, dict):
            what = "missing" if node is None else f"expected an object, got {type(node).__name__}"
            raise DataError(f"{where(path, rec, '.'.join(parents[: depth + 1]))}: {what}")
    return _text({dotted: node.get(last)}, dotted, path, rec)


def _case_id(obj: dict, path: Path, index: int) -> str:
    cid = obj.get("case_id")
    if cid is None:
        raise DataError(f"{where(path, index, 'case_id')}: missing")
    if isinstance(cid, bool) or not isinstance(cid, (int, str)) or (isinstance(cid, str) and not cid.strip()):
        raise DataError(f"{where(path, index, 'case_id')}: expected an integer or a non-empty string, got {cid!r}")
    return str(cid)


def _split_of(path: Path) -> str:
    """The split a file name implies by its words: train → train, val/dev → dev, anything else
    (edit, eval, test) → test; `zsre_mend_eval` is a test set although it contains 'val'."""
    words = set(re.split(r"[^a-z0-9]+", path.stem.lower()))
    if "train" in words:
        return "train"
    if words & {"val", "valid", "validation", "dev"}:
        return "dev"
    return "test"


def _records(path: Path, data: Any) -> list:
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    if not data:
        raise DataError(f"{path}: no records")
    return data


# ---------------------------------------------------------------- loaders


def _counterfact(path: Path, data: Any) -> EditDataset:
    split, examples = _split_of(path), []
    for i, obj in enumerate(_records(path, data)):
        obj = _record(obj, path, i)
        cid = _case_id(obj, path, i)
        rec = f"case_id {cid}"
        examples.append(EditExample(
            id=f"cf/{cid}", subject=_text(obj, "subject", path, rec), prompt=_prompt(obj, "prompt", path, rec),
            target_new=_target(obj, "target_new", path, rec), ground_truth=(_target(obj, "ground_truth", path, rec),),
            rephrase_prompts=(_prompt(obj, "rephrase_prompt", path, rec),),
            locality_prompts=(_prompt(obj, "locality_prompt", path, rec),),
            locality_answers=(_target(obj, "locality_ground_truth", path, rec),), split=split,
        ))
    check_unique_ids([e.id for e in examples], path)
    return EditDataset(path.stem, examples, source=str(path))


def _counterfact_rome(path: Path, data: Any) -> EditDataset:
    examples = []
    for i, obj in enumerate(_records(path, data)):
        obj = _record(obj, path, i)
        cid = _case_id(obj, path, i)
        rec = f"case_id {cid}"
        template = _text_at(obj, "requested_rewrite.prompt", path, rec)
        if "{}" not in template:
            raise DataError(f"{where(path, rec, 'requested_rewrite.prompt')}: no '{{}}' placeholder for the subject")
        subject = _text_at(obj, "requested_rewrite.subject", path, rec)
        new = _text_at(obj, "requested_rewrite.target_new.str", path, rec).strip()
        true = _text_at(obj, "requested_rewrite.target_true.str", path, rec).strip()
        relation = obj["requested_rewrite"].get("relation_id")
        if relation is not None and (not isinstance(relation, str) or not relation.strip()):
            raise DataError(f"{where(path, rec, 'requested_rewrite.relation_id')}: expected a non-empty string")
        neighbours = _prompt_list(obj, "neighborhood_prompts", path, rec)
        examples.append(EditExample(
            id=f"cf/{cid}", subject=subject, prompt=template.replace("{}", subject).rstrip(),
            target_new=new, ground_truth=(true,), rephrase_prompts=_prompt_list(obj, "paraphrase_prompts", path, rec),
            # ROME scores neighbourhood prompts against the edited fact's true object: they share it by construction.
            locality_prompts=neighbours, locality_answers=(true,) * len(neighbours),
            relation=relation, split="test",
        ))
    check_unique_ids([e.id for e in examples], path)
    return EditDataset(path.stem, examples, source=str(path))


def _zsre(path: Path, data: Any) -> EditDataset:
    split, examples, skipped = _split_of(path), [], []
    for i, obj in enumerate(_records(path, data)):
        obj = _record(obj, path, i)
        alt = obj.get("alt")
        if isinstance(alt, str) and not alt.strip():
            skipped.append(f"{where(path, i, 'alt')}: empty edit target, record left out")
            continue
        loc = _prompt(obj, "loc", path, i)
        loc = loc[len(NQ_PREFIX):] if loc.startswith(NQ_PREFIX) else loc
        if not loc.strip():
            raise DataError(f"{where(path, i, 'loc')}: empty question after {NQ_PREFIX!r}")
        examples.append(EditExample(
            id=f"{path.stem}/{i}", subject=_text(obj, "subject", path, i), prompt=_prompt(obj, "src", path, i),
            target_new=_target(obj, "alt", path, i),
            ground_truth=tuple(a.strip() for a in require_answers(obj, path, i, "answers")),
            rephrase_prompts=(_prompt(obj, "rephrase", path, i),), locality_prompts=(loc,),
            locality_answers=(_target(obj, "loc_ans", path, i),), split=split,
        ))
    if not examples:
        raise DataError(f"{path}: no usable records ({len(skipped)} left out)")
    return EditDataset(path.stem, examples, source=str(path), skipped=skipped)


EDIT_LOADERS = {
    "counterfact": (_counterfact, "CounterFact, EasyEdit split: a JSON list of {case_id, prompt, subject, "
                    "ground_truth, target_new, rephrase_prompt, locality_prompt, locality_ground_truth}"),
    "counterfact-rome": (_counterfact_rome, "CounterFact, ROME schema: a JSON list of {case_id, requested_rewrite, "
                         "paraphrase_prompts, neighborhood_prompts, ...}"),
    "zsre": (_zsre, "zsRE, MEND format: a JSON list of {subject, src, answers, alt, rephrase, loc, loc_ans}"),
}


def _split_spec(spec: str) -> tuple[str | None, Path]:
    name, sep, rest = spec.partition(":")
    if sep and name in EDIT_LOADERS:
        if not rest:
            raise DataError(f"{spec!r}: no path after the {name}: prefix; give {name}:PATH")
        return name, Path(rest)
    return None, Path(spec)


def edit_format(spec: str) -> str | None:
    """The loader a spec names with its prefix (`zsre:PATH` → 'zsre'), or None for a bare path."""
    return _split_spec(spec)[0]


def _detect(path: Path, data: Any) -> str:
    first = _record(_records(path, data)[0], path, 0)
    if "requested_rewrite" in first:
        return "counterfact-rome"
    if {"src", "alt"} <= first.keys():
        return "zsre"
    if {"case_id", "prompt", "target_new"} <= first.keys():
        return "counterfact"
    keys = ", ".join(shown(k) for k in sorted(first)) or "none"
    raise DataError(f"{where(path, 0)}: cannot tell the edit format from its keys ({keys}); "
                    f"use a prefix: {', '.join(n + ':PATH' for n in EDIT_LOADERS)}")


def detect_edits(spec: str) -> str:
    """The loader name for an edit-data spec: `name:path`, or a JSON file recognised by its first record."""
    name, path = _split_spec(spec)
    return name or _detect(path, read_json(path))


def load_edits(spec: str) -> EditDataset:
    """Load edit data from `counterfact:PATH`, `counterfact-rome:PATH`, `zsre:PATH` or a bare PATH."""
    name, path = _split_spec(spec)
    data = read_json(path)
    return EDIT_LOADERS[name or _detect(path, data)][0](path, data)


# ---------------------------------------------------------------- builtin counterfactuals


def builtin_counterfacts(
    known_ids: Iterable[str], seed: int = 0, n_locality: int = 1, data: QADataset | None = None
) -> EditDataset:
    """Counterfactual edits of the facts a base model knows (e.g. its HighlyKnown ids), fixed by `seed`.

    Per fact: the prompt asks templates[0] in QA format; `target_new` is another object of the same
    relation sharing no alias with the gold answers, drawn from a stream seeded by (seed, fact id)
    alone; the rephrase asks templates[1]; the locality prompts are `n_locality` facts about other
    subjects (of other relations where any exist) that are not edited, with their true answers.
    Edits come in dataset order whatever the order of `known_ids`."""
    data = data or load_builtin()
    wanted = set(known_ids)
    by_id = {e.id: e for e in data.examples}
    missing = sorted(wanted - by_id.keys())
    if missing:
        raise DataError(f"{data.name} facts: no fact with id {missing[0]!r} ({len(missing)} unknown ids)")
    facts = [e for e in data.examples if e.id in wanted]
    edited_subjects = {normalize_answer(e.subject) for e in facts}
    # A locality prompt must not be touched by any edit, since F-Learning learns all edits at once.
    free = [e for e in data.examples if e.id not in wanted and normalize_answer(e.subject) not in edited_subjects]
    objects: dict[str, dict[str, set[str]]] = {}
    for e in data.examples:
        aliases = objects.setdefault(e.relation, {}).setdefault(e.answers[0], set())
        aliases.update(normalize_answer(a) for a in e.answers)
    examples = []
    for fact in facts:
        templates = data.templates.get(fact.relation, [])
        if len(templates) < 2:
            raise DataError(f"{data.name} facts, relation {fact.relation!r}: needs 2 question templates "
                            f"for a rephrase, has {len(templates)}")
        rng = np.random.default_rng(stable_int("counterfact", seed, fact.id))
        gold = {normalize_answer(a) for a in fact.answers}
        candidates = sorted(o for o, al in objects[fact.relation].items() if not al & gold)
        if not candidates:
            raise DataError(f"{data.name} facts, record {fact.id}: relation {fact.relation!r} has no other object "
                            "to edit to")
        target = candidates[int(rng.integers(len(candidates)))]
        pool = [e for e in free if e.relation != fact.relation] or [e for e in free if e.relation == fact.relation]
        if not pool:
            raise DataError(f"{data.name} facts: no unedited fact left for the locality prompts of {fact.id}")
        local = [pool[j] for j in sorted(rng.choice(len(pool), size=min(n_locality, len(pool)), replace=False))]
        examples.append(EditExample(
            id=fact.id, subject=fact.subject, prompt=question_block(fact), target_new=target,
            ground_truth=fact.answers,
            rephrase_prompts=(question_block(dataclasses.replace(fact, question=question_for(templates[1], fact.subject))),),
            locality_prompts=tuple(question_block(e) for e in local), locality_answers=tuple(e.answers[0] for e in local),
            relation=fact.relation, split=fact.split, prompt_style="qa",
        ))
    return EditDataset(f"{data.name}-counterfacts", examples, source=f"{data.source} (seed {seed})")
