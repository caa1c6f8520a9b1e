"""Four-option multiple-choice data: typed records, MMLU loaders and a builtin set made from the facts.

MMLU comes in three layouts, all read into the same `MCQuestion`s (id `mmlu/<subject>/<split>/<row>`,
so a question has the same id whatever layout it came from):
* the original headerless CSVs `question,A,B,C,D,answer` (answer a letter), one `<subject>_<split>.csv`
  per subject and split (dev / val / test);
* the converted layout with a header `question,choice0,choice1,choice2,choice3,answer` (answer 0-3);
* the Hugging Face `cais/mmlu` dataset through `datasets` (needs the hub, or its local cache).
The domain of an MMLU question is its subject's category (STEM, humanities, social sciences, other)
from MMLU's own map (`mmlu_subjects.json`); the dev split is the few-shot exemplar pool.

The builtin set turns each builtin fact into a question with three distractors drawn from the same
relation, so the consistency study runs with no download at all (see `builtin_mc`).
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from knowtune.data.builtin import builtin_relations, load_builtin
from knowtune.errors import DataError, where
from knowtune.files import fingerprint, read_text, stable_int, why_missing
from knowtune.matching import normalize_answer

LETTERS = ("A", "B", "C", "D")
MMLU_SPLITS = ("dev", "val", "test")
_SPLIT_ORDER = ("exemplar", "train", "dev", "val", "test")
CONVERTED_HEADER = ["question", "choice0", "choice1", "choice2", "choice3", "answer"]
_MMLU_FILE = re.compile(r"^(?P<subject>.+)_(?P<split>dev|val|test)\.csv$")
# cais/mmlu split names -> the CSV release's names; auxiliary_train (99k non-MMLU questions) is left out.
_HF_SPLITS = {"dev": "dev", "validation": "val", "test": "test"}

# Builtin relations grouped by the kind of answer, so that every domain has at least two subjects and
# "in-domain" transfer means a relation whose answers are of the same kind.
BUILTIN_DOMAINS = {
    "capital-cities": ("P36", "P36-US"),  # the answer is a city
    "located-in": ("P17", "P30"),  # the answer is the country / continent that contains the subject
    "names-and-symbols": ("P37", "P38", "P246"),  # the answer is a language, currency or element symbol
}


@dataclass(frozen=True)
class MCQuestion:
    """One four-option question; `answer` is the index (0-3) of the correct option."""

    id: str
    subject: str
    domain: str
    question: str
    options: tuple[str, str, str, str]
    answer: int
    split: str = "test"

    @property
    def answer_letter(self) -> str:
        """The correct option's letter, A-D."""
        return LETTERS[self.answer]

    def to_dict(self) -> dict:
        """A JSON-ready dict (options as a list)."""
        d = asdict(self)
        d["options"] = list(self.options)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "MCQuestion":
        """The inverse of `to_dict`."""
        return cls(d["id"], d["subject"], d["domain"], d["question"], tuple(d["options"]), int(d["answer"]), d["split"])


@dataclass
class MCDataset:
    """Multiple-choice questions with splits, the split that serves as the few-shot exemplar pool,
    and a readable topic per subject for the prompt header ("... questions (with answers) about {topic}.")."""

    name: str
    questions: list[MCQuestion]
    exemplar_split: str | None
    topics: dict[str, str] = field(default_factory=dict)
    source: str = ""

    def split(self, name: str) -> list[MCQuestion]:
        """The questions of one split, in dataset order."""
        return [q for q in self.questions if q.split == name]

    def splits(self) -> list[str]:
        """The split names present, in canonical order first."""
        present = {q.split for q in self.questions}
        return sorted(present, key=lambda s: (_SPLIT_ORDER.index(s) if s in _SPLIT_ORDER else len(_SPLIT_ORDER), s))

    def subjects(self) -> list[str]:
        """The subjects present, sorted."""
        return sorted({q.subject for q in self.questions})

    def domains(self) -> dict[str, list[str]]:
        """Each domain with its subjects, sorted."""
        out: dict[str, set[str]] = {}
        for q in self.questions:
            out.setdefault(q.domain, set()).add(q.subject)
        return {d: sorted(s) for d, s in sorted(out.items())}

    def topic(self, subject: str) -> str:
        """The subject as the prompt header names it (MMLU: underscores become spaces)."""
        return self.topics.get(subject, subject.replace("_", " "))

    def fingerprint(self) -> str:
        """A short hash of every question: equal data gives equal fingerprints."""
        return fingerprint([q.to_dict() for q in self.questions])


