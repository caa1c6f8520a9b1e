"""Exact gold probabilities: equal to the enumerated answer distribution, matched by the sampler's frequencies."""

from __future__ import annotations

import pytest
from conftest import exact_answer_distribution, make_tiny_model
from scipy.stats import binomtest

from knowtune.engine import HFTreeEngine, SamplingParams
from knowtune.engine.exact import ExactScorer, gold_keys, on_gold_path
from knowtune.matching import is_correct

PREFIX = "Q: What is the capital of France?\nA: Paris\n\nQ: What is the chemical symbol of gold?\nA: Au\n\n"
SUFFIX = "Q: What is the capital of Spain?\nA:"
PARAMS = SamplingParams(n_samples=0, temperature=0.7, top_k=6, max_new_tokens=3)


@pytest.fixture(scope="module")
def model(tiny_tokenizer):
    return make_tiny_model(tiny_tokenizer, seed=3, sharpness=8.0)


@pytest.fixture(scope="module")
def dist(model, tiny_tokenizer):
    return exact_answer_distribution(model, tiny_tokenizer, PREFIX + SUFFIX, PARAMS)


def gold_mass(dist: dict[str, float], aliases: tuple[str, ...]) -> float:
    return sum(q for a, q in dist.items() if is_correct(a, aliases))


def test_gold_keys_cover_case_punctuation_articles():
    keys = gold_keys(("The Hague",))
    for text in ("Hague", " the hague", "THE HAGUE.", "Th", "  "):
        assert on_gold_path(text, keys)
    assert not on_gold_path("Amsterdam", keys)
    congo = gold_keys(("Republic of Congo",))
    for text in ("Republic of th", "Republic of the Con", "Republic of Congo the"):  # articles anywhere normalise away
        assert on_gold_path(text, congo)
    assert not on_gold_path("Republic of Chad", congo)
    assert on_gold_path("Z\ufffd", gold_keys(("Zürich",)))  # an incomplete UTF-8 character waits for its bytes


def test_probability_equals_enumerated_distribution(model, tiny_tokenizer, dist):
    ranked = [a for a, _ in sorted(dist.items(), key=lambda kv: -kv[1]) if a.strip()]
    scorer = ExactScorer(HFTreeEngine(model, tiny_tokenizer, batch_size=2), min_path_prob=0.0)
    # one alias, two aliases, an alias in another case with an article, and an alias no sample reaches
    gold = [(ranked[0],), (ranked[1], ranked[2]), ("The " + ranked[3].upper(),), ("Xylophone quartet",)]
    outs = scorer.score(PREFIX, [SUFFIX] * len(gold), gold, PARAMS)
    for aliases, out in zip(gold, outs):
        assert out.p_gold == pytest.approx(gold_mass(dist, aliases), abs=1e-6) and out.pruned == 0.0
    # with a floor, the true probability lies between p_gold and p_gold + pruned
    floored = ExactScorer(HFTreeEngine(model, tiny_tokenizer), min_path_prob=0.01).score(PREFIX, [SUFFIX] * 2, gold[:2], PARAMS)
    assert any(out.pruned > 0 for out in floored)
    for aliases, out in zip(gold, floored):
        assert out.p_gold - 1e-9 <= gold_mass(dist, aliases) <= out.p_gold + out.pruned + 1e-9
    assert outs[0].p_gold > 0 and outs[3].p_gold == 0.0
    # greedy rides along and equals the sampling engine's greedy
    assert outs[0].greedy == HFTreeEngine(model, tiny_tokenizer).complete(PREFIX, [SUFFIX], [0], PARAMS)[0].greedy


def test_sampler_frequency_matches_exact_probability(model, tiny_tokenizer, dist):
    """Calibration: the sampling engine's share of gold answers is Binomial(n, p_exact); a wrong p is rejected."""
    aliases = (max(dist, key=dist.get),)
    p = ExactScorer(HFTreeEngine(model, tiny_tokenizer), 0.0).score(PREFIX, [SUFFIX], [aliases], PARAMS)[0].p_gold
    params = SamplingParams(500, PARAMS.temperature, PARAMS.top_k, PARAMS.max_new_tokens)
    outs = HFTreeEngine(model, tiny_tokenizer, batch_size=8).complete(PREFIX, [SUFFIX] * 20, list(range(20)), params)
    hits = sum(c for o in outs for a, c in o.samples.items() if is_correct(a, aliases))
    assert 0.05 < p < 0.95
    assert binomtest(hits, 10_000, p).pvalue > 1e-3
    assert binomtest(hits, 10_000, min(p + 0.03, 0.99)).pvalue < 1e-3
