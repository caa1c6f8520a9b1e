"""The self-aligning study (Ren et al. 2024): the recipe end to end on a tiny random model and MMLU-layout
CSVs (full and LoRA, resume, a mismatched directory, an empty set), its findings logic on hand-made
numbers, and its caveats when the base model is at chance. The multiple-choice evaluation it uses (the
chance check, `knowtune probe-mc`, `knowtune evaluate --mc`, lm-evaluation-harness) is tested in
tests/evaluate/test_multiple_choice_eval.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import binom, binomtest

from knowtune.data.multiple_choice import MCQuestion, load_mmlu
from knowtune.errors import ConfigError, KnowtuneError
from knowtune.evaluate.multiple_choice import binomial_tail, chance_check
from knowtune.probe.multiple_choice import MCPrediction
from knowtune.studies.registry import get_study
from knowtune.studies.self_align.findings import caveats, findings, paired_gap
from knowtune.studies.self_align.study import (
    balanced_sample,
    run_study,
    study_questions,
    training_sets,
)


def overrides(root, **extra: str) -> dict[str, str]:
    base = {
        "model": str(root / "model"), "data": str(root / "mmlu"), "train_subjects": "[anatomy]",
        "pool_split": "test", "test_split": "test", "dev_split": "val", "pool_size": "null", "size": "null",
        "homo_size": "8", "id_size": "6", "ood_size": "6", "dev_size": "null", "k_shot": "2", "batch_size": "8",
        "train.epochs": "2", "train.learning_rate": "1e-3", "train.batch_size": "4",
    }
    return {**base, **extra}


def test_study_end_to_end_resumes_and_refuses_other_settings(mmlu_inputs, tmp_path, monkeypatch):
    monkeypatch.setenv("KNOWTUNE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "study"
    study = get_study("self-align")
    results = study.run(study.load_config("quick", overrides(mmlu_inputs)), out, False)
    saved = json.loads((out / "results.json").read_text())
    assert (out / "report.html").read_text().startswith("<!doctype html>")
    # MMLU-style: pool and HOMO share the test split, HOMO held out of the pool
    base = saved["base"]
    assert {p: base[p]["n"] for p in base} == {"pool": 32, "dev": 4, "homo": 8, "id": 6, "ood": 6}
    sets = saved["sets"]["seed0"]
    right = round(base["pool"]["accuracy"] * base["pool"]["n"])
    assert {s["size"] for s in sets.values()} == {min(right, base["pool"]["n"] - right)}  # size null: the largest equal size
    inc = [json.loads(line) for line in (out / "sets" / "seed0" / "incompatible.jsonl").read_text().splitlines()]
    sa = [json.loads(line) for line in (out / "sets" / "seed0" / "self_aligning.jsonl").read_text().splitlines()]
    assert [r["id"] for r in inc] == [r["id"] for r in sa]
    assert all(r["label"] == r["base_pred"] != r["gold"] for r in sa) and all(r["label"] == r["gold"] for r in inc)
    # the paper-style table: every set × split, accuracy and change from the base model
    table = saved["table"]["convergence"]
    assert set(table) == {"harmonious", "incompatible", "self_aligning"}
    for name, by in table.items():
        for split in ("homo", "id", "ood"):
            assert by[split]["change"]["mean"] == pytest.approx(by[split]["accuracy"]["mean"] - base[split]["accuracy"])
            assert -1 <= saved["consistency"]["convergence"][name][split]["rank_correlation"]["mean"] <= 1
    # the quick preset scores by cloze: recorded, and the sets are QA pairs answered with option text
    assert saved["config"]["probe"] == {"scoring": "cloze", "cloze_norm": "sum"}
    assert saved["protocol"] == "cloze (summed option log-probability)"
    assert "cloze (summed option log-probability) scoring" in (out / "report.html").read_text()
    questions = {q.id: q for q in load_mmlu(mmlu_inputs / "mmlu").questions}
    for r in sa + inc:
        q = questions[r["id"]]
        assert r["prompt"] == f"Q: {q.question}\nA:" and r["target"] == f" {q.options[r['label']]}\n"
    # one finding per claim and split, the consistency claim, the base model against chance
    found = saved["findings"]
    assert [f["claim"] for f in found[:6]] == [f"{s} > Incompatible on {x}" for s in ("Harmonious", "Self-aligning")
                                               for x in ("HOMO", "ID", "OOD")]
    assert found[6]["claim"].startswith("Sets that keep") and len(found) == 8
    assert found[7]["claim"] == "The base model is above chance (25 %) under cloze (summed option log-probability) scoring"
    assert (found[7]["verdict"] == "reproduced") == base["pool"]["above_chance"]
    assert found[7]["estimate"] == pytest.approx((base["pool"]["accuracy"] - 0.25) * 100)
    assert all(f["verdict"] in ("reproduced", "contradicted", "inconclusive") and f["rule"] for f in found)
    assert all(f["ci"] is not None and f["ci"][0] <= f["estimate"] <= f["ci"][1] for f in found[:6] + found[7:])
    assert saved["schema_version"] == 2 and "outcomes" not in saved["runs"]["seed0"]["harmonious"]
    # the consistency claim's interval is rebuilt from per-question predictions: its estimate is the r of the tables
    cells = [(saved["consistency"]["convergence"][n][x]["rank_correlation"]["mean"], table[n][x]["change"]["mean"])
             for n in table for x in ("homo", "id", "ood")]
    assert found[6]["estimate"] == pytest.approx(np.corrcoef(*np.array(cells).T)[0, 1])
    assert found[6]["ci"][0] <= found[6]["estimate"] <= found[6]["ci"][1] and found[6]["units"] == "Pearson r"
    # per-question option probabilities and correctness, base and every epoch, for intervals computed later
    base_rows = [json.loads(line) for line in (out / "base" / "predictions.jsonl").read_text().splitlines()]
    assert len(base_rows) == sum(b["n"] for b in base.values()) and all(len(r["probs"]) == 4 and "correct" in r for r in base_rows)
    run = out / "runs" / "seed0" / "harmonious"
    assert sorted(p.name for p in (run / "predictions").iterdir()) == ["epoch1.jsonl", "epoch2.jsonl", "fit_epoch1.jsonl", "fit_epoch2.jsonl"]

    # re-running resumes: nothing is trained or probed again
    stamp = (run / "predictions" / "epoch2.jsonl").stat().st_mtime_ns
    again = run_study(get_study("self-align").load_config("quick", overrides(mmlu_inputs)), out, False)
    assert (run / "predictions" / "epoch2.jsonl").stat().st_mtime_ns == stamp
    assert again["table"] == results["table"]
    with pytest.raises(KnowtuneError, match=r"study_config.json: this directory holds a study with a different config\.k_shot "
                                            r"\(2 vs 1\); use another output directory"):
        run_study(get_study("self-align").load_config("quick", overrides(mmlu_inputs, k_shot="1")), out, False)


def test_lora_and_mixtures(mmlu_inputs, tmp_path, monkeypatch):
    monkeypatch.setenv("KNOWTUNE_CACHE", str(tmp_path / "cache"))
    cfg = get_study("self-align").load_config("quick", overrides(
        mmlu_inputs, sets="[incompatible]", mixture_shares="[0.5]", dev_split="null",
        **{"train.method": "lora", "train.epochs": "1", "probe.scoring": "letter"}))
    results = run_study(cfg, tmp_path / "lora", progress=False)
    assert results["protocol"] == "letter-logit"
    rows = [json.loads(line) for line in (tmp_path / "lora" / "sets" / "seed0" / "incompatible.jsonl").read_text().splitlines()]
    assert all(r["prompt"].endswith("\nAnswer:") and r["target"] == " " + "ABCD"[r["label"]] for r in rows)
    assert set(results["table"]["convergence"]) == {"incompatible", "self_aligned-0.5"}
    mix = results["sets"]["seed0"]["self_aligned-0.5"]
    assert mix["label_source"]["model"] == round(mix["size"] / 2)
    # without a dev set EARLY_STOP is the last epoch, never picked on a test set
    assert all(r["early_stop_epoch"] == r["convergence_epoch"] for r in results["runs"]["seed0"].values())
    # harmonious / self-aligning not trained
    assert [(f["verdict"], f["estimate"]) for f in results["findings"][:6]] == [("inconclusive", None)] * 6


def test_bad_requests_stop_with_a_message(mmlu_inputs):
    data = load_mmlu(mmlu_inputs / "mmlu")
    cfg = get_study("self-align").load_config("quick", overrides(mmlu_inputs))
    wrong = [MCPrediction(q, (q.answer + 1) % 4, (0.25,) * 4) for q in data.split("test") if q.subject == "anatomy"]
    with pytest.raises(KnowtuneError, match="harmonious set is empty"):
        training_sets(cfg, data, wrong, seed=0)
    right = [MCPrediction(q, q.answer, (0.25,) * 4) for q in data.split("test") if q.subject == "anatomy"]
    with pytest.raises(KnowtuneError, match="incompatible and self-aligning sets are empty"):
        training_sets(cfg, data, right, seed=0)
    # too small for the requested size: stops before training, naming the counts and the protocol
    half = right[:30] + wrong[30:]
    big = get_study("self-align").load_config("quick", overrides(mmlu_inputs, size="12"))
    with pytest.raises(ConfigError, match=r"size=12: the sets can hold 1 to 10 questions \(under cloze scoring the base "
                                          r"model answered 30 of the 40 pool questions right, 10 wrong\)"):
        training_sets(big, data, half, seed=0)
    for key, value, message in (("train_subjects", "[nope]", "unknown training subjects"),
                                ("dev_split", "train", "split 'train' is not in"),
                                ("train_subjects", "[anatomy, virology]", "ID test set is empty")):
        bad = get_study("self-align").load_config("quick", overrides(mmlu_inputs, **{key: value}))
        with pytest.raises(KnowtuneError, match=message):
            study_questions(bad, data)
    with pytest.raises(ConfigError, match="unknown sets"):
        get_study("self-align").load_config("quick", {"sets": "[harmonic]"})


def test_balanced_sample_is_deterministic_and_spreads_over_subjects(mmlu_inputs):
    data = load_mmlu(mmlu_inputs / "mmlu")
    qs = data.split("test")
    a = balanced_sample(qs, 9, 0, "ood")
    assert a == balanced_sample(list(reversed(qs)), 9, 0, "ood") and len({q.id for q in a}) == 9
    assert sorted(q.subject for q in a) == ["anatomy"] * 3 + ["astronomy"] * 3 + ["virology"] * 3
    assert balanced_sample(qs, 9, 1, "ood") != a and balanced_sample(qs, None, 0, "ood") == qs


def _q(i: int, answer: int) -> MCQuestion:
    return MCQuestion(f"q{i}", "s", "d", f"Q{i}?", ("a", "b", "c", "d"), answer)


SHARE_KEPT = {"harmonious": 0.95, "incompatible": 0.60, "self_aligning": 0.85}  # questions whose option ranking is kept


def _row(epoch: int, acc: dict[str, float], rank: float) -> dict:
    return {"epoch": epoch, "fit": 1.0, "eval": {s: {"accuracy": a, "change": a - 0.3, "consistency": {
        "rank_correlation": rank, "kl_divergence": 0.1, "same_prediction": 0.5}} for s, a in acc.items()}}


BASE_PROBS = [0.4, 0.3, 0.2, 0.1]


def _answers(acc: dict[str, float], kept: float, n: int = 100) -> dict:
    """Per split, n questions of which the first round(acc·n) are right (sets are paired by question difficulty),
    and a spread-out share `kept` of them keeps the base model's option ranking (rank correlation 1, else −1)."""
    return {s: {f"q{i}": {"correct": i < round(a * n), "probs": BASE_PROBS if (i * 37) % n < round(kept * n)
                          else BASE_PROBS[::-1]} for i in range(n)} for s, a in acc.items()}