def mmlu_subjects() -> dict[str, tuple[str, str]]:
    """MMLU's 57 subjects, each with its (subcategory, category), from hendrycks/test categories.py."""
    data = json.loads(resources.files("knowtune.data").joinpath("mmlu_subjects.json").read_text(encoding="utf-8"))
    category_of = {sub: cat for cat, subs in data["categories"].items() for sub in subs}
    return {subject: (sub, category_of[sub]) for subject, sub in data["subcategories"].items()}


def mmlu_domain(subject: str, subjects: dict[str, tuple[str, str]] | None = None) -> str:
    """The MMLU category of a subject; a subject outside MMLU's map forms a domain of its own."""
    subjects = mmlu_subjects() if subjects is None else subjects
    return subjects[subject][1] if subject in subjects else subject


def _parse_row(row: list[str], converted: bool, path: Path, line: int) -> tuple[str, tuple[str, str, str, str], int]:
    """Validate one CSV row; every error names the file and the line the row starts on."""
    if len(row) != 6:
        names = ",".join(CONVERTED_HEADER) if converted else "question,A,B,C,D,answer"
        raise DataError(f"{where(path, f'on line {line}')}: expected 6 columns ({names}), got {len(row)}")
    question, *options, raw = row
    if not question.strip():
        raise DataError(f"{where(path, f'on line {line}', 'question')}: empty")
    for letter, option in zip(LETTERS, options):
        if not option.strip():
            raise DataError(f"{where(path, f'on line {line}', letter)}: empty option")
    value = raw.strip()
    if converted:
        if value not in {"0", "1", "2", "3"}:
            raise DataError(f"{where(path, f'on line {line}', 'answer')}: {raw!r} is not one of 0, 1, 2, 3")
        answer = int(value)
    else:
        if value not in LETTERS:
            raise DataError(f"{where(path, f'on line {line}', 'answer')}: {raw!r} is not one of A, B, C, D")
        answer = LETTERS.index(value)
    return question, tuple(options), answer  # type: ignore[return-value]


def read_mmlu_csv(path: str | Path, layout: str = "auto", domain: str | None = None) -> list[MCQuestion]:
    """Read one `<subject>_<split>.csv` in the original (headerless, letter answers) or converted
    (header, 0-3 answers) layout; 'auto' tells them apart by the header row."""
    path = Path(path)
    m = _MMLU_FILE.match(path.name)
    if not m:
        raise DataError(f"{path}: not an MMLU file name (expected <subject>_<dev|val|test>.csv)")
    if layout not in {"auto", "original", "converted"}:
        raise DataError(f"{path}: unknown MMLU layout {layout!r} (auto, original or converted)")
    subject, split = m.group("subject"), m.group("split")
    text = read_text(path).removeprefix("\ufeff")  # a BOM from spreadsheet exports would glue onto the question
    if not text.strip():
        raise DataError(f"{path}: empty file")
    reader = csv.reader(io.StringIO(text, newline=""))  # quoted fields may hold newlines and commas
    rows: list[tuple[int, list[str]]] = []
    try:
        line = 1
        for row in reader:
            rows.append((line, row))
            line = reader.line_num + 1
    except csv.Error as e:
        raise DataError(f"{where(path, f'on line {line}')}: malformed CSV ({e})") from None
    rows = [(n, r) for n, r in rows if r]  # csv yields [] for blank lines
    converted = layout == "converted" or (layout == "auto" and [c.strip() for c in rows[0][1]] == CONVERTED_HEADER)
    if converted:
        if [c.strip() for c in rows[0][1]] != CONVERTED_HEADER:
            raise DataError(f"{where(path, f'on line {rows[0][0]}')}: expected the header {','.join(CONVERTED_HEADER)}")
        rows = rows[1:]
    if not rows:
        raise DataError(f"{path}: no questions")
    domain = domain if domain is not None else mmlu_domain(subject)
    out = []
    for i, (line, row) in enumerate(rows):
        question, options, answer = _parse_row(row, converted, path, line)
        out.append(MCQuestion(f"mmlu/{subject}/{split}/{i}", subject, domain, question, options, answer, split))
    return out


