"""The closed-book QA prompt format, defined once: k-shot prompts, the zero-shot prompt a fine-tuned
model answers, the abstention label, and the random exemplar sets of each relation (docs/design.md)."""

from __future__ import annotations

import numpy as np

from knowtune.data.records import QADataset, QAExample
from knowtune.errors import ConfigError
from knowtune.files import stable_int

ABSTENTION = "I don't know"


def qa_prompt(question: str) -> str:
    """A question as the model reads it: `Q: {question}\\nA:` (zero-shot, and the last block of a k-shot prompt)."""
    return f"Q: {question}\nA:"


def qa_demo(question: str, answer: str) -> str:
    """A question with its answer: `Q: {question}\\nA: {answer}\\n\\n`."""
    return f"{qa_prompt(question)} {answer}\n\n"


def exemplar_block(ex: QAExample) -> str:
    """One demonstration: `Q: {question}\\nA: {answer}\\n\\n`."""
    return qa_demo(ex.question, ex.answers[0])


def question_block(ex: QAExample) -> str:
    """The probed question: `Q: {question}\\nA:`."""
    return qa_prompt(ex.question)


def build_prompt(exemplars: list[QAExample], ex: QAExample) -> str:
    """The full k-shot prompt for one question."""
    return "".join(exemplar_block(e) for e in exemplars) + question_block(ex)


def exemplar_sets(data: QADataset, relation: str, k: int, n_sets: int, seed: int) -> list[list[QAExample]]:
    """`n_sets` random sets of `k` exemplars from the relation's exemplar pool, fixed by `seed`."""
    if data.exemplar_split is None:
        raise ConfigError(f"dataset {data.name!r} has no exemplar pool (mark some records split='exemplar')")
    pool = [e for e in data.split(data.exemplar_split) if e.relation == relation]
    if len(pool) < k:
        raise ConfigError(
            f"relation {relation!r} has {len(pool)} exemplars in split {data.exemplar_split!r}, needs at least k={k}"
        )
    rng = np.random.default_rng(stable_int("exemplars", seed, relation))
    return [[pool[i] for i in rng.choice(len(pool), size=k, replace=False)] for _ in range(n_sets)]
