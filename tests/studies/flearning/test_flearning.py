"""F-Learning on a tiny random model: λ = 0 is plain fine-tuning, the forget step is exactly θ − λΔ,
the forgetting delta is trained once and cached, λ sweeps are validated before any training, edit
files round-trip, and the whole study and the CLI glue run end to end."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_tiny_model

from knowtune import cli
from knowtune.data import load_qa, select_examples
from knowtune.data.edit_records import read_edit_records, write_edit_records
from knowtune.data.edits import EditExample
from knowtune.data.formats import qa_prompt, question_block
from knowtune.errors import ConfigError, DataError, KnowtuneError
from knowtune.evaluate.edit_metrics import (
    edit_scores,
    evaluate_edited_model,
    pre_edit_reference,
)
from knowtune.studies.flearning.findings import analyse_set
from knowtune.studies.flearning.lr import choose_rate
from knowtune.studies.flearning.study import run_study, with_context
from knowtune.studies.registry import get_study
from knowtune.train.sft_config import SFTConfig
from knowtune.train.sft_trainer import SFTExample, train_sft
from knowtune.update import flearning
from knowtune.update.flearning import edit_sft_examples, forget_delta, forget_then_learn
from knowtune.update.flearning_config import METHODS, FamilySettings


def study_flearning_command(out, preset: str, overrides: dict) -> dict:
    """`knowtune study flearning` as the CLI runs it: preset plus overrides, validated, then run."""
    study = get_study("flearning")
    return study.run(study.load_config(preset, overrides), out, False)


def update_command(model: str, edits: str, method: str, lam: float, out, overrides: dict) -> None:
    """`knowtune update` through the CLI's own command function."""
    cli.update(model=model, edits=edits, method=method, lam=lam, out=out, set_=[f"{k}={v}" for k, v in overrides.items()])


def evaluate_edits_command(model: str, edits: str, protocol: str, reference_model: str, out) -> None:
    """`knowtune evaluate --edits` through the CLI's own command function."""
    cli.evaluate(model=model, records=None, edits=edits, mc=None, protocol=protocol, reference_model=reference_model,
                 k_shot=5, seed=0, out=out, batch_size=32)


EDITS = [
    EditExample("fr", "France", "Q: What is the capital of France?\nA:", "Lima", ("Paris",), ("Q: France has which capital?\nA:",),
                ("Q: What is the chemical symbol of gold?\nA:",), ("Au",), prompt_style="qa"),
    EditExample("br", "Brazil", "Q: What is the official language of Brazil?\nA:", "French", ("Portuguese",),
                ("Q: Which language is spoken in Brazil?\nA:",), ("Q: Which country is Lyon located in?\nA:",), ("France",),
                prompt_style="qa"),
    EditExample("pe", "Peru", "Q: What is the capital of Peru?\nA:", "Paris", ("Lima",), ("Q: Peru has which capital?\nA:",),
                ("Q: What is the capital of Chad?\nA:",), ("N'Djamena",), prompt_style="qa"),
]


def _cfg(**kw) -> SFTConfig:
    return SFTConfig(**{"epochs": 2, "learning_rate": 3e-3, "batch_size": 2, "checkpoint_every_epoch": False,
                        "save_weights": False, **kw})


def _families(**kw) -> FamilySettings:
    return FamilySettings(full=_cfg(method="full", **kw), lora=_cfg(method="lora", lora_r=4, lora_alpha=8, **kw))


FAMILIES = _families()


def test_training_sets_are_k_old_and_k_new_with_the_answer_newline():
    old, new = edit_sft_examples(EDITS, "old"), edit_sft_examples(EDITS, "new")
    assert [(e.prompt, e.target) for e in old[:1]] == [(EDITS[0].prompt, " Paris\n")]
    assert [e.target for e in new] == [" Lima\n", " French\n", " Paris\n"]
    completion = EditExample("cf/1", "BBC One", "BBC One, by", "Sega", ("BBC",), (), (), ())
    assert edit_sft_examples([completion], "new")[0].target == " Sega"  # a completion has no answer line to end


@pytest.mark.parametrize("fl, base", [("flearning-ft", "ft"), ("flearning-lora", "lora")])
def test_lambda_zero_is_plain_fine_tuning(tiny_tokenizer, tmp_path, fl, base):
    delta = forget_delta(make_tiny_model(tiny_tokenizer), tiny_tokenizer, EDITS, FAMILIES.sft(METHODS[fl].forget),
                         tmp_path / "forget", progress=False)
    assert delta and all(t.abs().sum() > 0 for t in delta.values())
    a, b = make_tiny_model(tiny_tokenizer), make_tiny_model(tiny_tokenizer)
    ra = forget_then_learn(a, tiny_tokenizer, EDITS, METHODS[fl], 0.0, delta, FAMILIES, tmp_path / "fl", progress=False)
    rb = forget_then_learn(b, tiny_tokenizer, EDITS, METHODS[base], None, None, FAMILIES, tmp_path / "base", progress=False)
    sa, sb = ra.model.state_dict(), rb.model.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[n], sb[n]) for n in sa)
    assert ra.metrics == rb.metrics


