"""Multiple-choice evaluation with the multiple-choice probe's own protocols (k-shot prompt; argmax over the
option letters' next-token logits, or over the options' cloze scores), on named test sets (HOMO / ID / OOD /
dev), compared with the base model under the same protocol.

`chance_check` says whether a model is above chance in a way that a letter preference cannot explain:
a one-sided exact binomial test against 1/4, beside the accuracy of always answering the most common
gold letter (a model that always says "C" scores the share of C answers, which can exceed 1/4).
"""

from __future__ import annotations

from math import exp, lgamma, log

from knowtune.data.multiple_choice import LETTERS, MCDataset, MCQuestion, load_mc
from knowtune.errors import DataError
from knowtune.probe.config import MCScoring
from knowtune.probe.multiple_choice import (
    CHANCE,
    MCPrediction,
    knowledge_consistency,
    mc_summary,
    probe_mc,
)


def binomial_tail(k: int, n: int, p: float = CHANCE) -> float:
    """P(X >= k) for X ~ Binomial(n, p): the one-sided p-value of k correct answers out of n."""
    # By hand: scipy.stats.binom.sf does this, but scipy is a test-only dependency (tests check this against it).
    # Terms in log space: comb(n, i) overflows a float for the n of a full MMLU split.
    def log_term(i: int) -> float:
        return lgamma(n + 1) - lgamma(i + 1) - lgamma(n - i + 1) + i * log(p) + (n - i) * log(1 - p)

    return min(1.0, sum(exp(log_term(i)) for i in range(max(k, 0), n + 1)))


def chance_check(preds: list[MCPrediction], alpha: float = 0.05) -> dict:
    """Accuracy against chance: binomial p-value vs 1/4, the letters predicted, and the best constant-letter score."""
    n = len(preds)
    k = sum(p.correct for p in preds)
    gold = {L: sum(p.question.answer == i for p in preds) for i, L in enumerate(LETTERS)}
    best = max(gold, key=lambda L: gold[L])
    p_value = binomial_tail(k, n) if n else 1.0
    return {
        "n": n, "accuracy": k / n if n else 0.0, "chance": CHANCE, "p_value": p_value,
        "above_chance": bool(n and p_value < alpha),
        "predicted_letters": {L: sum(p.pred == i for p in preds) for i, L in enumerate(LETTERS)},
        "gold_letters": gold, "best_constant_letter": best, "best_constant_accuracy": gold[best] / n if n else 0.0,
    }


def evaluate_parts(
    model, tokenizer, data: MCDataset, parts: dict[str, list[MCQuestion]], k_shot: int = 5, seed: int = 0,
    batch_size: int = 16, base: dict[str, list[MCPrediction]] | None = None, scoring: MCScoring | None = None,
) -> tuple[dict[str, dict], dict[str, list[MCPrediction]]]:
    """Probe every part in one batched pass under `scoring` (default letter); per part the accuracy and predicted
    letters, and with `base` (the base model's predictions on the same questions, same protocol) the change in
    accuracy and the knowledge consistency."""
    questions = [q for qs in parts.values() for q in qs]
    preds = probe_mc(model, tokenizer, data, questions, k_shot, seed, batch_size, scoring=scoring)
    by_part: dict[str, list[MCPrediction]] = {}
    start = 0
    for name, qs in parts.items():
        by_part[name] = preds[start : start + len(qs)]
        start += len(qs)
    metrics = {}
    for name, ps in by_part.items():
        summary = mc_summary(ps)
        row = {"n": len(ps), "accuracy": summary["overall"]["accuracy"], "predicted_letters": summary["predicted_letters"]}
        if base is not None and name in base:
            row["change"] = row["accuracy"] - mc_summary(base[name])["overall"]["accuracy"]
            row["consistency"] = knowledge_consistency(base[name], ps)
        metrics[name] = row
    return metrics, by_part


def evaluate_mc_test(model_spec: str, data_spec: str, k_shot: int = 5, seed: int = 0,
                     scoring: MCScoring | None = None) -> tuple[list[MCPrediction], dict]:
    """A model on a multiple-choice set's test split under one scoring protocol (default letter): its
    predictions, and a summary of accuracy per domain and subject, the letters it predicts and the test against chance."""
    from knowtune.models import describe, load_model

    scoring = scoring or MCScoring()
    dataset = load_mc(data_spec)
    test = dataset.split("test")
    if not test:  # before the model is loaded
        raise DataError(f"{data_spec}: no test questions (splits found: {', '.join(dataset.splits()) or 'none'})")
    lm = load_model(model_spec)
    preds = probe_mc(lm.model, lm.tokenizer, dataset, test, k_shot, seed, progress=True, scoring=scoring)
    summary = {"model": describe(lm), "data": {"spec": data_spec, "name": dataset.name, "fingerprint": dataset.fingerprint()},
               "split": "test", "k_shot": k_shot, "seed": seed, "scoring": scoring.model_dump(), "protocol": scoring.label(),
               "chance_check": chance_check(preds), **mc_summary(preds)}
    return preds, summary
