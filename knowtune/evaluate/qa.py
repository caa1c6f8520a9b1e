"""Closed-book QA evaluation: exact match overall and per SliCK category, hallucination, abstention."""

from __future__ import annotations

from collections import defaultdict

from knowtune.data.formats import ABSTENTION, qa_prompt
from knowtune.engine import Engine, HFTreeEngine, SamplingParams
from knowtune.matching import is_correct, normalize_answer
from knowtune.probe.records import ProbeRecord


def is_abstention(answer: str) -> bool:
    """True for "I don't know" (after normalisation)."""
    return normalize_answer(answer) == normalize_answer(ABSTENTION)


def greedy_answers(model, tokenizer, questions: list[str], batch_size: int = 32, max_new_tokens: int = 24,
                   engine: Engine | None = None) -> list[str]:
    """Greedy answers to zero-shot QA prompts, batched, each stopping at its first newline; through
    `engine` when given (e.g. vLLM), else through the hf engine on `model`."""
    engine = engine or HFTreeEngine(model, tokenizer, batch_size=batch_size)
    params = SamplingParams(n_samples=0, max_new_tokens=max_new_tokens)
    return [c.greedy for c in engine.complete("", [qa_prompt(q) for q in questions], [0] * len(questions), params)]


def question_rows(records: list[ProbeRecord], predictions: list[str]) -> list[dict]:
    """Per question: id, category, the prediction, whether it is correct and whether it abstains
    (the per-question outcomes the studies' bootstrap resamples)."""
    return [{"id": r.id, "category": r.category, "prediction": p, "correct": is_correct(p, r.answers),
             "abstained": is_abstention(p)} for r, p in zip(records, predictions, strict=True)]


def score_qa(records: list[ProbeRecord], predictions: list[str]) -> dict:
    """Accuracy overall and per category, hallucination rate (wrong and not an abstention / all),
    answered share and accuracy on answered questions."""
    rows = question_rows(records, predictions)
    correct = [q["correct"] for q in rows]
    abstained = [q["abstained"] for q in rows]
    n = len(records)
    by_cat: dict[str, list[bool]] = defaultdict(list)
    for r, ok in zip(records, correct):
        by_cat[r.category].append(ok)
    answered = n - sum(abstained)
    return {
        "n": n,
        "accuracy": sum(correct) / n if n else 0.0,
        "accuracy_by_category": {c: sum(v) / len(v) for c, v in sorted(by_cat.items())},
        "hallucination_rate": sum((not ok) and (not a) for ok, a in zip(correct, abstained)) / n if n else 0.0,
        "answered_share": answered / n if n else 0.0,
        "answered_accuracy": sum(correct) / answered if answered else None,
    }


def evaluate_qa(model, tokenizer, records: list[ProbeRecord], batch_size: int = 32,
                engine: Engine | None = None) -> tuple[dict, list[str]]:
    """Answer every record's question (through `engine` when given) and score the answers; returns (metrics, predictions)."""
    preds = greedy_answers(model, tokenizer, [r.question for r in records], batch_size, engine=engine)
    return score_qa(records, preds), preds