@pytest.mark.parametrize("method", ["ft", "lora"])
def test_a_vanishing_learning_rate_leaves_locality_whole(tiny_tokenizer, tmp_path, method):
    # Locality measures what training changed, not what the training machinery did to the model
    # (modes, adapters, dtypes): an update too small to move any argmax must score 100 %.
    ref = pre_edit_reference(make_tiny_model(tiny_tokenizer), tiny_tokenizer, EDITS, "token")
    still = forget_then_learn(make_tiny_model(tiny_tokenizer), tiny_tokenizer, EDITS, METHODS[method], None, None,
                              _families(learning_rate=1e-12), tmp_path / "still", progress=False)
    assert edit_scores(still.model, tiny_tokenizer, EDITS, ref).locality == 1.0
    moved = forget_then_learn(make_tiny_model(tiny_tokenizer), tiny_tokenizer, EDITS, METHODS[method], None, None,
                              _families(learning_rate=3e-2, epochs=4), tmp_path / "moved", progress=False)
    assert edit_scores(moved.model, tiny_tokenizer, EDITS, ref).locality < 1.0  # a real update does move it


@pytest.mark.parametrize("family", ["full", "lora"])
def test_forget_step_is_theta_minus_lambda_delta(tiny_tokenizer, tmp_path, monkeypatch, family):
    base = make_tiny_model(tiny_tokenizer)
    theta = {n: t.clone() for n, t in base.state_dict().items()}
    tuned = make_tiny_model(tiny_tokenizer)
    delta = forget_delta(tuned, tiny_tokenizer, EDITS, FAMILIES.sft(family), tmp_path / "forget", progress=False)
    if family == "full":  # Δ = FT(θ, K_old) − θ, tensor by tensor
        assert delta.keys() == theta.keys()
        assert all(torch.equal(delta[n], tuned.state_dict()[n] - theta[n]) for n in theta)
    else:  # the merged LoRA update covers the adapted projections only
        assert delta and all(n.endswith("proj.weight") for n in delta)
    seen = {}

    def capture(model, tokenizer, examples, cfg, out, **kw):  # the learning step sees θ′
        seen.update({n: t.clone() for n, t in model.state_dict().items()})
        seen["targets"] = [e.target for e in examples]

    monkeypatch.setattr(flearning, "train_sft", capture)
    method = METHODS["flearning-ft" if family == "full" else "lora-ft"]
    forget_then_learn(base, tiny_tokenizer, EDITS, method, 0.7, delta, FAMILIES, tmp_path / "run", progress=False)
    for n, t in theta.items():
        want = t - 0.7 * delta[n] if n in delta else t
        assert torch.equal(seen[n], want), n
    assert seen["targets"] == [" Lima\n", " French\n", " Paris\n"]


def test_forget_delta_is_trained_once_and_cached(tiny_tokenizer, tmp_path, monkeypatch):
    first = forget_delta(make_tiny_model(tiny_tokenizer), tiny_tokenizer, EDITS, FAMILIES.full, tmp_path, progress=False)
    info = json.loads((tmp_path / "delta.json").read_text())
    assert info["method"] == "full" and info["norm"] > 0 and len(info["fit_k_old"]) == 2

    def no_training(*a, **k):
        raise AssertionError("trained again")

    monkeypatch.setattr(flearning, "train_sft", no_training)
    again = forget_delta(make_tiny_model(tiny_tokenizer), tiny_tokenizer, EDITS, FAMILIES.full, tmp_path, progress=False)
    assert all(torch.equal(first[n], again[n]) for n in first)
    with pytest.raises(KnowtuneError, match="other edits or settings"):
        forget_delta(make_tiny_model(tiny_tokenizer), tiny_tokenizer, EDITS[:2], FAMILIES.full, tmp_path, progress=False)


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
    with pytest.raises(ConfigError, match="update settings: key 'lam'"):
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


