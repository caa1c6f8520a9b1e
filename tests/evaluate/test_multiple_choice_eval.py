"""Multiple-choice evaluation (knowtune/evaluate/multiple_choice.py, knowtune/evaluate/harness.py): the
chance check, `knowtune probe-mc` and `knowtune evaluate --mc` on a tiny model and MMLU-layout CSVs, and
the optional lm-evaluation-harness path against the letter-logit probe on its own prompts."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import MMLU_SUBJECTS, SHARED_DATA, make_tiny_model

from knowtune import cli
from knowtune.data.multiple_choice import MCQuestion, load_mmlu
from knowtune.errors import KnowtuneError
from knowtune.evaluate.multiple_choice import binomial_tail, chance_check
from knowtune.probe.multiple_choice import (
    MCPrediction,
    build_mc_prompt,
    letter_logits,
    predictions_from_logits,
)


def _q(i: int, answer: int) -> MCQuestion:
    return MCQuestion(f"q{i}", "s", "d", f"Q{i}?", ("a", "b", "c", "d"), answer)


def test_chance_check():
    assert binomial_tail(0, 10) == pytest.approx(1.0) and binomial_tail(10, 10) == pytest.approx(0.25 ** 10)
    assert binomial_tail(3, 10) == pytest.approx(0.4744072, abs=1e-6)  # scipy.stats.binom.sf(2, 10, 0.25)
    # always answering C: 40 % correct, because 40 % of the gold answers are C
    preds = [MCPrediction(_q(i, [2, 2, 0, 1, 3][i % 5]), 2, (0.1, 0.1, 0.7, 0.1)) for i in range(100)]
    check = chance_check(preds)
    assert check["accuracy"] == 0.4 and check["above_chance"] and check["best_constant_letter"] == "C"
    assert check["best_constant_accuracy"] == 0.4 and check["predicted_letters"] == {"A": 0, "B": 0, "C": 100, "D": 0}
    assert not chance_check(preds[:5] + [MCPrediction(_q(9, 0), 1, (0.25,) * 4)] * 15)["above_chance"]


def test_probe_mc_command(mmlu_inputs, tmp_path):
    cli.probe_mc(model=str(mmlu_inputs / "model"), data=str(mmlu_inputs / "mmlu"), out=tmp_path / "probe", k_shot=2, seed=0,
                 scoring="letter", cloze_norm="sum")
    summary = json.loads((tmp_path / "probe" / "summary.json").read_text())
    assert summary["overall"]["n"] == sum(MMLU_SUBJECTS.values()) == summary["chance_check"]["n"]
    assert set(summary["domains"]) == {"STEM", "other"}
    lines = (tmp_path / "probe" / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == 56 and json.loads((tmp_path / "probe" / "summary.json").read_text())["k_shot"] == 2


def _real_mmlu_subjects(tmp_path):
    """Two subjects of the shared MMLU copy (original layout), dev and test files only."""
    source = SHARED_DATA / "mmlu" / "data"
    if not source.is_dir():
        pytest.skip(f"MMLU copy not found at {source}")
    for subject in ("abstract_algebra", "anatomy"):
        for split in ("dev", "test"):
            shutil.copy(source / split / f"{subject}_{split}.csv", tmp_path)
    return tmp_path


@pytest.mark.parametrize("source", ["tiny CSVs", "two real MMLU subjects"])
def test_lm_eval_path_agrees_with_the_letter_logit_probe_on_its_own_prompts(source, mmlu_inputs, tiny_tokenizer, tmp_path):
    pytest.importorskip("lm_eval", reason="lm-evaluation-harness is optional: pip install lm-eval")
    from knowtune.evaluate.harness import lm_eval_mc

    if source == "tiny CSVs":
        data, k = load_mmlu(mmlu_inputs / "mmlu"), 2
        questions = [q for q in data.split("test") if q.subject in ("virology", "astronomy")]
    else:  # real questions are longer: 1 shot keeps them inside the tiny model's 512 positions
        data, k = load_mmlu(_real_mmlu_subjects(tmp_path)), 1
        questions = [q for s in ("abstract_algebra", "anatomy") for q in [q for q in data.split("test") if q.subject == s][:3]]
    model = make_tiny_model(tiny_tokenizer, seed=5, sharpness=30.0)
    got = lm_eval_mc(model, tiny_tokenizer, data, questions, k_shot=k, batch_size=4)
    # lm-eval's MMLU prompt: the subject's first k dev questions in file order, then the question
    dev = {s: [e for e in data.split("dev") if e.subject == s] for s in data.subjects()}
    prompts = [build_mc_prompt(dev[q.subject][:k], q, data.topic(q.subject)) for q in questions]
    want = predictions_from_logits(questions, letter_logits(model, tiny_tokenizer, prompts, batch_size=4))
    assert [p.question for p in got] == questions and len({q.subject for q in questions}) == 2
    np.testing.assert_allclose([p.probs for p in got], [p.probs for p in want], atol=1e-5)
    assert [p.pred for p in got] == [p.pred for p in want]


def test_lm_eval_missing_is_a_clear_error(monkeypatch, mmlu_inputs, tiny_tokenizer):
    import builtins

    from knowtune.evaluate import harness

    real_import = builtins.__import__

    def no_lm_eval(name, *args, **kwargs):
        if name == "lm_eval" or name.startswith("lm_eval."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_lm_eval)
    data = load_mmlu(mmlu_inputs / "mmlu")
    with pytest.raises(KnowtuneError, match="pip install lm-eval"):
        harness.lm_eval_mc(make_tiny_model(tiny_tokenizer), tiny_tokenizer, data, data.split("test")[:2])


def test_evaluate_mc_writes_what_probe_mc_writes(mmlu_inputs, tmp_path, cli):
    model, data = str(mmlu_inputs / "model"), str(mmlu_inputs / "mmlu")
    code, out, err = cli("evaluate", "--model", model, "--mc", data, "--k-shot", "2", "--seed", "1", "--out", str(tmp_path / "ev"))
    assert code == 0, err
    assert f"predictions: {tmp_path / 'ev' / 'predictions.jsonl'}" in out
    code, _, err = cli("probe-mc", "--model", model, "--data", data, "--k-shot", "2", "--seed", "1", "--out", str(tmp_path / "pm"))
    assert code == 0, err
    ev, pm = tmp_path / "ev", tmp_path / "pm"
    assert sorted(p.name for p in ev.iterdir()) == sorted(p.name for p in pm.iterdir()) == ["predictions.jsonl", "summary.json"]
    assert (ev / "predictions.jsonl").read_text() == (pm / "predictions.jsonl").read_text()
    summary = json.loads((ev / "summary.json").read_text())
    assert summary == json.loads((pm / "summary.json").read_text())
    assert summary["k_shot"] == 2 and summary["seed"] == 1 and summary["split"] == "test"
    assert summary["overall"]["n"] == sum(MMLU_SUBJECTS.values()) == len((ev / "predictions.jsonl").read_text().splitlines())
    # another seed picks other exemplars: the two commands agree because they run the same probe, not by accident
    code, _, _ = cli("evaluate", "--model", model, "--mc", data, "--k-shot", "2", "--seed", "0", "--out", str(tmp_path / "ev0"))
    assert code == 0 and json.loads((tmp_path / "ev0" / "summary.json").read_text())["seed"] == 0


def test_cloze_on_mmlu_through_both_commands(mmlu_inputs, tiny_tokenizer, tmp_path, cli):
    """MMLU under cloze: the subject's dev questions are the exemplars, the summary records the protocol,
    and the predictions are the cloze probe's own."""
    from knowtune.probe.config import MCScoring
    from knowtune.probe.mc_cloze import cloze_prompts, cloze_scores
    from knowtune.probe.multiple_choice import probe_mc

    model, data = str(mmlu_inputs / "model"), str(mmlu_inputs / "mmlu")
    args = ["--k-shot", "2", "--scoring", "cloze", "--cloze-norm", "mean"]
    code, out, err = cli("probe-mc", "--model", model, "--data", data, *args, "--out", str(tmp_path / "pm"))
    assert code == 0, err
    assert "scoring protocol: cloze (mean option log-probability)" in out
    code, _, err = cli("evaluate", "--model", model, "--mc", data, *args, "--out", str(tmp_path / "ev"))
    assert code == 0, err
    summary = json.loads((tmp_path / "pm" / "summary.json").read_text())
    assert summary == json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["scoring"] == {"scoring": "cloze", "cloze_norm": "mean"}
    assert summary["protocol"] == "cloze (mean option log-probability)"
    rows = [json.loads(line) for line in (tmp_path / "pm" / "predictions.jsonl").read_text().splitlines()]
    dataset = load_mmlu(mmlu_inputs / "mmlu")
    questions = dataset.split("test")
    assert cloze_prompts(dataset, questions[:1], 2, 0)[0].startswith("Q: Which is anatomy dev ")
    tiny = make_tiny_model(tiny_tokenizer, seed=3, sharpness=30.0)  # the saved model of mmlu_inputs
    preds = probe_mc(tiny, tiny_tokenizer, dataset, questions, 2, 0, scoring=MCScoring(scoring="cloze", cloze_norm="mean"))
    assert [r["pred"] for r in rows] == [p.pred for p in preds]
    scores = cloze_scores(tiny, tiny_tokenizer, cloze_prompts(dataset, questions, 2, 0), [q.options for q in questions], "mean")
    assert [r["pred"] for r in rows] == list(scores.argmax(1))
    # letter scoring on the same data is another protocol, recorded as such
    code, _, err = cli("probe-mc", "--model", model, "--data", data, "--k-shot", "2", "--out", str(tmp_path / "letter"))
    assert code == 0 and json.loads((tmp_path / "letter" / "summary.json").read_text())["protocol"] == "letter-logit"


