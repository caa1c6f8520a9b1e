"""The cloze scoring protocol: prompts, continuation tokens found by offsets for tokenizers that merge the
leading space into the option or keep it apart, batched scores with a shared prefix cache against a direct
full-sequence forward per option, and the dispatch in `probe_mc` (the letter protocol is unchanged)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from conftest import bpe_tokenizer, make_tiny_model

from knowtune.data.multiple_choice import MCDataset, MCQuestion
from knowtune.engine import common_prefix_len
from knowtune.errors import KnowtuneError
from knowtune.probe.config import MCScoring
from knowtune.probe.mc_cloze import (
    cloze_prompt,
    cloze_prompts,
    cloze_scores,
    continuation_inputs,
)
from knowtune.probe.multiple_choice import (
    exemplar_sets,
    letter_logits,
    mc_prompts,
    predictions_from_logits,
    probe_mc,
)

CORPUS = [
    "Q: What is the capital of France?\nA: Paris\n\nQ: Which country is Lyon in?\nA: France\n\n",
    "Q: Which symbol stands for gold?\nA: Au\n\nQ: What language is spoken in Brazil?\nA: Portuguese\n\n",
] * 20


@pytest.fixture(scope="module", params=["merged", "separate"])
def kind_tok_model(request):
    tok = bpe_tokenizer(CORPUS, request.param == "separate")
    return request.param, tok, make_tiny_model(tok, seed=2, sharpness=10.0)


def _q(i: int, subject: str = "geo", split: str = "test", answer: int = 0) -> MCQuestion:
    return MCQuestion(f"{subject}/{split}/{i}", subject, "d1" if subject != "hist" else "d2",
                      f"What is the capital of {subject} {i}?", (f"Paris {i}", "Lyon", "New Orleans", "Au"), answer, split)


def _dataset() -> MCDataset:
    qs = [_q(i, s, split, answer=i % 4) for s in ("geo", "chem", "hist") for split, n in (("dev", 6), ("test", 5))
          for i in range(n)]
    return MCDataset("toy", qs, exemplar_split="dev")


def test_prompt_is_the_qa_format_with_gold_options():
    e, q = _q(0, answer=2), _q(1)
    assert cloze_prompt([e], q) == "Q: What is the capital of geo 0?\nA: New Orleans\n\nQ: What is the capital of geo 1?\nA:"
    data = _dataset()
    questions = data.split("test")
    # the same exemplars as the letter protocol shows, only written as QA pairs
    for ex, prompt in zip(exemplar_sets(data, questions, 3, 0), cloze_prompts(data, questions, 3, 0)):
        assert prompt.startswith("".join(f"Q: {e.question}\nA: {e.options[e.answer]}\n\n" for e in ex))


def test_continuation_tokens_by_offsets(kind_tok_model):
    kind, tok, _ = kind_tok_model
    prompt = "Q: What is the capital of France?\nA:"
    seqs, lengths = continuation_inputs(tok, [prompt], [("Paris", "Lyon", "New Orleans", "Au")])
    cont = tok.convert_ids_to_tokens(seqs[0][-lengths[0]:])
    if kind == "merged":  # the space is inside the option's first token: tokenising " Paris" alone is not what the model reads
        assert cont == ["ĠParis", "Ċ"]
    else:
        assert cont == ["Ġ", "Paris", "Ċ"]
    assert seqs[0] == tok(prompt + " Paris\n")["input_ids"]
    assert seqs[0][: -lengths[0]] == tok(prompt)["input_ids"]


def _direct(model, tok, prompt: str, option: str) -> float:
    """log P(" option\\n" | prompt) from one unpadded forward over the whole sequence; the continuation's
    tokens are found by decoding, independently of the offsets the scorer uses."""
    ids = tok(prompt + f" {option}\n")["input_ids"]
    start = next(n for n in range(len(ids)) if len(tok.decode(ids[: n + 1])) > len(prompt))
    assert tok.decode(ids[:start]) == prompt[: len(tok.decode(ids[:start]))]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
    return float(sum(logp[t - 1, ids[t]] for t in range(start, len(ids))))


@pytest.mark.parametrize("batch_size", [1, 2, 8])
def test_batched_cloze_scores_match_a_direct_forward_per_option(kind_tok_model, batch_size):
    _, tok, model = kind_tok_model
    data = _dataset()
    questions = data.split("test")
    prompts = cloze_prompts(data, questions, k_shot=3, seed=0)
    seqs, _ = continuation_inputs(tok, prompts, [q.options for q in questions])
    assert common_prefix_len(seqs[0], seqs[4]) > 40  # questions of one subject share a cached k-shot prefix
    assert len({len(s) for s in seqs}) > 1  # ... and rows are padded
    got = cloze_scores(model, tok, prompts, [q.options for q in questions], batch_size=batch_size)
    want = np.array([[_direct(model, tok, p, o) for o in q.options] for p, q in zip(prompts, questions)])
    # the prefix cache and the padding change no score: tight tolerance, whatever the batch size
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=0)
    mean = cloze_scores(model, tok, prompts, [q.options for q in questions], norm="mean", batch_size=batch_size)
    counts = np.array([[len(continuation_inputs(tok, [p], [(o,)])[0][0]) - len(tok(p)["input_ids"]) for o in q.options]
                       for p, q in zip(prompts, questions)])
    np.testing.assert_allclose(mean, want / counts, atol=2e-5, rtol=0)


def test_the_exemplar_prefix_runs_about_once_per_subject(kind_tok_model):
    """One question per batch: the next batches of the subject reuse the exemplar prefix's KV cache
    instead of running it again, and the scores stay those of a direct forward."""
    _, tok, model = kind_tok_model
    data = _dataset()
    questions = data.split("test")  # 3 subjects × 5 questions
    prompts = cloze_prompts(data, questions, k_shot=3, seed=0)
    prefix_runs = []  # a prefix runs alone, without an attention mask; every batched forward has one
    hook = model.register_forward_pre_hook(
        lambda _, args, kwargs: prefix_runs.append(1) if "attention_mask" not in kwargs else None, with_kwargs=True)
    try:
        got = cloze_scores(model, tok, prompts, [q.options for q in questions], batch_size=1)
    finally:
        hook.remove()
    assert len(prefix_runs) <= 2 * 3 < len(questions)  # at most twice per subject, not once per batch
    want = np.array([[_direct(model, tok, p, o) for o in q.options] for p, q in zip(prompts, questions)])
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=0)


def test_probe_mc_dispatches_and_letter_is_unchanged(kind_tok_model):
    _, tok, model = kind_tok_model
    data = _dataset()
    questions = data.split("test")
    letter = probe_mc(model, tok, data, questions, k_shot=2, seed=0, batch_size=4)
    assert letter == probe_mc(model, tok, data, questions, 2, 0, 4, scoring=MCScoring(scoring="letter"))
    assert letter == predictions_from_logits(questions, letter_logits(model, tok, mc_prompts(data, questions, 2, 0), 4))
    cloze = probe_mc(model, tok, data, questions, k_shot=2, seed=0, batch_size=4, scoring=MCScoring(scoring="cloze"))
    scores = cloze_scores(model, tok, cloze_prompts(data, questions, 2, 0), [q.options for q in questions], batch_size=4)
    assert [p.pred for p in cloze] == list(scores.argmax(1))
    z = np.exp(scores - scores.max(1, keepdims=True))
    np.testing.assert_allclose([p.probs for p in cloze], z / z.sum(1, keepdims=True), atol=1e-6)


def test_a_tokenizer_without_offsets_is_refused(tiny_tokenizer):
    class NoOffsets:
        def __call__(self, texts, return_offsets_mapping=False):
            raise NotImplementedError("return_offset_mapping is not available when using Python tokenizers")

    with pytest.raises(KnowtuneError, match="cloze scoring needs a fast tokenizer"):
        continuation_inputs(NoOffsets(), ["Q: x?\nA:"], [("a", "b", "c", "d")])


def test_no_questions_no_scores(tiny_tokenizer, tiny_model):
    assert cloze_scores(tiny_model, tiny_tokenizer, [], []).shape == (0, 4)


def test_unknown_normalisation_is_refused(tiny_tokenizer, tiny_model):
    with pytest.raises(KnowtuneError, match="unknown cloze normalisation 'bytes'"):
        cloze_scores(tiny_model, tiny_tokenizer, ["Q: x?\nA:"], [("a", "b", "c", "d")], norm="bytes")


@pytest.mark.slow
def test_real_model_cloze_scores_match_direct_forward():
    """SmolLM2's tokenizer merges the space into the option; batched scores equal per-option forwards."""
    from knowtune.data.multiple_choice import builtin_mc
    from knowtune.models import load_model

    lm = load_model("builtin")
    data = builtin_mc()
    questions = [q for q in data.split("test") if q.subject == "P17"][:3]
    prompts = cloze_prompts(data, questions, k_shot=4, seed=0)
    got = cloze_scores(lm.model, lm.tokenizer, prompts, [q.options for q in questions], batch_size=2)
    want = np.array([[_direct(lm.model, lm.tokenizer, p, o) for o in q.options] for p, q in zip(prompts, questions)])
    np.testing.assert_allclose(got, want, atol=1e-3, rtol=0)


@pytest.mark.parametrize("scoring", ["letter", "cloze"])
def test_mc_probe_raises_no_deprecation_warning(kind_tok_model, scoring):
    """Both protocols pass the KV cache as `cache=` (transformers removes `past_key_values` in 5.40)."""
    _, tok, model = kind_tok_model
    data = _dataset()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        probe_mc(model, tok, data, data.split("test"), k_shot=2, seed=0, batch_size=4, scoring=MCScoring(scoring=scoring))