def load_mmlu(path: str | Path, layout: str = "auto") -> MCDataset:
    """Load MMLU CSVs from one file or every `<subject>_<split>.csv` below a directory."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: {why_missing(path, 'file or directory')}")
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*.csv") if _MMLU_FILE.match(p.name))
    if not files:
        raise DataError(f"{path}: no MMLU files (expected <subject>_<dev|val|test>.csv)")
    subjects = mmlu_subjects()
    seen: dict[tuple[str, str], Path] = {}
    questions: list[MCQuestion] = []
    for f in files:
        m = _MMLU_FILE.match(f.name)
        key = (m.group("subject"), m.group("split")) if m else (f.name, "")
        if key in seen:
            # e.g. a directory holding both the original and the converted release
            raise DataError(f"{path}: subject {key[0]!r}, split {key[1]!r} comes from two files, {seen[key]} and {f}; "
                            "point at one copy")
        seen[key] = f
        questions.extend(read_mmlu_csv(f, layout, mmlu_domain(key[0], subjects)))
    order = {s: i for i, s in enumerate(MMLU_SPLITS)}
    questions.sort(key=lambda q: (order[q.split], q.subject))  # stable: file order within a subject
    return MCDataset("mmlu", questions, exemplar_split="dev", source=str(path))


def load_mmlu_hf(name: str = "cais/mmlu", config: str = "all") -> MCDataset:
    """Load MMLU's dev / validation / test splits from the Hugging Face hub (or the local `datasets` cache)."""
    try:
        from datasets import load_dataset
    except ImportError:  # pragma: no cover - datasets is a declared dependency
        raise DataError(f"hf:{name}: loading from the hub needs the `datasets` package") from None
    subjects = mmlu_subjects()
    questions: list[MCQuestion] = []
    for hf_split, split in _HF_SPLITS.items():
        try:
            rows = load_dataset(name, config, split=hf_split)
        except (OSError, ValueError) as e:  # ConnectionError, offline mode, unknown dataset / config / split
            raise DataError(
                f"hf:{name} ({config}, {hf_split}): cannot load from the Hugging Face hub "
                f"({str(e).splitlines()[0] if str(e) else type(e).__name__}); offline, use a local copy of the "
                "MMLU CSVs instead (a directory of <subject>_<dev|val|test>.csv files)"
            ) from None
        counters: dict[str, int] = {}
        for i, row in enumerate(rows):
            at = f"hf:{name} {hf_split}"
            subject = row.get("subject") or config
            choices, answer = row.get("choices"), row.get("answer")
            if not isinstance(row.get("question"), str) or not row["question"].strip():
                raise DataError(f"{where(at, i, 'question')}: missing or empty")
            if not isinstance(choices, list) or len(choices) != 4 or not all(isinstance(c, str) for c in choices):
                raise DataError(f"{where(at, i, 'choices')}: expected 4 strings")
            if isinstance(answer, bool) or answer not in (0, 1, 2, 3):
                raise DataError(f"{where(at, i, 'answer')}: {answer!r} is not one of 0, 1, 2, 3")
            n = counters[subject] = counters.get(subject, -1) + 1
            questions.append(MCQuestion(f"mmlu/{subject}/{split}/{n}", subject, mmlu_domain(subject, subjects),
                                        row["question"], tuple(choices), int(answer), split))
    return MCDataset("mmlu", questions, exemplar_split="dev", source=f"hf:{name}/{config}")