@pytest.mark.parametrize("k, n", [(0, 1), (1, 1), (3, 10), (30, 100), (200, 714), (0, 714), (714, 714), (180, 714)])
def test_binomial_tail_matches_scipy(k, n):
    """binomial_tail is written by hand because scipy is a test-only dependency; here it meets scipy's."""
    from scipy.stats import binom

    assert binomial_tail(k, n) == pytest.approx(binom.sf(k - 1, n, 0.25), rel=1e-9, abs=1e-300)


@pytest.mark.parametrize("args, message", [
    (["--mc", "builtin"], "--mc needs --out, the directory for predictions.jsonl and summary.json"),
    (["--mc", "builtin", "--records", "probe.jsonl", "--out", "x"],
     "give exactly one of --records (QA), --edits (edit metrics) and --mc (multiple choice)"),
    (["--mc", "builtin", "--edits", "edits.jsonl"], "give exactly one of --records (QA), --edits (edit metrics) and --mc"),
    (["--records", "probe.jsonl", "--edits", "edits.jsonl"], "give exactly one of --records (QA), --edits (edit metrics) and --mc"),
    ([], "give exactly one of --records (QA), --edits (edit metrics) and --mc"),
])
def test_evaluate_refuses_a_wrong_mix_of_inputs_in_one_line(args, message, cli, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # relative paths, none of which exists: refused before any is read
    code, out, err = cli("evaluate", *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"knowtune: error: {message}"), err
    assert "Traceback" not in out + err and list(tmp_path.iterdir()) == []
