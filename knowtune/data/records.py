"""Typed records for closed-book QA and the dataset container every loader returns."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

from knowtune.files import fingerprint
from knowtune.matching import is_correct, normalize_answer

SPLITS = ("exemplar", "train", "dev", "test")


@dataclass(frozen=True)
class QAExample:
    """One closed-book question: `answers` holds the gold answer first, then its aliases."""

    id: str
    relation: str
    subject: str
    question: str
    answers: tuple[str, ...]
    popularity: float | None = None
    split: str = "test"

    def to_dict(self) -> dict:
        """A JSON-ready dict (answers as a list)."""
        d = asdict(self)
        d["answers"] = list(self.answers)
        return d


@dataclass
class QADataset:
    """A QA dataset: examples with splits, the split that serves as the few-shot exemplar pool,
    and the question templates per relation (templates[0] made the questions)."""

    name: str
    examples: list[QAExample]
    exemplar_split: str | None
    templates: dict[str, list[str]] = field(default_factory=dict)
    source: str = ""

    def split(self, name: str) -> list[QAExample]:
        """The examples of one split, in dataset order."""
        return [e for e in self.examples if e.split == name]

    def splits(self) -> list[str]:
        """The split names present, in canonical order first."""
        present = {e.split for e in self.examples}
        return [s for s in SPLITS if s in present] + sorted(present - set(SPLITS))

    def relations(self) -> list[str]:
        """The relation ids present, sorted."""
        return sorted({e.relation for e in self.examples})

    def fingerprint(self) -> str:
        """A short hash of every example: equal data gives equal fingerprints."""
        return fingerprint([e.to_dict() for e in self.examples])


def chance_rate(examples: list[QAExample]) -> float:
    """Accuracy of always answering the relation's most frequent gold answer (docs/design.md: report
    it beside each relation's categories, since guessing inflates Maybe/WeaklyKnown)."""
    if not examples:
        return 0.0
    top = Counter(normalize_answer(e.answers[0]) for e in examples).most_common(1)[0][0]
    guess = next(e.answers[0] for e in examples if normalize_answer(e.answers[0]) == top)
    return sum(is_correct(guess, e.answers) for e in examples) / len(examples)
