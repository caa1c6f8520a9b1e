"""The multiple-choice consistency probe (prompts, letter ids for two kinds of tokenizer, batched
letter logits against a direct forward) and the knowledge-consistency measure. The Harmonious /
Incompatible / Self-aligning training sets are tested in tests/curate/test_self_align_sets.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import bpe_tokenizer, make_tiny_model

from knowtune.data.multiple_choice import MCDataset, MCQuestion, builtin_mc
from knowtune.engine import common_prefix_len
from knowtune.errors import ConfigError, KnowtuneError
from knowtune.probe.multiple_choice import (
    MCPrediction,
    answer_inputs,
    build_mc_prompt,
    choose_exemplars,
    dense_ranks,
    knowledge_consistency,
    letter_logits,
    mc_prompts,
    mc_summary,
    prefix_batches,
    probe_mc,
    rank_correlation,
)

CORPUS = [
    "The following are multiple choice questions (with answers) about capitals.\n\n"
    "What is the capital of France?\nA. Paris\nB. Lyon\nC. Nice\nD. Lille\nAnswer: A\n\n",
    "Which symbol stands for gold?\nA. Ag\nB. Au\nC. Fe\nD. Cu\nAnswer: B\n\nAnswer: C\n\nAnswer: D\n\n",
] * 20


@pytest.fixture(scope="module", params=["merged", "separate"])
def kind_tok_model(request):
    tok = bpe_tokenizer(CORPUS, request.param == "separate")
    return request.param, tok, make_tiny_model(tok, seed=1, sharpness=30.0)


def _q(i: int, subject: str = "geo", domain: str = "d1", split: str = "test", answer: int = 0) -> MCQuestion:
    return MCQuestion(f"{subject}/{split}/{i}", subject, domain, f"Question {i} about {subject}?",
                      (f"opt{i}a", f"opt{i}b", "Paris", "Lyon"), answer, split)


def _dataset() -> MCDataset:
    qs = [_q(i, s, d, split, answer=i % 4) for s, d in [("geo", "d1"), ("chem", "d1"), ("hist", "d2")]
          for split, n in [("dev", 6), ("test", 5)] for i in range(n)]
    return MCDataset("toy", qs, exemplar_split="dev", topics={"geo": "geography"})


def test_prompt_format():
    e, q = _q(0, answer=1), _q(1)
    assert build_mc_prompt([e], q, "geography") == (
        "The following are multiple choice questions (with answers) about geography.\n\n"
        "Question 0 about geo?\nA. opt0a\nB. opt0b\nC. Paris\nD. Lyon\nAnswer: B\n\n"
        "Question 1 about geo?\nA. opt1a\nB. opt1b\nC. Paris\nD. Lyon\nAnswer:"
    )
    data = _dataset()
    zero_shot = mc_prompts(data, [_q(1, "high_school_x")], k_shot=0)[0]
    assert zero_shot.startswith("The following are multiple choice questions (with answers) about high school x.\n\n")
    assert zero_shot.endswith("\nAnswer:") and "Answer: " not in zero_shot


def test_exemplars_same_subject_deterministic_never_the_question():
    data = _dataset()
    pool = data.split("dev")
    geo = [e for e in pool if e.subject == "geo"]
    q = data.split("test")[0]
    a = choose_exemplars(geo, q, 5, seed=0)
    assert a == choose_exemplars(geo, q, 5, seed=0) and len({e.id for e in a}) == 5
    assert all(e.subject == "geo" for e in a)
    assert any(choose_exemplars(geo, q, 5, seed=s) != a for s in range(1, 6))
    inside = geo[2]  # probing an exemplar: it must not demonstrate itself
    assert inside not in choose_exemplars(geo, inside, 5, seed=0)
    with pytest.raises(ConfigError, match="needs k=6"):
        choose_exemplars(geo, inside, 6, seed=0)


def test_letter_ids_for_both_tokenizer_kinds(kind_tok_model):
    kind, tok, _ = kind_tok_model
    prompt = build_mc_prompt([], _q(0), "geo")
    stems, letters = answer_inputs(tok, [prompt])
    if kind == "merged":  # " A" is one token: the model reads the prompt as is
        assert tok.convert_ids_to_tokens(letters[0]) == ["ĠA", "ĠB", "ĠC", "ĠD"]
        assert stems[0] == tok(prompt)["input_ids"]
    else:  # the space is its own token: it becomes the last token the model reads
        assert tok.convert_ids_to_tokens(letters[0]) == ["A", "B", "C", "D"]
        assert stems[0] == tok(prompt)["input_ids"] + [tok.convert_tokens_to_ids("Ġ")]


def test_unscorable_tokenizer_is_refused(tiny_tokenizer):
    class AppendsEos:
        def __call__(self, texts):
            return {"input_ids": [tiny_tokenizer(t)["input_ids"] + [tiny_tokenizer.eos_token_id] for t in texts]}

    with pytest.raises(KnowtuneError, match="cannot score the option letters"):
        answer_inputs(AppendsEos(), ["Q?\nAnswer:"])


def _direct(model, tok, kind: str, prompt: str) -> np.ndarray:
    """Letter logits from a plain unpadded forward, with the letter tokens named explicitly."""
    ids = tok(prompt)["input_ids"]
    if kind == "merged":
        letters = tok.convert_tokens_to_ids(["ĠA", "ĠB", "ĠC", "ĠD"])
    else:
        ids = ids + [tok.convert_tokens_to_ids("Ġ")]
        letters = tok.convert_tokens_to_ids(["A", "B", "C", "D"])
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, -1]
    return logits[letters].double().numpy()


@pytest.mark.parametrize("batch_size", [1, 4])
def test_batched_letter_logits_match_direct_forward(kind_tok_model, batch_size):
    kind, tok, model = kind_tok_model
    data = _dataset()
    questions = data.split("test")
    prompts = mc_prompts(data, questions, k_shot=2, seed=0)
    assert len({len(tok(p)["input_ids"]) for p in prompts}) > 1  # batches really are padded
    stems, _ = answer_inputs(tok, prompts)
    assert common_prefix_len(stems[0], stems[1]) > 40  # ... and share a cached k-shot prefix
    got = letter_logits(model, tok, prompts, batch_size=batch_size)
    want = np.stack([_direct(model, tok, kind, p) for p in prompts])
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def test_prefix_batches_never_straddle_two_subjects_exemplars(kind_tok_model):
    _, tok, _ = kind_tok_model
    data = _dataset()
    questions = data.split("test")  # 3 subjects × 5 questions, each subject with its own header and exemplars
    stems, _ = answer_inputs(tok, mc_prompts(data, questions, k_shot=2, seed=0))
    batches = prefix_batches(stems, batch_size=4)
    assert sorted(i for b in batches for i in b) == list(range(len(questions)))
    assert all(len({questions[i].subject for i in b}) == 1 for b in batches)
    assert sorted(map(len, batches)) == [1, 1, 1, 4, 4, 4]
    zero_shot, _ = answer_inputs(tok, mc_prompts(data, questions, k_shot=0))
    assert len(prefix_batches(zero_shot, batch_size=16)) <= 3  # short prompts still batch


def test_probe_predictions(kind_tok_model):
    _, tok, model = kind_tok_model
    data = _dataset()
    questions = data.split("test")
    preds = probe_mc(model, tok, data, questions, k_shot=3, seed=0, batch_size=4)
    logits = letter_logits(model, tok, mc_prompts(data, questions, 3, 0))
    for p, q, row in zip(preds, questions, logits):
        assert p.question == q and p.pred == int(np.argmax(row))
        assert abs(sum(p.probs) - 1) < 1e-9 and p.pred_prob == max(p.probs)
        softmax = np.exp(row - row.max()) / np.exp(row - row.max()).sum()
        np.testing.assert_allclose(p.probs, softmax, atol=1e-6)  # batches of 4 vs 8: padding moves the last digits
        assert p.correct == (p.pred == q.answer)
        assert MCPrediction.from_dict(p.to_dict()) == p
    summary = mc_summary(preds)
    assert summary["overall"]["n"] == len(questions) and summary["chance"] == 0.25
    assert set(summary["domains"]) == {"d1", "d2"} and sum(summary["predicted_letters"].values()) == len(preds)


def test_dense_ranks_and_rank_correlation():
    assert dense_ranks([0.1, 0.6, 0.2, 0.1]).tolist() == [3, 1, 2, 3]
    assert rank_correlation([0.4, 0.3, 0.2, 0.1], [0.7, 0.2, 0.06, 0.04]) == pytest.approx(1.0)
    assert rank_correlation([0.4, 0.3, 0.2, 0.1], [0.1, 0.2, 0.3, 0.4]) == pytest.approx(-1.0)
    assert rank_correlation([0.25] * 4, [0.4, 0.3, 0.2, 0.1]) == 0.0
    # Ren et al.'s code: Pearson r of the dense ranks [1,2,3,4] and [2,1,3,3]
    want = np.corrcoef([1, 2, 3, 4], [2, 1, 3, 3])[0, 1]
    assert rank_correlation([0.4, 0.3, 0.2, 0.1], [0.3, 0.5, 0.1, 0.1]) == pytest.approx(want)


def _pred(q: MCQuestion, probs) -> MCPrediction:
    return MCPrediction(q, int(np.argmax(probs)), tuple(probs))


def test_knowledge_consistency():
    qs = [_q(i) for i in range(3)]
    before = [_pred(q, p) for q, p in zip(qs, [(0.7, 0.1, 0.1, 0.1), (0.4, 0.3, 0.2, 0.1), (0.1, 0.2, 0.3, 0.4)])]
    same = knowledge_consistency(before, before)
    assert same == {"n": 3, "rank_correlation": pytest.approx(1.0), "kl_divergence": pytest.approx(0.0),
                    "same_prediction": 1.0}
    after = [_pred(qs[1], (0.1, 0.2, 0.3, 0.4)), _pred(qs[2], (0.1, 0.2, 0.3, 0.4))]
    got = knowledge_consistency(before, after)
    assert got["n"] == 2 and got["rank_correlation"] == pytest.approx(0.0) and got["same_prediction"] == 0.5
    assert got["kl_divergence"] > 0
    with pytest.raises(KnowtuneError, match="not probed before"):
        knowledge_consistency(before[:1], after)


@pytest.mark.slow
def test_real_model_letter_logits_match_direct_forward():
    from knowtune.models import load_model

    lm = load_model("builtin")
    data = builtin_mc()
    test = data.split("test")
    questions = [q for q in test if q.subject == "P36"][:3] + [q for q in test if q.subject == "P246"][:1]
    prompts = mc_prompts(data, questions, k_shot=5, seed=0)
    got = letter_logits(lm.model, lm.tokenizer, prompts, batch_size=2)
    letters = lm.tokenizer.convert_tokens_to_ids(["ĠA", "ĠB", "ĠC", "ĠD"])
    for row, prompt in zip(got, prompts):
        with torch.no_grad():
            logits = lm.model(torch.tensor([lm.tokenizer(prompt)["input_ids"]]), logits_to_keep=1).logits[0, -1]
        np.testing.assert_allclose(row, logits[letters].double().numpy(), atol=1e-3, rtol=1e-4)
