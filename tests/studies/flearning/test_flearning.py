"""The F-Learning study (Ni et al. 2024): λ sweeps and learning-rate grids validated before any
training, the learning-rate rule and the λ choice and claims on hand-made scores, the in-context
prefix of each edit, and the whole study end to end with resume. The update stage itself is tested
in tests/update/test_flearning_update.py."""

from __future__ import annotations

import json

import pytest
from conftest import make_tiny_model

from knowtune import cli
from knowtune.data import load_qa, select_examples
from knowtune.data.edit_records import read_edit_records
from knowtune.data.edits import EditExample
from knowtune.data.formats import qa_prompt, question_block
from knowtune.errors import ConfigError
from knowtune.studies.flearning.findings import analyse_set
from knowtune.studies.flearning.lr import choose_rate
from knowtune.studies.flearning.study import run_study, with_context
from knowtune.studies.registry import get_study
from knowtune.train.examples import SFTExample
from knowtune.train.sft_config import SFTConfig
from knowtune.train.sft_trainer import train_sft
from knowtune.update import flearning
from knowtune.update.flearning_config import METHODS


def study_flearning_command(out, preset: str, overrides: dict) -> dict:
    """`knowtune study flearning` as the CLI runs it: preset plus overrides, validated, then run."""
    study = get_study("flearning")
    return study.run(study.load_config(preset, overrides), out, False)


def update_command(model: str, edits: str, method: str, lam: float, out, overrides: dict) -> None:
    """`knowtune update` through the CLI's own command function."""
    cli.update(model=model, edits=edits, method=method, lam=lam, out=out, set_=[f"{k}={v}" for k, v in overrides.items()])


@pytest.mark.parametrize("value, message", [
    ("[]", "key 'lambdas': .*at least 1 item"),
    ("", "key 'lambdas': Input should be a valid list"),
    ("[0.3, abc]", "key 'lambdas.1': Input should be a valid number"),
    ("[true]", "key 'lambdas.0': .*must be a number, not true"),
    ("[-0.5]", "key 'lambdas.0': .*greater than or equal to 0"),
    ("[.inf]", "key 'lambdas.0'"),
    ("[1, 1.0]", "key 'lambdas': .*appears more than once"),
])
def test_a_bad_lambda_sweep_is_refused_before_any_training(tmp_path, value, message):
    with pytest.raises(ConfigError, match=message):
        study_flearning_command(tmp_path / "study", "quick", {"lambdas": value})
    assert not (tmp_path / "study").exists()
    assert get_study("flearning").load_config("quick", {"lambdas": "0.5"}).lambdas == [0.5]
    with pytest.raises(ConfigError, match="update settings: --lambda: must be a finite number, not nan"):
        update_command("builtin", "unused.jsonl", "flearning-ft", float("nan"), tmp_path / "u", {})


@pytest.mark.parametrize("value, message", [
    ("{full: []}", "the full grid names no learning rate"),
    ("{lora: [1e-4, 1.0e-4]}", "the lora grid repeats a learning rate"),
    ("{full: [-1e-4]}", "key 'lr_grid.full.0': .*greater than 0"),
    ("{full: [.nan]}", "key 'lr_grid.full.0'"),
    ("{adam: [1e-4]}", "key 'lr_grid.adam.\\[key\\]'"),
])
def test_a_bad_learning_rate_grid_is_refused_before_any_training(tmp_path, value, message):
    with pytest.raises(ConfigError, match=message):
        study_flearning_command(tmp_path / "study", "quick", {"lr_grid": value})
    assert not (tmp_path / "study").exists()


def _rate(lr: float, r: float, g: float, loc: float) -> dict:
    return {"lr": lr, "dev": {"reliability": r, "generality": g, "locality": loc, "n": 16}}


def test_learning_rate_rule_on_hand_made_scores():
    grid = [_rate(2e-5, 0.12, 0.10, 0.95), _rate(5e-5, 0.30, 0.20, 0.70), _rate(1e-4, 0.40, 0.30, 0.50),
            _rate(2e-4, 0.60, 0.50, 0.10), {"lr": 5e-4, "diverged": "loss became nan"}]
    assert choose_rate(grid, 0.5) == 1e-4  # the best R/G (35) among rates keeping Locality ≥ 50 %
    assert choose_rate(grid, 0.8) == 2e-5  # only the smallest rate keeps 80 %
    assert choose_rate(grid, 0.99) == 2e-5  # none reaches it: the highest Locality
    tie = [_rate(1e-4, 0.4, 0.4, 0.9), _rate(3e-4, 0.5, 0.3, 0.9)]
    assert choose_rate(tie, 0.5) == 1e-4  # equal R/G mean: the smaller rate
    no_locality = [_rate(1e-4, 0.2, None, None), _rate(3e-4, 0.3, None, None)]
    assert choose_rate(no_locality, 0.5) == 3e-4  # edits without locality or rephrase prompts: Reliability alone
    with pytest.raises(ConfigError, match="every learning rate of the grid diverged"):
        choose_rate([{"lr": 1e-3, "diverged": "nan"}], 0.5)


