"""bf16 fit with float32 recompute of near ties: identical to the float32 fit."""

from __future__ import annotations

import pytest

from knowtune.train import fit
from knowtune.train.fit import teacher_forced_fit


def own_greedy_pairs(model, tok, questions: list[str]) -> list[tuple[str, str]]:
    """(prompt, the model's own greedy continuation up to its first newline): pairs the float32 fit
    accepts, so near ties decide them."""
    import torch

    from knowtune.data.formats import qa_prompt
    from knowtune.engine import newline_stop_ids

    stops, pairs = newline_stop_ids(tok), []
    for q in questions:
        ids = tok(qa_prompt(q), return_tensors="pt")
        with torch.inference_mode():
            gen = model.generate(**ids, do_sample=False, max_new_tokens=8, pad_token_id=tok.pad_token_id)[0, ids["input_ids"].shape[1]:]
        ends = [i for i, t in enumerate(gen.tolist()) if t in stops]
        text = tok.decode(gen[: ends[0] + 1]) if ends else ""
        if text.endswith("\n") and text.count("\n") == 1:
            pairs.append((qa_prompt(q), text))
    return pairs


def test_bf16_fit_equals_float32_on_a_tiny_model(tiny_tokenizer, monkeypatch):
    from conftest import make_tiny_model

    model = make_tiny_model(tiny_tokenizer, seed=1, sharpness=1.0)  # a seed whose greedy answers end in a newline
    pairs = own_greedy_pairs(model, tiny_tokenizer, [f"What is the capital of country {i}?" for i in range(40)])
    pairs += [(p, " Paris\n") for p, _ in pairs[:10]]  # and targets it does not produce
    exact = teacher_forced_fit(model, tiny_tokenizer, pairs)
    assert any(exact) and not all(exact)
    assert teacher_forced_fit(model, tiny_tokenizer, pairs, bf16=True) == exact
    monkeypatch.setattr(fit, "BF16_MARGIN", float("inf"))  # every row recomputed: the float32 path itself
    assert teacher_forced_fit(model, tiny_tokenizer, pairs, bf16=True) == exact


@pytest.mark.slow
def test_bf16_fit_equals_float32_on_the_builtin_model():
    from knowtune.data import load_qa
    from knowtune.models import load_model

    lm = load_model("builtin")
    questions = load_qa("builtin").split("train")[:400]
    pairs = own_greedy_pairs(lm.model, lm.tokenizer, [e.question for e in questions[:240]])
    pairs += [(f"Q: {e.question}\nA:", f" {e.answers[0]}\n") for e in questions[240:]]
    assert len(pairs) >= 300
    exact = teacher_forced_fit(lm.model, lm.tokenizer, pairs)
    assert sum(exact) >= 100
    assert teacher_forced_fit(lm.model, lm.tokenizer, pairs, bf16=True) == exact
