"""The tree-sampling engine: greedy equals HF generate; samples follow the exact distribution."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import exact_answer_distribution
from scipy.stats import chisquare

from knowtune.engine import (
    HFTreeEngine,
    SamplingParams,
    answer_text,
)

PREFIX = "Q: What is the capital of France?\nA: Paris\n\nQ: What is the chemical symbol of gold?\nA: Au\n\n"
SUFFIXES = [f"Q: What is the capital of {c}?\nA:" for c in ["Spain", "Germany", "Peru", "Chad", "the Central African Republic", "India"]]


def hf_greedy(model, tok, prompt: str, max_new_tokens: int) -> str:
    ids = tok(prompt, return_tensors="pt")
    out = model.generate(**ids, do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id)
    return answer_text(tok, out[0, ids["input_ids"].shape[1] :].tolist())


@pytest.mark.parametrize("prefix", [PREFIX, ""])
def test_greedy_matches_hf_generate(tiny_model, tiny_tokenizer, prefix):
    eng = HFTreeEngine(tiny_model, tiny_tokenizer, batch_size=4)
    outs = eng.complete(prefix, SUFFIXES, list(range(len(SUFFIXES))), SamplingParams(n_samples=8, max_new_tokens=8))
    for suffix, out in zip(SUFFIXES, outs):
        assert out.greedy == hf_greedy(tiny_model, tiny_tokenizer, prefix + suffix, 8)
        assert sum(out.samples.values()) == 8


def test_results_do_not_depend_on_batch_size(tiny_model, tiny_tokenizer):
    params = SamplingParams(n_samples=16, max_new_tokens=6)
    seeds = [11, 12, 13, 14, 15, 16]
    one = HFTreeEngine(tiny_model, tiny_tokenizer, batch_size=1).complete(PREFIX, SUFFIXES, seeds, params)
    many = HFTreeEngine(tiny_model, tiny_tokenizer, batch_size=6).complete(PREFIX, SUFFIXES[::-1], seeds[::-1], params)
    assert [(o.greedy, o.samples) for o in one] == [(o.greedy, o.samples) for o in many[::-1]]


def test_tree_shares_work(tiny_model, tiny_tokenizer):
    eng = HFTreeEngine(tiny_model, tiny_tokenizer, batch_size=6)
    eng.complete(PREFIX, SUFFIXES, list(range(6)), SamplingParams(n_samples=64, temperature=0.3, max_new_tokens=6))
    assert 0 < eng.stats.tree_forwards < eng.stats.sample_tokens


def engine_counts(model, tok, prompt_suffix: str, params: SamplingParams, seeds: list[int]) -> dict[str, int]:
    eng = HFTreeEngine(model, tok, batch_size=8)
    counts: dict[str, int] = {}
    for out in eng.complete(PREFIX, [prompt_suffix] * len(seeds), seeds, params):
        for text, c in out.samples.items():
            counts[text] = counts.get(text, 0) + c
    return counts


def chi2_pvalue(counts: dict[str, int], dist: dict[str, float]) -> float:
    """Pearson chi-square goodness of fit, pooling answers with expected count < 5 into one bin."""
    n = sum(counts.values())
    assert set(counts) <= set(dist), f"engine produced answers with zero probability: {set(counts) - set(dist)}"
    big = [a for a in dist if dist[a] * n >= 5]
    obs = [counts.get(a, 0) for a in big] + [n - sum(counts.get(a, 0) for a in big)]
    exp = [dist[a] * n for a in big] + [n - sum(dist[a] * n for a in big)]
    if exp[-1] < 1e-9:
        obs, exp = obs[:-1], exp[:-1]
    return chisquare(obs, exp).pvalue


def test_samples_follow_exact_distribution(tiny_tokenizer):
    from conftest import make_tiny_model

    model = make_tiny_model(tiny_tokenizer, seed=3, sharpness=8.0)
    params = SamplingParams(n_samples=500, temperature=0.7, top_k=4, max_new_tokens=3)
    suffix = SUFFIXES[0]
    dist = exact_answer_distribution(model, tiny_tokenizer, PREFIX + suffix, params)
    assert len(dist) > 5
    counts = engine_counts(model, tiny_tokenizer, suffix, params, seeds=list(range(40)))
    assert sum(counts.values()) == 20_000
    assert chi2_pvalue(counts, dist) > 1e-3
    # The test has power: samples drawn at another temperature are rejected.
    wrong = engine_counts(model, tiny_tokenizer, suffix, SamplingParams(500, 1.0, 4, 3), seeds=list(range(40)))
    assert chi2_pvalue(wrong, dist) < 1e-6


def test_seeds_change_samples_and_reproduce(tiny_model, tiny_tokenizer):
    params = SamplingParams(n_samples=32, temperature=1.0, max_new_tokens=5)
    eng = HFTreeEngine(tiny_model, tiny_tokenizer)
    a = eng.complete(PREFIX, SUFFIXES[:1] * 2, [1, 2], params)
    b = eng.complete(PREFIX, SUFFIXES[:1], [1], params)
    assert a[0].samples == b[0].samples
    assert a[0].samples != a[1].samples
    assert np.isclose(sum(a[1].samples.values()), 32)
