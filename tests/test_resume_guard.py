"""The resume rule, in one place (files.check_or_write_manifest): a finished train, probe, curate or
study run is reused only for the same settings and inputs; changing any of them is refused before
anything is reused, naming the setting and both values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import CAPITALS, LANGUAGES, make_tiny_model

from knowtune.data.records import QADataset, QAExample
from knowtune.engine import HFTreeEngine
from knowtune.errors import ConfigError
from knowtune.models import LoadedModel
from knowtune.probe.config import ProbeConfig
from knowtune.probe.slick import run_probe
from knowtune.studies.common import check_study
from knowtune.studies.registry import discover
from knowtune.train.examples import SFTExample
from knowtune.train.sft_config import SFTConfig
from knowtune.train.sft_trainer import train_sft

EXAMPLES = [SFTExample(f"c{i}", f"Q: What is the capital of {c}?\nA:", f" {a}\n", "Unknown") for i, (c, a) in enumerate(CAPITALS[:4])]
BASE = SFTConfig(epochs=1, learning_rate=1e-3, batch_size=2, checkpoint_every_epoch=False, save_weights=False)
META = {"provenance": {"model": "base-a"}}
# One changed value per training setting; test_every_training_setting_is_covered keeps it complete
# (report_to, where metrics are reported, is recorded but not compared: SFT_NOT_COMPARED).
SFT_CHANGES = {"method": "lora", "epochs": 2, "learning_rate": 2e-3, "lr_scheduler_type": "linear", "warmup_ratio": 0.1,
               "weight_decay": 0.01, "max_grad_norm": 0.5, "batch_size": 3, "gradient_accumulation_steps": 2, "lora_r": 8,
               "lora_alpha": 16, "lora_dropout": 0.1, "lora_target_modules": ["q_proj"], "bf16": True, "fit_bf16": True, "seed": 1,
               "checkpoint_every_epoch": True, "save_weights": True, "eval_batch_size": 8}
SFT_NOT_COMPARED = {"report_to": "tensorboard"}
PROBE = ProbeConfig(k_shot=2, n_exemplar_sets=2, n_samples=2, max_new_tokens=4)
PROBE_CHANGES = {"k_shot": 1, "n_exemplar_sets": 3, "n_samples": 3, "temperature": 0.7, "top_k": 5, "max_new_tokens": 5, "seed": 1,
                 "estimator": "exact", "min_path_prob": 1e-4}


@pytest.fixture(scope="module")
def finished_train(tiny_tokenizer, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train") / "run"
    train_sft(make_tiny_model(tiny_tokenizer), tiny_tokenizer, EXAMPLES, BASE, out, progress=False, meta=META)
    assert (out / "result.json").exists()
    return out


def test_every_training_setting_is_covered():
    assert set(SFT_CHANGES) | set(SFT_NOT_COMPARED) == set(SFTConfig.model_fields)
    assert set(PROBE_CHANGES) == set(ProbeConfig.model_fields)


@pytest.mark.parametrize("field", sorted(SFT_CHANGES))
def test_a_finished_training_run_refuses_a_changed_setting(field, finished_train, tiny_tokenizer):
    cfg = BASE.model_copy(update={field: SFT_CHANGES[field]})
    with pytest.raises(ConfigError) as e:
        train_sft(make_tiny_model(tiny_tokenizer), tiny_tokenizer, EXAMPLES, cfg, finished_train, progress=False, meta=META)
    message = str(e.value)
    assert f"holds a training run with a different config.{field} (" in message
    assert json.dumps(getattr(BASE, field)) in message and json.dumps(SFT_CHANGES[field]) in message


@pytest.mark.parametrize("change,named", [
    (lambda ex, meta: (ex[:3], meta), "examples (4 vs 3)"),
    (lambda ex, meta: ([*ex[:3], SFTExample("c3", ex[3].prompt, " Oslo\n", "Unknown")], meta), "data_fingerprint"),
    (lambda ex, meta: (ex, {"provenance": {"model": "base-b"}}), 'base_model ("base-a" vs "base-b")'),
])
def test_a_finished_training_run_refuses_changed_inputs(change, named, finished_train, tiny_tokenizer):
    examples, meta = change(EXAMPLES, META)
    with pytest.raises(ConfigError, match="holds a training run with a different " + named.replace("(", r"\(").replace(")", r"\)")):
        train_sft(make_tiny_model(tiny_tokenizer), tiny_tokenizer, examples, BASE, finished_train, progress=False, meta=meta)


def test_a_finished_training_run_with_the_same_settings_is_reused(finished_train, tiny_tokenizer):
    res = train_sft(make_tiny_model(tiny_tokenizer), tiny_tokenizer, EXAMPLES, BASE, finished_train, progress=False, meta=META)
    assert res.convergence_epoch == 1


@pytest.mark.parametrize("field", sorted(SFT_NOT_COMPARED))
def test_a_finished_training_run_is_reused_whatever_it_reports_to(field, finished_train, tiny_tokenizer):
    cfg = BASE.model_copy(update={field: SFT_NOT_COMPARED[field]})
    res = train_sft(make_tiny_model(tiny_tokenizer), tiny_tokenizer, EXAMPLES, cfg, finished_train, progress=False, meta=META)
    assert res.convergence_epoch == 1 and res.model is None  # the finished result, nothing retrained


def _qa() -> QADataset:
    rows = [QAExample(f"{rel}{i}", rel, s, f"{q} {s}?", (a,), split="exemplar" if i < 4 else "test")
            for rel, pairs, q in (("cap", CAPITALS, "What is the capital of"), ("lang", LANGUAGES, "What is spoken in"))
            for i, (s, a) in enumerate(pairs[:6])]
    return QADataset("tiny", rows, exemplar_split="exemplar", source="test")


@pytest.fixture(scope="module")
def finished_probe(tiny_model, tiny_tokenizer, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("probe") / "run"
    data = _qa()
    run_probe(HFTreeEngine(tiny_model, tiny_tokenizer), data, data.split("test"), PROBE, out, {"spec": "tiny"}, progress=False)
    assert (out / "summary.json").exists()
    return out


@pytest.mark.parametrize("field", sorted(PROBE_CHANGES))
def test_a_finished_probe_refuses_a_changed_setting(field, finished_probe, tiny_model, tiny_tokenizer):
    data = _qa()
    cfg = PROBE.model_copy(update={field: PROBE_CHANGES[field]})
    with pytest.raises(ConfigError, match=rf"holds a probe with a different settings\.{field} \("):
        run_probe(HFTreeEngine(tiny_model, tiny_tokenizer), data, data.split("test"), cfg, finished_probe, {"spec": "tiny"}, progress=False)


def test_a_finished_probe_refuses_changed_inputs(finished_probe, tiny_model, tiny_tokenizer):
    data = _qa()
    engine = HFTreeEngine(tiny_model, tiny_tokenizer)
    with pytest.raises(ConfigError, match=r"different model\.spec \(\"tiny\" vs \"other\"\)"):
        run_probe(engine, data, data.split("test"), PROBE, finished_probe, {"spec": "other"}, progress=False)
    with pytest.raises(ConfigError, match=r"different questions\.count \(4 vs 3\)"):
        run_probe(engine, data, data.split("test")[:3], PROBE, finished_probe, {"spec": "tiny"}, progress=False)
    other = QADataset("tiny", [*data.examples[:-1], QAExample("lang5", "lang", "X", "What is spoken in X?", ("Y",), split="test")],
                      exemplar_split="exemplar", source="test")
    with pytest.raises(ConfigError, match=r"different data\.fingerprint"):
        run_probe(engine, other, other.split("test"), PROBE, finished_probe, {"spec": "tiny"}, progress=False)


def _probe_records(path: Path, answer: str = "Paris") -> Path:
    cats = ("HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown")
    rows = [{"id": f"q{i}", "relation": "P36", "question": f"What is the capital of country {i}?",
             "answers": [answer if i == 0 else f"City {i}"], "category": cats[i % 4]} for i in range(16)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("option,value,named", [("--size", "3", "size (2 vs 3)"), ("--seed", "1", "seed (0 vs 1)"),
                                                ("--idk-unknown-percent", "25", "idk_unknown_percent (50 vs 25)"),
                                                ("--probe", "other", "probe_sha256")])
def test_finished_curation_refuses_a_changed_setting_or_input(option, value, named, cli, tmp_path):
    probe = _probe_records(tmp_path / "probe.jsonl")
    base = {"--probe": str(probe), "--size": "2", "--seed": "0", "--idk-unknown-percent": "50", "--out": str(tmp_path / "sets")}
    code, _, err = cli("curate", *[x for kv in base.items() for x in kv])
    assert code == 0, err
    before = {p.name: p.read_bytes() for p in (tmp_path / "sets").iterdir()}
    if option == "--probe":
        value = str(_probe_records(tmp_path / "probe2.jsonl", answer="Lyon"))
    code, _, err = cli("curate", *[x for kv in {**base, option: value}.items() for x in kv])
    assert code == 2 and f"holds curated sets with a different {named}" in err, err
    assert {p.name: p.read_bytes() for p in (tmp_path / "sets").iterdir()} == before  # nothing rewritten


def _fake_lm(tiny_tokenizer, fingerprint: str = "model-a") -> LoadedModel:
    return LoadedModel(make_tiny_model(tiny_tokenizer), tiny_tokenizer, "tiny", fingerprint)


EXTENDABLE = {"new-knowledge": ("seeds",), "self-align": ("seeds",), "flearning": ("seeds", "lambdas", "methods")}
STUDY_CASES = [(name, field) for name, study in sorted(discover().items()) for field in study.config.model_fields
               if field not in EXTENDABLE[name]]


@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings")
@pytest.mark.parametrize("name,field", STUDY_CASES, ids=[f"{n}:{f}" for n, f in STUDY_CASES])
def test_a_study_refuses_a_changed_setting(name, field, tiny_tokenizer, tmp_path):
    study = discover()[name]
    cfg = study.load_config("quick", {})
    lm = _fake_lm(tiny_tokenizer)
    check_study(tmp_path, cfg, lm, "data-a", EXTENDABLE[name])
    changed = cfg.model_copy(update={field: ["a changed value"]})  # any other value: the guard compares, it does not validate
    with pytest.raises(ConfigError, match=rf"holds a study with a different config\.{field}"):
        check_study(tmp_path, changed, lm, "data-a", EXTENDABLE[name])


def test_a_study_refuses_changed_inputs_and_accepts_added_seeds(tiny_tokenizer, tmp_path):
    study = discover()["new-knowledge"]
    cfg = study.load_config("quick", {})
    check_study(tmp_path, cfg, _fake_lm(tiny_tokenizer), "data-a", ("seeds",))
    with pytest.raises(ConfigError, match=r'different model_fingerprint \("model-a" vs "model-b"\)'):
        check_study(tmp_path, cfg, _fake_lm(tiny_tokenizer, "model-b"), "data-a", ("seeds",))
    with pytest.raises(ConfigError, match=r'different data_fingerprint \("data-a" vs "data-b"\)'):
        check_study(tmp_path, cfg, _fake_lm(tiny_tokenizer), "data-b", ("seeds",))
    check_study(tmp_path, cfg.model_copy(update={"seeds": [0, 1, 2]}), _fake_lm(tiny_tokenizer), "data-a", ("seeds",))


def test_the_issue_example_train_b_over_finished_train_a(cli, tiny_workdir, tmp_path):
    out = str(tmp_path / "T")
    code, _, err = cli("train", "--model", str(tiny_workdir / "model"), "--train", str(tiny_workdir / "train.jsonl"),
                       "--set", "epochs=1", "--set", "save_weights=false", "--out", out)
    assert code == 0, err
    code, _, err = cli("train", "--model", str(tiny_workdir / "model"), "--train", str(tiny_workdir / "dev.jsonl"),
                       "--set", "epochs=3", "--out", out)
    lines = [line for line in err.splitlines() if line.startswith("knowtune:")]  # not the weight-loading bar
    assert code == 2 and len(lines) == 1 and "holds a training run with a different config.epochs (1 vs 3)" in lines[0], err