def builtin_domain(relation: str) -> str:
    """The builtin MC domain of a relation (see BUILTIN_DOMAINS)."""
    for domain, relations in BUILTIN_DOMAINS.items():
        if relation in relations:
            return domain
    raise DataError(f"builtin relation {relation!r} has no multiple-choice domain")


def builtin_mc(seed: int = 0) -> MCDataset:
    """Multiple-choice questions from the builtin facts: the gold object and three distractors from
    the same relation, placed and drawn from `seed` and the fact id alone; the fact's split is kept."""
    qa = load_builtin()
    relations = builtin_relations()
    # Each relation's distinct objects by normalised form; the first spelling in dataset order stands for it.
    objects: dict[str, dict[str, str]] = {}
    for ex in qa.examples:
        objects.setdefault(ex.relation, {}).setdefault(normalize_answer(ex.answers[0]), ex.answers[0])
    pools = {r: sorted(objs.items()) for r, objs in objects.items()}
    questions = []
    for ex in qa.examples:
        gold = {normalize_answer(a) for a in ex.answers}
        # A distractor may match no gold alias: "Farsi" must not be a wrong option for "Persian".
        candidates = [text for key, text in pools[ex.relation] if key not in gold]
        if len(candidates) < 3:
            raise DataError(f"builtin fact {ex.id}: relation {ex.relation} has {len(candidates)} possible "
                            "distractors, needs 3")
        rng = np.random.default_rng(stable_int("mc-builtin", seed, ex.id))
        options = [candidates[i] for i in rng.choice(len(candidates), size=3, replace=False)]
        answer = int(rng.integers(4))
        options.insert(answer, ex.answers[0])
        questions.append(MCQuestion(ex.id, ex.relation, builtin_domain(ex.relation), ex.question, tuple(options),
                                    answer, ex.split))
    topics = {r: "the " + meta["description"] for r, meta in relations.items()}
    return MCDataset("builtin-mc", questions, exemplar_split="exemplar", topics=topics,
                     source=f"knowtune builtin facts, distractor seed {seed}")


def detect_mc(spec: str) -> str:
    """The loader for a multiple-choice spec: 'builtin', 'mmlu-csv' (a file or directory, or
    'mmlu:PATH') or 'mmlu-hf' ('hf:NAME[:CONFIG]', or a bare hub id such as 'cais/mmlu')."""
    if spec == "builtin":
        return "builtin"
    if spec.startswith("hf:"):
        return "mmlu-hf"
    if spec.startswith("mmlu:") or Path(spec).exists():
        return "mmlu-csv"
    if re.fullmatch(r"[\w.-]+/[\w.-]+", spec) and not spec.endswith(".csv"):
        return "mmlu-hf"
    raise DataError(f"{spec}: no such file or directory (and not 'builtin', 'hf:NAME' or 'mmlu:PATH')")


def load_mc(spec: str) -> MCDataset:
    """Load a multiple-choice dataset: 'builtin', an MMLU CSV file or directory, or 'hf:cais/mmlu'."""
    kind = detect_mc(spec)
    if kind == "builtin":
        return builtin_mc()
    if kind == "mmlu-csv":
        return load_mmlu(spec.removeprefix("mmlu:"))
    name, _, config = spec.removeprefix("hf:").partition(":")
    return load_mmlu_hf(name, config or "all")


__all__ = [
    "BUILTIN_DOMAINS", "LETTERS", "MCDataset", "MCQuestion", "builtin_domain", "builtin_mc", "detect_mc",
    "load_mc", "load_mmlu", "load_mmlu_hf", "mmlu_domain", "mmlu_subjects", "read_mmlu_csv",
]