def test_context_prefixes_each_prompt_with_its_own_relation():
    data = load_qa("builtin")
    facts = {e.id: e for e in data.examples}
    exemplar = data.split("exemplar")[0]
    edit = EditExample("P36/x", "X", question_block(facts["P17/aachen"]), "Peru", ("Germany",),
                       (question_block(facts["P17/aachen"]).replace("Which", "What"),), (question_block(exemplar),),
                       exemplar.answers[:1], relation="P17", prompt_style="qa")
    out = with_context([edit], data, 1, seed=0)[0]
    assert out.prompt.endswith(edit.prompt) and out.prompt.count("Q: ") == 2
    shown = out.locality_prompts[0][: -len(edit.locality_prompts[0])]
    assert shown.startswith("Q: ") and question_block(exemplar) not in shown  # never its own question
    by_question = {question_block(e): e.relation for e in data.examples}
    assert by_question[shown.split("\nA:")[0] + "\nA:"] == exemplar.relation


def _taught_model(tiny_tokenizer, tmp_path, facts) -> str:
    """A tiny model that has been taught these facts, saved as a model directory."""
    model = make_tiny_model(tiny_tokenizer, seed=0)
    taught = [SFTExample(f.id, qa_prompt(f.question), f" {f.answers[0]}\n") for f in facts]
    train_sft(model, tiny_tokenizer, taught, SFTConfig(epochs=40, learning_rate=3e-3, batch_size=8, checkpoint_every_epoch=False,
              save_weights=False), tmp_path / "teach", progress=False)
    model.save_pretrained(tmp_path / "model")
    tiny_tokenizer.save_pretrained(tmp_path / "model")
    return str(tmp_path / "model")


