"""Training sets of Ren et al. 2024 (*Learning or Self-aligning?*) from a multiple-choice probe of the base model.

* Harmonious: questions the base model gets right, labelled with the gold option.
* Incompatible: questions it gets wrong, labelled with the gold option.
* Self-aligning: the same questions as Incompatible, labelled with the model's own predicted option.
* Mixtures: the Incompatible questions with a share r of them labelled by the model's prediction
  (r = 0 is Incompatible, r = 1 is Self-aligning); the self-labelled questions of a smaller share are
  a subset of those of a larger one, so a sweep over r changes one thing at a time.
All sets have the same size, the smaller of the right and wrong pools (or a requested size), drawn
from the seed alone. Each record is a (prompt, target) pair for a generic SFT trainer in the format of
the probe's scoring protocol, so the fine-tuned model is probed in exactly the format it was trained on:
* letter: the probe's own 0-shot prompt (header, question, options, "Answer:") and the target " {letter}";
* cloze: the QA prompt "Q: {question}\nA:" and the target " {option text}\n" (gold, gold, or the
  model's own top option), the continuation the cloze probe scores.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np

from knowtune.data.formats import qa_prompt
from knowtune.data.multiple_choice import LETTERS, MCDataset, MCQuestion
from knowtune.errors import ConfigError, KnowtuneError
from knowtune.files import stable_int
from knowtune.probe.mc_cloze import continuation
from knowtune.probe.multiple_choice import MCPrediction, build_mc_prompt

SETS = ("harmonious", "incompatible", "self_aligning")


@dataclass(frozen=True)
class ConsistencyExample:
    """One training pair. `label` is the option trained on; `label_source` says whether it is the
    gold option ("gold") or the base model's prediction ("model")."""

    id: str
    set: str
    prompt: str
    target: str
    label: int
    label_source: str
    gold: int
    base_pred: int
    subject: str
    domain: str

    def to_dict(self) -> dict:
        """A JSON-ready dict."""
        return asdict(self)


def training_prompt(q: MCQuestion, topic: str) -> str:
    """The 0-shot prompt: the probe's header, the question and its options, ending with "Answer:"."""
    return build_mc_prompt([], q, topic)


def training_pair(q: MCQuestion, label: int, topic: str, scoring: str = "letter") -> tuple[str, str]:
    """The (prompt, target) that teaches option `label` of `q` in the format of the scoring protocol."""
    if scoring == "cloze":
        return qa_prompt(q.question), continuation(q.options[label])
    return training_prompt(q, topic), f" {LETTERS[label]}"


def _example(p: MCPrediction, data: MCDataset, set_name: str, from_model: bool, scoring: str) -> ConsistencyExample:
    q = p.question
    label = p.pred if from_model else q.answer
    prompt, target = training_pair(q, label, data.topic(q.subject), scoring)
    return ConsistencyExample(q.id, set_name, prompt, target, label, "model" if from_model else "gold", q.answer, p.pred,
                              q.subject, q.domain)


def _sample(preds: list[MCPrediction], n: int, seed: int, name: str) -> list[MCPrediction]:
    """n predictions drawn from (seed, name) alone, whatever order they came in; kept in id order."""
    ordered = sorted(preds, key=lambda p: p.question.id)
    rng = np.random.default_rng(stable_int("consistency-sets", seed, name))
    return [ordered[i] for i in sorted(rng.choice(len(ordered), size=n, replace=False))]


