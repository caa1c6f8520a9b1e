"""The F-Learning update stage on a tiny random model (knowtune/update/flearning.py): λ = 0 is plain
fine-tuning, the forget step is exactly θ − λΔ, the forgetting delta is trained once and cached, a
vanishing learning rate leaves Locality whole, edit files round-trip, and `knowtune update` /
`knowtune evaluate --edits` run through the CLI's own command functions."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_tiny_model

from knowtune import cli
from knowtune.data.edit_records import read_edit_records, write_edit_records
from knowtune.data.edits import EditExample
from knowtune.errors import ConfigError, DataError, KnowtuneError
from knowtune.evaluate.edit_metrics import (
    edit_scores,
    evaluate_edited_model,
    pre_edit_reference,
)
from knowtune.train.sft_config import SFTConfig
from knowtune.update import flearning
from knowtune.update.flearning import edit_sft_examples, forget_delta, forget_then_learn
from knowtune.update.flearning_config import METHODS, FamilySettings


def update_command(model: str, edits: str, method: str, lam: float, out, overrides: dict) -> None:
    """`knowtune update` through the CLI's own command function."""
    cli.update(model=model, edits=edits, method=method, lam=lam, out=out, set_=[f"{k}={v}" for k, v in overrides.items()])


def evaluate_edits_command(model: str, edits: str, protocol: str, reference_model: str, out) -> None:
    """`knowtune evaluate --edits` through the CLI's own command function."""
    cli.evaluate(model=model, records=None, edits=edits, mc=None, protocol=protocol, reference_model=reference_model,
                 k_shot=5, seed=0, out=out, batch_size=32, engine="hf", engine_set=[])


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


def test_edit_records_round_trip_and_name_the_bad_field(tmp_path):
    write_edit_records(tmp_path / "edits.jsonl", EDITS)
    assert read_edit_records(tmp_path / "edits.jsonl").examples == EDITS
    rows = [json.loads(line) for line in (tmp_path / "edits.jsonl").read_text().splitlines()]
    del rows[1]["target_new"]
    (tmp_path / "bad.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"bad.jsonl, record br, field 'target_new': missing"):
        read_edit_records(tmp_path / "bad.jsonl")


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
    with pytest.raises(ConfigError, match="update settings: --method: "):
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