def test_study_end_to_end_and_resume(tiny_tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("KNOWTUNE_CACHE", str(tmp_path / "cache"))
    data = load_qa("builtin")
    pool = select_examples(data, "all", "P246,P36", 16)
    model_dir = _taught_model(tiny_tokenizer, tmp_path, pool)  # a random model knows nothing: teach it the pool
    overrides = {"model": model_dir, "relations": "[P246, P36]", "probe_pool": "16", "n_edits": "6", "dev_size": "2",
                 "lambdas": "[0.5, 2]", "probe.n_exemplar_sets": "2", "probe.n_samples": "2", "probe.k_shot": "1",
                 "probe.max_new_tokens": "6", "max_new_tokens": "6", "full.epochs": "1", "full.learning_rate": "3e-3",
                 "full.batch_size": "4", "lora.epochs": "1", "lora.learning_rate": "3e-3", "lora.batch_size": "4",
                 "lora.lora_r": "4", "lora.lora_alpha": "8", "lr_grid": "{full: [3e-3, 1e-3], lora: [3e-3]}"}
    results = study_flearning_command(tmp_path / "study", "quick", overrides)
    assert (tmp_path / "study" / "report.html").read_text().startswith("<!doctype html>")
    saved = json.loads((tmp_path / "study" / "results.json").read_text())
    agg = saved["sets"]["builtin"]
    assert [r["method"] for r in agg["table"]] == list(METHODS)
    assert agg["sizes"]["dev"]["mean"] == 2 and agg["sizes"]["test"]["mean"] == 4
    for row in agg["table"]:
        assert (row["lam"] in (0.5, 2.0)) == METHODS[row["method"]].uses_lambda
        assert set(row["test"]) == {"token", "exact"} and set(row["test"]["token"]) == {"reliability", "generality", "locality"}
    assert set(agg["curves"]) == {"flearning-ft", "flearning-lora", "lora-ft"}
    assert set(agg["knowledge"]) == {"old", "new"} and agg["knowledge"]["old"]["exact_match"]["n"] == 1
    assert len(saved["findings"]) == 3 and all(set(f["verdict_by_protocol"]) == {"token", "exact"} for f in saved["findings"])
    for f in saved["findings"]:  # 4 test edits per seed: intervals exist, and are wide
        assert f["verdict"] in ("reproduced", "contradicted", "inconclusive") and f["rule"]
        assert f["estimate"] is None or (f["ci"][0] <= f["estimate"] <= f["ci"][1] and f["detectable"] >= 0)
    assert saved["schema_version"] == 2 and saved["bootstrap"]["replicates"] > 0
    seed_dir = tmp_path / "study" / "builtin" / "seed0"
    assert sorted(p.name for p in (seed_dir / "forget").iterdir()) == ["full", "lora"]
    assert len(list((seed_dir / "runs").iterdir())) == 2 + 3 * 2
    choice = agg["lr_choice"]
    assert [r["lr"] for r in choice["full"]["grid"]] == [3e-3, 1e-3] and choice["lora"]["chosen"] == 3e-3
    assert all(r["dev"]["n"] == 2 and len(r["fit_k_new"]) == 1 for c in choice.values() for r in c["grid"])
    assert choice["full"]["chosen"] == choose_rate(choice["full"]["grid"], 0.5)
    manifest = json.loads((seed_dir / "manifest.json").read_text())  # every run learned at the chosen rates
    assert agg["learning_rates"] == {"full": choice["full"]["chosen"], "lora": 3e-3} == {
        f: manifest[f]["learning_rate"] for f in ("full", "lora")}
    edits = read_edit_records(seed_dir / "edits.jsonl").examples
    assert sum(e.split == "dev" for e in edits) == 2 and all(e.prompt.count("Q: ") == 2 for e in edits)

    def no_training(*a, **k):
        raise AssertionError("a completed run was trained again")

    monkeypatch.setattr(flearning, "train_sft", no_training)
    again = run_study(get_study("flearning").load_config("quick", overrides), tmp_path / "study",
                                progress=False)
    assert again["sets"]["builtin"]["table"] == results["sets"]["builtin"]["table"]


def _scores(r: float, g: float, loc: float) -> dict:
    """A run whose every edit scores r, g and loc (the first edit has no locality prompt): paired differences
    are then the same on every edit, and their intervals have no width."""
    part = {"reliability": r, "generality": g, "locality": loc, "n": 4}
    per_edit = [{"id": f"e{i}", "reliability": r, "generality": g, "locality": None if i == 0 else loc} for i in range(96)]
    return {"scores": {p: {"dev": part, "test": part} for p in ("token", "exact")}, "per_edit": {p: per_edit for p in ("token", "exact")}}


def test_lambda_choice_and_claims_on_hand_made_scores():
    cfg = get_study("flearning").load_config("quick", {"lambdas": "[0.3, 1, 3]"})
    runs = {"ft": _scores(0.50, 0.40, 0.90), "lora": _scores(0.30, 0.30, 0.95),
            "flearning-ft_lam0.3": _scores(0.55, 0.45, 0.89), "flearning-ft_lam1": _scores(0.60, 0.50, 0.80),
            "flearning-ft_lam3": _scores(0.60, 0.50, 0.70),  # ties with λ = 1 on R and G: the smaller λ wins
            "flearning-lora_lam0.3": _scores(0.35, 0.30, 0.95), "flearning-lora_lam1": _scores(0.20, 0.20, 0.95),
            "flearning-lora_lam3": {"diverged": "loss became nan"},
            "lora-ft_lam0.3": _scores(0.59, 0.49, 0.88), "lora-ft_lam1": _scores(0.10, 0.10, 0.50), "lora-ft_lam3": _scores(0, 0, 0)}
    agg = analyse_set(cfg, {0: {"runs": runs, "knowledge": {w: {"exact_match": 0.5, "token_accuracy": 0.5} for w in ("old", "new")},
                                "sizes": {"dev": 16, "test": 80}, "test_ids": [f"e{i}" for i in range(16, 96)]}})
    chosen = {m: s["chosen"] for m, s in agg["lambda_selection"].items()}
    assert chosen == {"flearning-ft": 1.0, "flearning-lora": 0.3, "lora-ft": 0.3}
    verdicts = [f["verdict_by_protocol"]["token"] for f in agg["findings"]]
    # F-Learning-FT (λ 1): R +10, G +10 but L −10, below −2 points → contradicted; F-Learning-LoRA (λ 0.3): G +0, neither
    # above nor below 0 → inconclusive; LoRA−FT (λ 0.3) trails F-Learning-FT by 1 point on R and G, above −2 → reproduced
    assert verdicts == ["contradicted", "inconclusive", "reproduced"]
    first = agg["findings"][0]
    assert "R +10.0 [+10.0, +10.0], G +10.0 [+10.0, +10.0], L -10.0 [-10.0, -10.0]" in first["this_run"]
    assert (first["estimate"], first["ci"], first["verdict"]) == (pytest.approx(-10), [pytest.approx(-10)] * 2, "contradicted")
    assert [p["label"] for p in first["parts"]] == ["R (token)", "G (token)", "L (token)"] and first["parts"][2]["threshold"] == -2
