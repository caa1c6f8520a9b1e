"""Edit metrics: the token protocol on hand-worked cases (a bigram model with known argmaxes), and
both protocols on the tiny model against independent unbatched references."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import torch
from conftest import make_tiny_model

from knowtune.data.edits import EditExample
from knowtune.engine import answer_text
from knowtune.errors import KnowtuneError
from knowtune.evaluate.edit_metrics import (
    PreEditReference,
    edit_scores,
    greedy_answers,
    pre_edit_reference,
    target_argmax,
)
from knowtune.matching import is_correct


class WordTok:
    """Whitespace tokenizer: each word with its leading space is one token, ids given on first sight."""

    pad_token_id = 0

    def __init__(self) -> None:
        self.vocab = {"<pad>": 0}

    def id(self, word: str) -> int:
        return self.vocab.setdefault(word, len(self.vocab))

    def __call__(self, text: str) -> dict:
        return {"input_ids": [self.id(w) for w in re.findall(r" ?\S+", text)]}


class BigramLM(torch.nn.Module):
    """Logits are one-hot rows of a table: the argmax after token a is table[a] (pad when unset)."""

    def __init__(self, tok: WordTok, table: dict[str, str], vocab: int = 64):
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, vocab)
        with torch.no_grad():
            self.emb.weight.zero_()
            for a, b in table.items():
                self.emb.weight[tok.id(a), tok.id(b)] = 1.0

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=self.emb(input_ids))


PRE = {" is": " New", " New": " Jersey", " York": " City", " in": " New", " to": " Spain",
       " the": " capital", " north": " of", " of": " Italy"}
POST = PRE | {" New": " York", " north": " pole"}

EDITS = [
    EditExample("italy", "Italy", "The capital of Italy is", "New York City", ("Rome",), ("Italy has its capital in",),
                ("Berlin is in",), ("the north of Germany",)),
    EditExample("paris", "Paris", "Paris is in", "Spain", ("France",), ("Paris belongs to",),
                ("Oslo is in", "Tokyo is big"), ("Norway", "yes")),
]


def test_target_argmax_scores_the_position_before_each_target_token():
    tok = WordTok()
    model = BigramLM(tok, PRE)
    [t] = target_argmax(model, tok, ["The capital of Italy is"], ["New York City"])
    assert t.labels == [tok.id(" New"), tok.id(" York"), tok.id(" City")]
    assert t.predicted == [tok.id(" New"), tok.id(" Jersey"), tok.id(" City")]
    assert t.accuracy == pytest.approx(2 / 3)


@pytest.mark.parametrize("batch_size", [1, 2, 16])
def test_token_protocol_hand_worked(batch_size):
    tok = WordTok()
    pre_model = BigramLM(tok, PRE)
    ref = pre_edit_reference(pre_model, tok, EDITS, "token", batch_size=batch_size)
    # Berlin: argmax after ' in', ' the', ' north', ' of' = ' New', ' capital', ' of', ' Italy'
    assert ref.outputs["italy"] == [[tok.id(w) for w in (" New", " capital", " of", " Italy")]]

    before = edit_scores(pre_model, tok, EDITS, ref, batch_size=batch_size)
    # reliability: italy 2/3 (' Jersey' ≠ ' York'), paris 0 (' New' ≠ ' Spain')
    # generality: italy 2/3 (same tokens after ' in'), paris 1 (' to' → ' Spain')
    assert before.reliability == pytest.approx((2 / 3 + 0) / 2)
    assert before.generality == pytest.approx((2 / 3 + 1) / 2)
    assert before.locality == 1.0

    after = edit_scores(BigramLM(tok, POST), tok, EDITS, ref, batch_size=batch_size)
    assert [e["reliability"] for e in after.per_edit] == [1.0, 0.0]
    assert after.reliability == pytest.approx(0.5)
    assert after.generality == pytest.approx(1.0)
    # italy: ' north' now → ' pole', so 3 of 4 answer positions agree with the pre-edit argmax; paris: 2 prompts, unchanged
    assert [e["locality"] for e in after.per_edit] == [pytest.approx(3 / 4), 1.0]
    assert after.locality == pytest.approx((3 / 4 + 1) / 2)
    assert after.protocol == "token" and after.to_dict()["protocol"] == "token"
    assert {e["protocol"] for e in after.per_edit} == {"token"}
    assert after.counts == {"edits": 2, "generality": 2, "locality": 2}


def test_reference_round_trip_and_mismatch(tmp_path):
    tok = WordTok()
    model = BigramLM(tok, PRE)
    ref = pre_edit_reference(model, tok, EDITS, "token")
    ref.save(tmp_path / "ref.json")
    loaded = PreEditReference.load(tmp_path / "ref.json")
    assert loaded == ref
    assert edit_scores(BigramLM(tok, POST), tok, EDITS, loaded).locality == pytest.approx(7 / 8)
    moved = [EDITS[0], EditExample("paris", "Paris", "Paris is in", "Spain", ("France",), (), ("Oslo is in",), ("Norway",))]
    with pytest.raises(KnowtuneError, match="edit paris: its locality prompts differ"):
        edit_scores(model, tok, moved, ref)
    with pytest.raises(KnowtuneError, match="no outputs for edit other"):
        edit_scores(model, tok, [EditExample("other", "s", "p q", "t", ("g",), (), (), ())], ref)
    with pytest.raises(KnowtuneError, match="unknown edit-metric protocol 'mixed'"):
        pre_edit_reference(model, tok, EDITS, "mixed")


def test_scoring_leaves_a_training_model_in_training_mode():
    tok = WordTok()
    model = BigramLM(tok, PRE).train()
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append(m.training))
    edit_scores(model, tok, EDITS, pre_edit_reference(model, tok, EDITS, "token"))
    assert seen and not any(seen) and model.training


# ---------------------------------------------------------------- tiny model

MAX = 8  # new tokens for "qa" answers: short, so the reference generations stay fast
QA = ["Q: What is the capital of France?\nA:", "Q: Which country is Lyon located in?\nA:",
      "Q: What is the official language of Brazil?\nA:", "Q: What is the chemical symbol of gold?\nA:"]


_GREEDY: dict[tuple[int, str, int], str] = {}


def hf_greedy(model, tok, prompt: str, n: int) -> str:
    """Reference greedy answer: plain HF generate, one prompt at a time (memoised: generate is slow)."""
    key = (id(model), prompt, n)
    if key not in _GREEDY:
        ids = tok(prompt, return_tensors="pt")
        out = model.generate(**ids, do_sample=False, max_new_tokens=n, pad_token_id=tok.pad_token_id)
        _GREEDY[key] = answer_text(tok, out[0, ids["input_ids"].shape[1] :].tolist())
    return _GREEDY[key]


def n_target_tokens(tok, prompt: str, target: str) -> int:
    return len(tok(prompt + " " + target)["input_ids"]) - len(tok(prompt)["input_ids"])


def test_greedy_answers_match_hf_generate_with_mixed_limits(tiny_model, tiny_tokenizer):
    limits = [1, 8, 3, 8]
    got = greedy_answers(tiny_model, tiny_tokenizer, QA, limits, batch_size=3)
    assert got == [hf_greedy(tiny_model, tiny_tokenizer, p, n) for p, n in zip(QA, limits)]


def test_token_protocol_on_the_tiny_model_matches_an_unbatched_reference(tiny_model, tiny_tokenizer):
    targets = ["Paris", "France", "Portuguese is spoken", "Au"]
    got = target_argmax(tiny_model, tiny_tokenizer, QA, targets, batch_size=4)
    for p, t, res in zip(QA, targets, got):
        full = tiny_tokenizer(p + " " + t, return_tensors="pt")["input_ids"]
        n = len(tiny_tokenizer(p)["input_ids"])
        with torch.no_grad():
            argmax = tiny_model(full).logits[0].argmax(-1)
        assert res.labels == full[0, n:].tolist()
        assert res.predicted == argmax[n - 1 : -1].tolist()
    assert [r.predicted for r in target_argmax(tiny_model, tiny_tokenizer, QA, targets, batch_size=1)] == [r.predicted for r in got]


def test_exact_protocol_on_the_tiny_model(tiny_model, tiny_tokenizer):
    tok, model = tiny_tokenizer, tiny_model
    known = hf_greedy(model, tok, QA[0], MAX)  # what the model answers: reliability 1 when it is the target
    assert known and not is_correct(hf_greedy(model, tok, QA[2], MAX), [known])
    # a completion prompt whose greedy continuation, cut at the target's own token count, matches the target
    completion = next((p, t) for p in ["gold", "Brazil", "France"] for k in (1, 2)
                      if (t := hf_greedy(model, tok, p, k).strip())
                      and is_correct(hf_greedy(model, tok, p, n_target_tokens(tok, p, t)), [t]))
    edits = [
        EditExample("qa-hit", "France", QA[0], known, ("Paris",), (QA[0], QA[2]), (QA[1], QA[3]), ("France", "Au"), prompt_style="qa"),
        EditExample("qa-miss", "Brazil", QA[2], known + " x", ("Portuguese",), (QA[3],), (QA[1],), ("France",), prompt_style="qa"),
        EditExample("completion-hit", "x", completion[0], completion[1], ("y",), (), ("Lyon is in",), ("France and Europe",)),
    ]
    ref = pre_edit_reference(model, tok, edits, "exact", max_new_tokens=MAX)
    # completion-style locality answers are cut at the answer's own token count
    n_loc = n_target_tokens(tok, "Lyon is in", "France and Europe")
    assert ref.outputs["completion-hit"] == [hf_greedy(model, tok, "Lyon is in", n_loc)]
    assert ref.outputs["qa-hit"] == [hf_greedy(model, tok, QA[1], MAX), hf_greedy(model, tok, QA[3], MAX)]

    same = edit_scores(model, tok, edits, ref)
    assert [e["reliability"] for e in same.per_edit] == [1.0, 0.0, 1.0]
    assert [e["generality"] for e in same.per_edit] == [0.5, 0.0, None]
    assert same.generality == pytest.approx(0.25) and same.counts["generality"] == 2
    assert same.locality == 1.0 and same.protocol == "exact"

    other = make_tiny_model(tok, seed=1, sharpness=30.0)
    changed = edit_scores(other, tok, edits, ref)
    limit = {"qa": MAX, "completion": n_loc}
    want = [[float(hf_greedy(other, tok, p, limit[e.prompt_style]) == hf_greedy(model, tok, p, limit[e.prompt_style]))
             for p in e.locality_prompts] for e in edits]
    assert [e["locality"] for e in changed.per_edit] == [pytest.approx(sum(w) / len(w)) for w in want]
    assert changed.locality < 1.0
