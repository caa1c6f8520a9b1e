"""The self-aligning study (Ren et al. 2024): the recipe end to end on a tiny random model and MMLU-layout
CSVs (full and LoRA, resume, a mismatched directory, an empty set), its findings logic on hand-made
numbers, and its caveats when the base model is at chance. The multiple-choice evaluation it uses (the
chance check, `knowtune probe-mc`, `knowtune evaluate --mc`, lm-evaluation-harness) is tested in
tests/evaluate/test_multiple_choice_eval.py."""

from __future__ import annotations

import json

import pytest

from knowtune.data.multiple_choice import MCQuestion, load_mmlu
from knowtune.errors import ConfigError, KnowtuneError
from knowtune.evaluate.multiple_choice import chance_check
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
    assert [f["claim"].split()[0] for f in saved["findings"]] == ["Harmonious", "Self-aligning", "Sets"]
    assert all(f["verdict"] in ("reproduced", "contradicted", "inconclusive") and f["rule"] for f in saved["findings"])
    assert all(f["ci"] is not None and f["ci"][0] <= f["estimate"] <= f["ci"][1] for f in saved["findings"][:2])
    assert saved["schema_version"] == 2 and "outcomes" not in saved["runs"]["seed0"]["harmonious"]
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
        mmlu_inputs, sets="[incompatible]", mixture_shares="[0.5]", dev_split="null", **{"train.method": "lora", "train.epochs": "1"}))
    results = run_study(cfg, tmp_path / "lora", progress=False)
    assert set(results["table"]["convergence"]) == {"incompatible", "self_aligned-0.5"}
    mix = results["sets"]["seed0"]["self_aligned-0.5"]
    assert mix["label_source"]["model"] == round(mix["size"] / 2)
    # without a dev set EARLY_STOP is the last epoch, never picked on a test set
    assert all(r["early_stop_epoch"] == r["convergence_epoch"] for r in results["runs"]["seed0"].values())
    # harmonious / self-aligning not trained
    assert [(f["verdict"], f["estimate"]) for f in results["findings"][:2]] == [("inconclusive", None)] * 2


def test_bad_requests_stop_with_a_message(mmlu_inputs):
    data = load_mmlu(mmlu_inputs / "mmlu")
    cfg = get_study("self-align").load_config("quick", overrides(mmlu_inputs))
    wrong = [MCPrediction(q, (q.answer + 1) % 4, (0.25,) * 4) for q in data.split("test") if q.subject == "anatomy"]
    with pytest.raises(KnowtuneError, match="harmonious set is empty"):
        training_sets(cfg, data, wrong, seed=0)
    right = [MCPrediction(q, q.answer, (0.25,) * 4) for q in data.split("test") if q.subject == "anatomy"]
    with pytest.raises(KnowtuneError, match="incompatible and self-aligning sets are empty"):
        training_sets(cfg, data, right, seed=0)
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


def _row(epoch: int, acc: dict[str, float], rank: float) -> dict:
    return {"epoch": epoch, "fit": 1.0, "eval": {s: {"accuracy": a, "change": a - 0.3, "consistency": {
        "rank_correlation": rank, "kl_divergence": 0.1, "same_prediction": 0.5}} for s, a in acc.items()}}


def _answers(acc: dict[str, float], n: int = 100) -> dict:
    """Per split, n questions of which the first round(acc·n) are right: sets are paired by question difficulty."""
    return {s: {f"q{i}": {"correct": i < round(a * n)} for i in range(n)} for s, a in acc.items()}


def _runs(gaps_by_seed: list[tuple[float, float]]) -> dict:
    """Per seed: harmonious and self-aligning above incompatible by the given gaps on every split."""
    runs = {}
    for seed, (h, s) in enumerate(gaps_by_seed):
        base = {"homo": 0.3, "id": 0.3, "ood": 0.3}
        runs[seed] = {name: {"metrics": [_row(1, {k: v + gap for k, v in base.items()}, rank)], "early_stop_epoch": 1,
                             "convergence_epoch": 1, "outcomes": {1: _answers({k: v + gap for k, v in base.items()})}}
                      for name, gap, rank in (("harmonious", h, 0.9), ("incompatible", 0.0, 0.2), ("self_aligning", s, 0.7))}
    return runs


def test_findings_on_hand_made_numbers():
    from knowtune.studies.self_align.findings import accuracy_table, consistency_table

    runs = _runs([(0.10, 0.05), (0.12, -0.01), (0.08, 0.02)])
    table, cons = accuracy_table(runs, "convergence"), consistency_table(runs, "convergence")
    assert paired_gap(runs, "harmonious", "incompatible", "ood") == pytest.approx({"mean": 0.10, "std": 0.02, "n": 3})
    got = findings(runs, table, cons)
    assert got[0]["verdict"] == "reproduced" and got[0]["verdict_by_split"] == {"homo": "reproduced", "id": "reproduced",
                                                                                 "ood": "reproduced"}
    assert "HOMO +10.0 ± 2.0 [" in got[0]["this_run"] and got[0]["paper"].startswith("+11.27 HOMO / +14.58 ID / +14.57 OOD")
    assert got[0]["estimate"] == pytest.approx(10) and got[0]["ci"][0] > 0
    # self-aligning: +5, −1, +2 points over the seeds, within the spread: neither direction shows
    assert got[1]["verdict"] == "inconclusive" and got[1]["ci"][0] < 0 < got[1]["ci"][1]
    assert got[2]["verdict"] == "inconclusive" and "Pearson r = +" in got[2]["this_run"]  # no interval for r yet
    assert not any(f["base_at_chance"] for f in got)
    one = _runs([(-0.05, 0.01)])
    worse = findings(one, accuracy_table(one, "convergence"), consistency_table(one, "convergence"), base_at_chance=True)
    assert worse[0]["verdict"] == "contradicted" and worse[0]["verdict_by_split"]["homo"] == "contradicted"
    assert "1 seed)" in worse[0]["this_run"]
    assert all(f["base_at_chance"] and f["this_run"].endswith("no evidence either way") for f in worse)


def test_caveats_say_plainly_when_the_base_model_is_at_chance():
    c_bias = [MCPrediction(_q(i, i % 4), 2, (0.1, 0.1, 0.7, 0.1)) for i in range(80)]
    at_chance = chance_check(c_bias)
    lines = caveats({"pool": at_chance, "homo": at_chance, "id": at_chance, "ood": at_chance}, seeds=1)
    assert "not above chance on the training pool" in lines[0] and "cannot test the paper's claims" in lines[0]
    assert "answers 'C' to 100 %" in lines[1] and any(line.startswith("One seed") for line in lines)
    good = chance_check([MCPrediction(_q(i, i % 4), i % 4, (0.25,) * 4) for i in range(80)])
    assert caveats({"pool": good, "homo": good, "id": good, "ood": good}, seeds=3) == []