def test_edit_records_round_trip_and_name_the_bad_field(tmp_path):
    write_edit_records(tmp_path / "edits.jsonl", EDITS)
    assert read_edit_records(tmp_path / "edits.jsonl").examples == EDITS
    rows = [json.loads(line) for line in (tmp_path / "edits.jsonl").read_text().splitlines()]
    del rows[1]["target_new"]
    (tmp_path / "bad.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"bad.jsonl, record br, field 'target_new': missing"):
        read_edit_records(tmp_path / "bad.jsonl")


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
    assert len(saved["findings"]) == 3 and all(set(f["reproduced_by_protocol"]) == {"token", "exact"} for f in saved["findings"])
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


def test_update_and_evaluate_commands(tiny_tokenizer, tmp_path):
    model_dir = str(tmp_path / "base")
    model = make_tiny_model(tiny_tokenizer)
    model.save_pretrained(model_dir)
    tiny_tokenizer.save_pretrained(model_dir)
    write_edit_records(tmp_path / "edits.jsonl", EDITS)
    overrides = {"lora.epochs": "2", "lora.learning_rate": "3e-3", "lora.lora_r": "4", "lora.lora_alpha": "8",
                 "lora.checkpoint_every_epoch": "false", "max_new_tokens": "6"}
    update_command(model_dir, str(tmp_path / "edits.jsonl"), "flearning-lora", 0.5, tmp_path / "upd", overrides)
    summary = json.loads((tmp_path / "upd" / "update.json").read_text())
    assert summary["method"] == "F-Learning-LoRA" and summary["lam"] == 0.5 and len(summary["fit_k_new"]) == 2
    assert set(summary["knowledge_before"]) == {"old", "new"} and (tmp_path / "upd" / "forget" / "lora" / "delta.safetensors").exists()
    with pytest.raises(KnowtuneError, match="holds an update with a different"):
        update_command(model_dir, str(tmp_path / "edits.jsonl"), "flearning-lora", 1.0, tmp_path / "upd", overrides)
    with pytest.raises(ConfigError, match="key 'method'"):
        update_command(model_dir, str(tmp_path / "edits.jsonl"), "rome", 1.0, tmp_path / "x", {})
    evaluate_edits_command(summary["edited_model"], str(tmp_path / "edits.jsonl"), "both", model_dir, tmp_path / "ev.json")
    result = json.loads((tmp_path / "ev.json").read_text())
    assert set(result["scores"]) == {"token", "exact"} and result["n_edits"] == 3
    assert all(result["scores"][p]["protocol"] == p for p in ("token", "exact"))
    assert result["per_edit"]["token"][0]["id"] == "fr"
    same = evaluate_edited_model(model_dir, str(tmp_path / "edits.jsonl"), ["token"], model_dir)
    assert same["scores"]["token"]["locality"] == 1.0  # the reference model itself changes nothing
    with pytest.raises(ConfigError, match="unknown edit-metric protocol"):
        evaluate_edits_command(model_dir, str(tmp_path / "edits.jsonl"), "bleu", model_dir, None)


def _scores(r: float, g: float, loc: float) -> dict:
    part = {"reliability": r, "generality": g, "locality": loc, "n": 4}
    return {"scores": {p: {"dev": part, "test": part} for p in ("token", "exact")}}


def test_lambda_choice_and_claims_on_hand_made_scores():
    cfg = get_study("flearning").load_config("quick", {"lambdas": "[0.3, 1, 3]"})
    runs = {"ft": _scores(0.50, 0.40, 0.90), "lora": _scores(0.30, 0.30, 0.95),
            "flearning-ft_lam0.3": _scores(0.55, 0.45, 0.89), "flearning-ft_lam1": _scores(0.60, 0.50, 0.80),
            "flearning-ft_lam3": _scores(0.60, 0.50, 0.70),  # ties with λ = 1 on R and G: the smaller λ wins
            "flearning-lora_lam0.3": _scores(0.35, 0.30, 0.95), "flearning-lora_lam1": _scores(0.20, 0.20, 0.95),
            "flearning-lora_lam3": {"diverged": "loss became nan"},
            "lora-ft_lam0.3": _scores(0.59, 0.49, 0.88), "lora-ft_lam1": _scores(0.10, 0.10, 0.50), "lora-ft_lam3": _scores(0, 0, 0)}
    agg = analyse_set(cfg, {0: {"runs": runs, "knowledge": {w: {"exact_match": 0.5, "token_accuracy": 0.5} for w in ("old", "new")},
                                "sizes": {"dev": 16, "test": 80}}})
    chosen = {m: s["chosen"] for m, s in agg["lambda_selection"].items()}
    assert chosen == {"flearning-ft": 1.0, "flearning-lora": 0.3, "lora-ft": 0.3}
    verdicts = [f["reproduced_by_protocol"]["token"] for f in agg["findings"]]
    # F-Learning-FT (λ 1): R +10, G +10 but L −10 > 2 points → no; F-Learning-LoRA (λ 0.3): G +0 → no;
    # LoRA−FT (λ 0.3) trails F-Learning-FT by 1 point on R and G → close
    assert verdicts == [False, False, True]
    assert "R +10.0, G +10.0, L -10.0" in agg["findings"][0]["this_run"]