def _base_rows(n: int = 100) -> dict:
    """The base model right on the first 30 of each split's questions (accuracy 0.3, as `_row` assumes)."""
    return {s: {f"q{i}": {"correct": i < 30, "probs": BASE_PROBS} for i in range(n)} for s in ("homo", "id", "ood")}


def _runs(gaps_by_seed: list[tuple[float, float]]) -> dict:
    """Per seed: harmonious and self-aligning above incompatible by the given gaps on every split; rankings kept
    on SHARE_KEPT of the questions, so each set's mean rank correlation is 2 · share − 1 (0.9, 0.2, 0.7)."""
    runs = {}
    for seed, (h, s) in enumerate(gaps_by_seed):
        base = {"homo": 0.3, "id": 0.3, "ood": 0.3}
        runs[seed] = {name: {"metrics": [_row(1, {k: v + gap for k, v in base.items()}, 2 * SHARE_KEPT[name] - 1)],
                             "early_stop_epoch": 1, "convergence_epoch": 1,
                             "outcomes": {1: _answers({k: v + gap for k, v in base.items()}, SHARE_KEPT[name])}}
                      for name, gap in (("harmonious", h), ("incompatible", 0.0), ("self_aligning", s))}
    return runs


def test_findings_on_hand_made_numbers():
    from knowtune.studies.self_align.findings import accuracy_table, consistency_table

    runs = _runs([(0.10, 0.05), (0.12, -0.01), (0.08, 0.02)])
    table, cons = accuracy_table(runs, "convergence"), consistency_table(runs, "convergence")
    assert paired_gap(runs, "harmonious", "incompatible", "ood") == pytest.approx({"mean": 0.10, "std": 0.02, "n": 3})
    got = findings(runs, table, cons, base_rows=_base_rows())
    assert len(got) == 7  # no base row without `base`
    # one finding per claim and split, the paper's gap beside this run's, each with its own interval
    homo = got[0]
    assert homo["claim"] == "Harmonious > Incompatible on HOMO" and homo["paper"] == "+11.27 points"
    assert homo["this_run"] == "+10.0 ± 2.0 points at convergence (3 seeds)" and homo["split"] == "homo"
    assert homo["estimate"] == pytest.approx(10) and homo["ci"][0] > 0 and homo["detectable"] > 0
    assert [f["verdict"] for f in got[:3]] == ["reproduced"] * 3
    assert [f["claim"] for f in got[3:6]] == [f"Self-aligning > Incompatible on {x}" for x in ("HOMO", "ID", "OOD")]
    assert got[5]["paper"] == "+6.97 points"
    # self-aligning: +5, −1, +2 points over the seeds, within the spread: neither direction shows
    assert all(f["verdict"] == "inconclusive" and f["ci"][0] < 0 < f["ci"][1] for f in got[3:6])
    # consistency: the more consistent sets gained more; the per-question bootstrap's estimate is the tables' r
    c = got[6]
    cells = [(cons[n][x]["rank_correlation"]["mean"], table[n][x]["change"]["mean"]) for n in table for x in ("homo", "id", "ood")]
    assert c["estimate"] == pytest.approx(np.corrcoef(*np.array(cells).T)[0, 1]) and c["units"] == "Pearson r"
    assert c["verdict"] == "reproduced" and 0 < c["ci"][0] < c["estimate"] and f"Pearson r = {c['estimate']:+.2f} [" in c["this_run"]
    assert not any(f["base_at_chance"] for f in got)
    # without the base model's per-question predictions the correlation has no interval
    bare = findings(runs, table, cons)[6]
    assert bare["verdict"] == "inconclusive" and bare["ci"] is None and "no per-question predictions" in bare["this_run"]

    # the base model against chance: the exact binomial test decides, the estimate is accuracy − 25 with a Wilson interval
    good = chance_check([MCPrediction(_q(i, i % 4), i % 4 if i % 2 else (i + 1) % 4, (0.25,) * 4) for i in range(80)])
    poor = chance_check([MCPrediction(_q(i, i % 4), i % 4 if i % 4 == 0 else (i + 1) % 4, (0.25,) * 4) for i in range(80)])
    never = chance_check([MCPrediction(_q(i, i % 4), i % 4 if i % 10 == 0 else (i + 1) % 4, (0.25,) * 4) for i in range(80)])
    with_base = findings(runs, table, cons, base={"pool": good, "homo": good, "id": poor, "ood": good}, protocol="cloze (x)")
    last = with_base[-1]
    assert last["claim"] == "The base model is above chance (25 %) under cloze (x) scoring" and last["verdict"] == "reproduced"
    assert last["this_run"].startswith("50.0 % of 80 pool questions, one-sided binomial p = ") and "ID 25.0 % (p = " in last["this_run"]
    assert last["p_value"] == pytest.approx(binomial_tail(40, 80)) and "binomial test" in last["rule"]
    assert last["estimate"] == pytest.approx(25) and last["ci"] == pytest.approx([(lo - 0.25) * 100 for lo in
                                                                                 binomtest(40, 80).proportion_ci(method="wilson")])
    at_chance = findings(runs, table, cons, base={"pool": poor, "homo": poor, "id": poor, "ood": poor})[-1]
    assert at_chance["verdict"] == "inconclusive" and at_chance["ci"][0] < 0 < at_chance["ci"][1]
    below = findings(runs, table, cons, base={"pool": never, "homo": never, "id": never, "ood": never})[-1]
    assert below["verdict"] == "contradicted" and below["p_below"] < 0.05
    assert below["p_below"] == pytest.approx(binom.cdf(8, 80, 0.25))

    one = _runs([(-0.05, 0.01)])
    worse = findings(one, accuracy_table(one, "convergence"), consistency_table(one, "convergence"), base_at_chance=True,
                     base_rows=_base_rows())
    assert worse[0]["verdict"] == "contradicted" and "1 seed)" in worse[0]["this_run"]
    assert worse[6]["verdict"] == "contradicted" and worse[6]["ci"][1] < 0  # the most consistent set now scored lowest
    assert all(f["base_at_chance"] and f["this_run"].endswith("no evidence either way") for f in worse)


def test_caveats_say_plainly_when_the_base_model_is_at_chance():
    c_bias = [MCPrediction(_q(i, i % 4), 2, (0.1, 0.1, 0.7, 0.1)) for i in range(80)]
    at_chance = chance_check(c_bias)
    lines = caveats({"pool": at_chance, "homo": at_chance, "id": at_chance, "ood": at_chance}, seeds=1)
    assert "not above chance on the training pool" in lines[0] and "cannot test the paper's claims" in lines[0]
    assert "answers 'C' to 100 %" in lines[1] and any(line.startswith("One seed") for line in lines)
    good = chance_check([MCPrediction(_q(i, i % 4), i % 4, (0.25,) * 4) for i in range(80)])
    assert caveats({"pool": good, "homo": good, "id": good, "ood": good}, seeds=3) == []