def _right_and_wrong(
    preds: Iterable[MCPrediction], size: int | None, seed: int, scoring: str = "letter"
) -> tuple[list[MCPrediction], list[MCPrediction]]:
    """The harmonious and incompatible questions, down-sampled to one common size; too few of either is an
    error that names the counts under the protocol, before anything is trained."""
    preds = list(preds)
    if len({p.question.id for p in preds}) != len(preds):
        raise KnowtuneError("the probe results hold a question twice; pass one prediction per question")
    right = [p for p in preds if p.correct]
    wrong = [p for p in preds if not p.correct]
    if not right:
        raise KnowtuneError(f"the harmonious set is empty: under {scoring} scoring the base model answered none of the "
                            f"{len(preds)} questions correctly, so there is nothing consistent with its knowledge to train on")
    if not wrong:
        raise KnowtuneError(f"the incompatible and self-aligning sets are empty: under {scoring} scoring the base model "
                            f"answered all {len(preds)} questions correctly; probe more (or harder) questions")
    n = min(len(right), len(wrong))
    if size is not None:
        if not 1 <= size <= n:
            raise ConfigError(f"size={size}: the sets can hold 1 to {n} questions (under {scoring} scoring the base "
                              f"model answered {len(right)} of the {len(preds)} pool questions right, {len(wrong)} wrong)")
        n = size
    return _sample(right, n, seed, "harmonious"), _sample(wrong, n, seed, "incompatible")


def consistency_sets(
    preds: Iterable[MCPrediction], data: MCDataset, size: int | None = None, seed: int = 0, scoring: str = "letter"
) -> dict[str, list[ConsistencyExample]]:
    """The Harmonious, Incompatible and Self-aligning sets, of equal size, from base-model predictions
    made under `scoring` (letter or cloze), in that protocol's training format."""
    right, wrong = _right_and_wrong(preds, size, seed, scoring)
    # (questions, labelled by the model?) per set, in SETS order; self-aligning reuses the incompatible questions
    plan = [(right, False), (wrong, False), (wrong, True)]
    return {name: [_example(p, data, name, own, scoring) for p in qs] for name, (qs, own) in zip(SETS, plan)}


def mixture_name(share: float) -> str:
    """The set name of a mixture with `share` of its labels from the model, e.g. 'self_aligned-0.2'."""
    return f"self_aligned-{share:g}"


def mixtures(
    preds: Iterable[MCPrediction], data: MCDataset, shares: Iterable[float], size: int | None = None, seed: int = 0,
    scoring: str = "letter",
) -> dict[str, list[ConsistencyExample]]:
    """Incompatible questions with a share of them labelled by the model's own prediction, one set per share."""
    shares = list(shares)
    bad = [s for s in shares if not 0.0 <= s <= 1.0]
    if bad:
        raise ConfigError(f"mixture shares must lie in [0, 1], got {bad}")
    _, wrong = _right_and_wrong(preds, size, seed, scoring)
    rng = np.random.default_rng(stable_int("consistency-mixture", seed))
    rank = {wrong[i].question.id: r for r, i in enumerate(rng.permutation(len(wrong)))}
    out = {}
    for share in shares:
        k = round(share * len(wrong))  # the k first in one fixed order: nested across shares
        name = mixture_name(share)
        out[name] = [_example(p, data, name, rank[p.question.id] < k, scoring) for p in wrong]
    return out


def evaluation_sets(data: MCDataset, train_subjects: Iterable[str], split: str = "test") -> dict[str, list[MCQuestion]]:
    """Ren et al.'s test sets for a model trained on `train_subjects`: HOMO (held-out questions of those
    subjects), ID (the other subjects of their domains) and OOD (the subjects of every other domain)."""
    train = set(train_subjects)
    unknown = train - set(data.subjects())
    if unknown:
        raise ConfigError(f"unknown subjects {sorted(unknown)} in dataset {data.name!r}")
    domains = {q.domain for q in data.questions if q.subject in train}
    questions = data.split(split)
    sets = {
        "homo": [q for q in questions if q.subject in train],
        "id": [q for q in questions if q.subject not in train and q.domain in domains],
        "ood": [q for q in questions if q.domain not in domains],
    }
    for name, qs in sets.items():
        if not qs:
            raise KnowtuneError(f"the {name.upper()} test set is empty for training subjects {sorted(train)} "
                                f"(split {split!r}, domains {sorted(domains)})")
    return sets
