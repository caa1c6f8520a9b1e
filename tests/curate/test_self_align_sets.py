"""The self-align study's training sets (knowtune/curate/self_align_sets.py): Harmonious / Incompatible /
Self-aligning sets from hand-made base-model results, their mixtures, the HOMO / ID / OOD evaluation
sets, and clear errors when a set would be empty."""

from __future__ import annotations

import pytest

from knowtune.curate.self_align_sets import (
    consistency_sets,
    evaluation_sets,
    mixtures,
    training_prompt,
)
from knowtune.data.multiple_choice import MCDataset, MCQuestion, builtin_mc
from knowtune.errors import ConfigError, KnowtuneError
from knowtune.probe.multiple_choice import MCPrediction


def _q(i: int, subject: str = "geo", domain: str = "d1", split: str = "test", answer: int = 0) -> MCQuestion:
    return MCQuestion(f"{subject}/{split}/{i}", subject, domain, f"Question {i} about {subject}?",
                      (f"opt{i}a", f"opt{i}b", "Paris", "Lyon"), answer, split)


def _probe_results() -> tuple[list[MCPrediction], MCDataset]:
    """Hand-made base-model results: 10 right, 6 wrong (each wrong one picks (gold + 1) % 4)."""
    qs = [_q(i, "geo", answer=i % 4) for i in range(16)]
    preds = [MCPrediction(q, q.answer if i < 10 else (q.answer + 1) % 4, (0.25,) * 4) for i, q in enumerate(qs)]
    return preds, MCDataset("toy", qs, exemplar_split=None, topics={"geo": "geography"})


def test_consistency_sets_sizes_and_labels():
    preds, data = _probe_results()
    sets = consistency_sets(preds, data, seed=0)
    assert {k: len(v) for k, v in sets.items()} == {"harmonious": 6, "incompatible": 6, "self_aligning": 6}
    by_id = {p.question.id: p for p in preds}
    for ex in sets["harmonious"]:
        assert by_id[ex.id].correct and ex.label == ex.gold and ex.label_source == "gold"
    for ex in sets["incompatible"]:
        assert not by_id[ex.id].correct and ex.label == ex.gold and ex.label_source == "gold"
    for ex in sets["self_aligning"]:
        assert ex.label == by_id[ex.id].pred != ex.gold and ex.label_source == "model"
    assert [e.id for e in sets["self_aligning"]] == [e.id for e in sets["incompatible"]]  # the same questions
    ex = sets["self_aligning"][0]
    q = by_id[ex.id].question
    assert ex.prompt == training_prompt(q, "geography") and ex.prompt.endswith("\nD. Lyon\nAnswer:")
    assert ex.target == " " + "ABCD"[ex.label]
    # deterministic from the seed, whatever order the results come in; a size below the maximum down-samples
    assert consistency_sets(list(reversed(preds)), data, seed=0) == sets
    assert consistency_sets(preds, data, seed=1)["harmonious"] != sets["harmonious"]
    assert all(len(v) == 4 for v in consistency_sets(preds, data, size=4).values())
    with pytest.raises(ConfigError, match="1 to 6"):
        consistency_sets(preds, data, size=7)


def test_cloze_sets_are_qa_pairs_answered_with_option_text():
    preds, data = _probe_results()
    letter = consistency_sets(preds, data, seed=0)
    sets = consistency_sets(preds, data, seed=0, scoring="cloze")
    by_id = {p.question.id: p for p in preds}
    for name, rows in sets.items():
        # the same questions and labels as under letter; only the format differs
        assert [(e.id, e.label, e.label_source) for e in rows] == [(e.id, e.label, e.label_source) for e in letter[name]]
        for ex in rows:
            q = by_id[ex.id].question
            assert ex.prompt == f"Q: {q.question}\nA:" and ex.target == f" {q.options[ex.label]}\n"
    # self-aligning teaches the model's own top option, incompatible the gold one, on the same questions
    for own, gold in zip(sets["self_aligning"], sets["incompatible"]):
        assert own.target == f" {by_id[own.id].question.options[by_id[own.id].pred]}\n" != gold.target
    mix = mixtures(preds, data, [1.0], scoring="cloze")["self_aligned-1"]
    assert [e.target for e in mix] == [e.target for e in sets["self_aligning"]]


def test_too_small_sets_stop_with_the_counts():
    preds, data = _probe_results()
    with pytest.raises(ConfigError, match=r"size=7: the sets can hold 1 to 6 questions \(under cloze scoring the base "
                                          r"model answered 10 of the 16 pool questions right, 6 wrong\)"):
        consistency_sets(preds, data, size=7, scoring="cloze")


def test_empty_sets_are_an_error():
    preds, data = _probe_results()
    right = [p for p in preds if p.correct]
    wrong = [p for p in preds if not p.correct]
    with pytest.raises(KnowtuneError, match="answered all 10 questions correctly"):
        consistency_sets(right, data)
    with pytest.raises(KnowtuneError, match="harmonious set is empty.*none of the 6"):
        consistency_sets(wrong, data)
    with pytest.raises(KnowtuneError, match="answered all 10"):
        mixtures(right, data, [0.5])


def test_mixtures_are_nested_and_span_incompatible_to_self_aligning():
    preds, data = _probe_results()
    sets = consistency_sets(preds, data)
    mix = mixtures(preds, data, [0.0, 0.5, 1.0], seed=0)
    assert [e.label for e in mix["self_aligned-0"]] == [e.label for e in sets["incompatible"]]
    assert [e.label for e in mix["self_aligned-1"]] == [e.label for e in sets["self_aligning"]]
    half = {e.id for e in mix["self_aligned-0.5"] if e.label_source == "model"}
    assert len(half) == 3 and len(mix["self_aligned-0.5"]) == 6
    more = {e.id for e in mixtures(preds, data, [0.84])["self_aligned-0.84"] if e.label_source == "model"}
    assert half < more and len(more) == 5
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        mixtures(preds, data, [1.5])


def test_evaluation_sets_on_the_builtin_set():
    data = builtin_mc()
    sets = evaluation_sets(data, ["P36"])
    assert {q.subject for q in sets["homo"]} == {"P36"} and {q.subject for q in sets["id"]} == {"P36-US"}
    assert {q.domain for q in sets["ood"]} == {"located-in", "names-and-symbols"}
    assert all(q.split == "test" for qs in sets.values() for q in qs)
    with pytest.raises(KnowtuneError, match="ID test set is empty"):
        evaluation_sets(data, ["P36", "P36-US"])
    with pytest.raises(ConfigError, match="unknown subjects"):
        evaluation_sets(data, ["P999"])
