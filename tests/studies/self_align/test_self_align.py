"""The self-aligning study (Ren et al. 2024): the recipe end to end on a tiny random model and MMLU-layout
CSVs (full and LoRA, resume, a mismatched directory, an empty set), its findings logic on hand-made
numbers, the chance check, `knowtune probe-mc`, and the optional lm-evaluation-harness path."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from conftest import SHARED_DATA, make_tiny_model

from knowtune import cli
from knowtune.data.multiple_choice import MCQuestion, load_mmlu
from knowtune.errors import ConfigError, KnowtuneError
from knowtune.evaluate.multiple_choice import binomial_tail, chance_check
from knowtune.probe.multiple_choice import (
    MCPrediction,
    build_mc_prompt,
    letter_logits,
    predictions_from_logits,
)
from knowtune.studies.registry import get_study
from knowtune.studies.self_align.findings import caveats, findings, paired_gap
from knowtune.studies.self_align.study import (
    balanced_sample,
    run_study,
    study_questions,
    training_sets,
)

# anatomy and virology share MMLU's "other" category (ID); astronomy is STEM (OOD).
SUBJECTS = {"anatomy": 40, "virology": 8, "astronomy": 8}


def write_mmlu(root) -> None:
    """Original-layout CSVs: a dev split of 5 exemplars, a small val split and a test split per subject."""
    root.mkdir(parents=True, exist_ok=True)
    for subject, n_test in SUBJECTS.items():
        for split, n in (("dev", 5), ("val", 4), ("test", n_test)):
            with open(root / f"{subject}_{split}.csv", "w", newline="", encoding="utf-8") as f:
                writer = csv.writer(f)
                for i in range(n):
                    writer.writerow([f"Which is {subject} {split} {i}?", f"Paris {i}", "Lyon", f"Au {i % 3}", "Nice", "ABCD"[i % 4]])


@pytest.fixture(scope="module")
def study_inputs(tiny_tokenizer, tmp_path_factory):
    root = tmp_path_factory.mktemp("selfalign")
    write_mmlu(root / "mmlu")
    model = make_tiny_model(tiny_tokenizer, seed=3, sharpness=30.0)
    model.save_pretrained(root / "model")
    tiny_tokenizer.save_pretrained(root / "model")
    return root


def overrides(root, **extra: str) -> dict[str, str]:
    base = {
        "model": str(root / "model"), "data": str(root / "mmlu"), "train_subjects": "[anatomy]",
        "pool_split": "test", "test_split": "test", "dev_split": "val", "pool_size": "null", "size": "null",
        "homo_size": "8", "id_size": "6", "ood_size": "6", "dev_size": "null", "k_shot": "2", "batch_size": "8",
        "train.epochs": "2", "train.learning_rate": "1e-3", "train.batch_size": "4",
    }
    return {**base, **extra}


def test_study_end_to_end_resumes_and_refuses_other_settings(study_inputs, tmp_path, monkeypatch):
    monkeypatch.setenv("KNOWTUNE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "study"
    study = get_study("self-align")
    results = study.run(study.load_config("quick", overrides(study_inputs)), out, False)
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
    assert all(f["reproduced"] in (True, False, None) for f in saved["findings"])
    run = out / "runs" / "seed0" / "harmonious"
    assert sorted(p.name for p in (run / "predictions").iterdir()) == ["epoch1.jsonl", "epoch2.jsonl"]

    # re-running resumes: nothing is trained or probed again
    stamp = (run / "predictions" / "epoch2.jsonl").stat().st_mtime_ns
    again = run_study(get_study("self-align").load_config("quick", overrides(study_inputs)), out, False)
    assert (run / "predictions" / "epoch2.jsonl").stat().st_mtime_ns == stamp
    assert again["table"] == results["table"]
    with pytest.raises(KnowtuneError, match="other settings"):
        run_study(get_study("self-align").load_config("quick",
                                              overrides(study_inputs, k_shot="1")), out, False)


def test_lora_and_mixtures(study_inputs, tmp_path, monkeypatch):
    monkeypatch.setenv("KNOWTUNE_CACHE", str(tmp_path / "cache"))
    cfg = get_study("self-align").load_config("quick", overrides(
        study_inputs, sets="[incompatible]", mixture_shares="[0.5]", dev_split="null", **{"train.method": "lora", "train.epochs": "1"}))
    results = run_study(cfg, tmp_path / "lora", progress=False)
    assert set(results["table"]["convergence"]) == {"incompatible", "self_aligned-0.5"}
    mix = results["sets"]["seed0"]["self_aligned-0.5"]
    assert mix["label_source"]["model"] == round(mix["size"] / 2)
    # without a dev set EARLY_STOP is the last epoch, never picked on a test set
    assert all(r["early_stop_epoch"] == r["convergence_epoch"] for r in results["runs"]["seed0"].values())
    assert [f["reproduced"] for f in results["findings"][:2]] == [None, None]  # harmonious / self-aligning not trained


def test_bad_requests_stop_with_a_message(study_inputs):
    data = load_mmlu(study_inputs / "mmlu")
    cfg = get_study("self-align").load_config("quick", overrides(study_inputs))
    wrong = [MCPrediction(q, (q.answer + 1) % 4, (0.25,) * 4) for q in data.split("test") if q.subject == "anatomy"]
    with pytest.raises(KnowtuneError, match="harmonious set is empty"):
        training_sets(cfg, data, wrong, seed=0)
    right = [MCPrediction(q, q.answer, (0.25,) * 4) for q in data.split("test") if q.subject == "anatomy"]
    with pytest.raises(KnowtuneError, match="incompatible and self-aligning sets are empty"):
        training_sets(cfg, data, right, seed=0)
    for key, value, message in (("train_subjects", "[nope]", "unknown training subjects"),
                                ("dev_split", "train", "split 'train' is not in"),
                                ("train_subjects", "[anatomy, virology]", "ID test set is empty")):
        bad = get_study("self-align").load_config("quick", overrides(study_inputs, **{key: value}))
        with pytest.raises(KnowtuneError, match=message):
            study_questions(bad, data)
    with pytest.raises(ConfigError, match="unknown sets"):
        get_study("self-align").load_config("quick", {"sets": "[harmonic]"})


def test_balanced_sample_is_deterministic_and_spreads_over_subjects(study_inputs):
    data = load_mmlu(study_inputs / "mmlu")
    qs = data.split("test")
    a = balanced_sample(qs, 9, 0, "ood")
    assert a == balanced_sample(list(reversed(qs)), 9, 0, "ood") and len({q.id for q in a}) == 9
    assert sorted(q.subject for q in a) == ["anatomy"] * 3 + ["astronomy"] * 3 + ["virology"] * 3
    assert balanced_sample(qs, 9, 1, "ood") != a and balanced_sample(qs, None, 0, "ood") == qs


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


def _row(epoch: int, acc: dict[str, float], rank: float) -> dict:
    return {"epoch": epoch, "fit": 1.0, "eval": {s: {"accuracy": a, "change": a - 0.3, "consistency": {
        "rank_correlation": rank, "kl_divergence": 0.1, "same_prediction": 0.5}} for s, a in acc.items()}}


def _runs(gaps_by_seed: list[tuple[float, float]]) -> dict:
    """Per seed: harmonious and self-aligning above incompatible by the given gaps on every split."""
    runs = {}
    for seed, (h, s) in enumerate(gaps_by_seed):
        base = {"homo": 0.3, "id": 0.3, "ood": 0.3}
        runs[seed] = {name: {"metrics": [_row(1, {k: v + gap for k, v in base.items()}, rank)], "early_stop_epoch": 1,
                             "convergence_epoch": 1}
                      for name, gap, rank in (("harmonious", h, 0.9), ("incompatible", 0.0, 0.2), ("self_aligning", s, 0.7))}
    return runs


def test_findings_on_hand_made_numbers():
    from knowtune.studies.self_align.findings import accuracy_table, consistency_table

    runs = _runs([(0.10, 0.05), (0.12, -0.01), (0.08, 0.02)])
    table, cons = accuracy_table(runs, "convergence"), consistency_table(runs, "convergence")
    assert paired_gap(runs, "harmonious", "incompatible", "ood") == pytest.approx({"mean": 0.10, "std": 0.02, "n": 3})
    got = findings(runs, table, cons)
    assert got[0]["reproduced"] is True and got[0]["per_split"] == {"homo": True, "id": True, "ood": True}
    assert "HOMO +10.0 ± 2.0" in got[0]["this_run"] and got[0]["paper"].startswith("+11.27 HOMO / +14.58 ID / +14.57 OOD")
    assert got[1]["reproduced"] is True and "within one std over seeds on HOMO, ID, OOD" in got[1]["this_run"]
    assert got[2]["reproduced"] is True and "Pearson r = +" in got[2]["this_run"]  # more consistent sets scored higher
    assert not any(f["base_at_chance"] for f in got)
    one = _runs([(-0.05, 0.01)])
    worse = findings(one, accuracy_table(one, "convergence"), consistency_table(one, "convergence"), base_at_chance=True)
    assert worse[0]["reproduced"] is False and worse[0]["per_split"]["homo"] is False and "1 seed)" in worse[0]["this_run"]
    assert worse[2]["reproduced"] is False  # the most consistent set (harmonious) now scored lowest
    assert all(f["base_at_chance"] and f["this_run"].endswith("no evidence either way") for f in worse)


def test_caveats_say_plainly_when_the_base_model_is_at_chance():
    c_bias = [MCPrediction(_q(i, i % 4), 2, (0.1, 0.1, 0.7, 0.1)) for i in range(80)]
    at_chance = chance_check(c_bias)
    lines = caveats({"pool": at_chance, "homo": at_chance, "id": at_chance, "ood": at_chance}, seeds=1)
    assert "not above chance on the training pool" in lines[0] and "cannot test the paper's claims" in lines[0]
    assert "answers 'C' to 100 %" in lines[1] and any(line.startswith("One seed") for line in lines)
    good = chance_check([MCPrediction(_q(i, i % 4), i % 4, (0.25,) * 4) for i in range(80)])
    assert caveats({"pool": good, "homo": good, "id": good, "ood": good}, seeds=3) == []


def test_probe_mc_command(study_inputs, tmp_path):
    cli.probe_mc(model=str(study_inputs / "model"), data=str(study_inputs / "mmlu"), out=tmp_path / "probe", k_shot=2, seed=0)
    summary = json.loads((tmp_path / "probe" / "summary.json").read_text())
    assert summary["overall"]["n"] == sum(SUBJECTS.values()) == summary["chance_check"]["n"]
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
def test_lm_eval_path_agrees_with_the_letter_logit_probe_on_its_own_prompts(source, study_inputs, tiny_tokenizer, tmp_path):
    pytest.importorskip("lm_eval", reason="lm-evaluation-harness is optional: pip install lm-eval")
    from knowtune.evaluate.harness import lm_eval_mc

    if source == "tiny CSVs":
        data, k = load_mmlu(study_inputs / "mmlu"), 2
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


def test_lm_eval_missing_is_a_clear_error(monkeypatch, study_inputs, tiny_tokenizer):
    import builtins

    from knowtune.evaluate import harness

    real_import = builtins.__import__

    def no_lm_eval(name, *args, **kwargs):
        if name == "lm_eval" or name.startswith("lm_eval."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_lm_eval)
    data = load_mmlu(study_inputs / "mmlu")
    with pytest.raises(KnowtuneError, match="pip install lm-eval"):
        harness.lm_eval_mc(make_tiny_model(tiny_tokenizer), tiny_tokenizer, data, data.split("test")[:2])
