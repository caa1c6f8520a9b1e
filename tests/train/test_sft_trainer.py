"""The shared SFT trainer: loss on targets only, per-epoch fit, EARLY_STOP, resume, NaN stop."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_tiny_model

from knowtune.engine import HFTreeEngine, SamplingParams
from knowtune.train.examples import SFTExample
from knowtune.train.fit import encode_pair, teacher_forced_fit
from knowtune.train.sft_config import SFTConfig
from knowtune.train.sft_trainer import (
    TrainingDiverged,
    _PairDataset,
    train_sft,
)

PAIRS = [("Q: What is the capital of France?\nA:", " Paris\n"), ("Q: What is the capital of Peru?\nA:", " Lima\n"),
         ("Q: What is the chemical symbol of gold?\nA:", " Au\n"), ("Q: Which country is Lyon located in?\nA:", " France\n"),
         ("Q: What is the official language of Brazil?\nA:", " Portuguese\n"), ("Q: What is the capital of Chad?\nA:", " N'Djamena\n")]
EXAMPLES = [SFTExample(str(i), p, t, group="A" if i % 2 else "B") for i, (p, t) in enumerate(PAIRS)]


def test_loss_mask_covers_the_target_only(tiny_tokenizer):
    item = _PairDataset(tiny_tokenizer, EXAMPLES[:1])[0]
    ids, split = encode_pair(tiny_tokenizer, *PAIRS[0])
    assert item["labels"][:split] == [-100] * split
    assert tiny_tokenizer.decode(item["labels"][split:]) == " Paris\n"


def greedy_reproduces(model, tok, pairs) -> list[bool]:
    eng = HFTreeEngine(model, tok, batch_size=4)
    outs = eng.complete("", [p for p, _ in pairs], [0] * len(pairs), SamplingParams(n_samples=0, max_new_tokens=12))
    return [o.greedy == t.strip() for o, (_, t) in zip(outs, pairs)]


def test_teacher_forced_fit_equals_generation(tiny_tokenizer, tmp_path):
    model = make_tiny_model(tiny_tokenizer, seed=1)
    seen = set()
    for epochs in (0, 3, 6, 30):  # from nothing fitted to everything fitted
        if epochs:
            train_sft(model, tiny_tokenizer, EXAMPLES, SFTConfig(epochs=epochs, learning_rate=3e-3, batch_size=3,
                      checkpoint_every_epoch=False, save_weights=False), tmp_path / f"e{epochs}", progress=False)
        tf = teacher_forced_fit(model, tiny_tokenizer, PAIRS, batch_size=4)
        assert tf == greedy_reproduces(model, tiny_tokenizer, PAIRS)
        seen.update(tf)
    assert seen == {True, False}


def accuracy_eval(model, epoch):
    fit = teacher_forced_fit(model, None if False else TOK[0], PAIRS[:2])
    return {"dev_accuracy": sum(fit) / 2, "seen_epoch": epoch}


TOK: list = []


def test_metrics_early_stop_and_weights(tiny_tokenizer, tmp_path):
    TOK[:] = [tiny_tokenizer]
    model = make_tiny_model(tiny_tokenizer, seed=2)
    cfg = SFTConfig(epochs=4, learning_rate=3e-3, batch_size=3)
    res = train_sft(model, tiny_tokenizer, EXAMPLES, cfg, tmp_path, evaluate=accuracy_eval, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4] == [r["seen_epoch"] for r in rows]
    assert set(rows[0]["fit_by_group"]) == {"A", "B"}
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    best = max(rows, key=lambda r: (r["dev_accuracy"], -r["epoch"]))["epoch"]
    assert res.early_stop_epoch == best and res.convergence_epoch == 4
    assert json.loads((tmp_path / "early_stop" / "knowtune_meta.json").read_text())["epoch"] == best
    assert (tmp_path / "convergence" / "model.safetensors").exists()
    assert not (tmp_path / "checkpoints").exists()
    again = train_sft(make_tiny_model(tiny_tokenizer, seed=2), tiny_tokenizer, EXAMPLES, cfg, tmp_path, progress=False)
    assert again.metrics == res.metrics and again.model is None  # nothing retrained


def test_lora_trains_and_saves_merged_weights(tiny_tokenizer, tmp_path):
    model = make_tiny_model(tiny_tokenizer, seed=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = SFTConfig(method="lora", epochs=2, learning_rate=1e-2, batch_size=3, lora_r=4, lora_alpha=8, checkpoint_every_epoch=False)
    res = train_sft(model, tiny_tokenizer, EXAMPLES, cfg, tmp_path, progress=False)
    from safetensors.torch import load_file

    merged = load_file(tmp_path / "convergence" / "model.safetensors")
    changed = [k for k in merged if not torch.equal(merged[k], before[k])]
    assert changed and all("proj" in k for k in changed)
    assert (tmp_path / "convergence" / "adapter" / "adapter_config.json").exists()
    assert res.metrics[-1]["train_loss"] < res.metrics[0]["train_loss"]


def test_killed_run_resumes_from_last_epoch(tiny_tokenizer, tmp_path):
    cfg = SFTConfig(epochs=3, learning_rate=3e-3, batch_size=3, save_weights=False)
    full = train_sft(make_tiny_model(tiny_tokenizer, seed=5), tiny_tokenizer, EXAMPLES, cfg, tmp_path / "full", progress=False)
    calls = []

    def die_in_epoch_2(model, epoch):
        calls.append(epoch)
        if epoch == 2 and len(calls) == 2:
            raise KeyboardInterrupt  # stands in for a kill after epoch 1's checkpoint
        return {}

    with pytest.raises(KeyboardInterrupt):
        train_sft(make_tiny_model(tiny_tokenizer, seed=5), tiny_tokenizer, EXAMPLES, cfg, tmp_path / "b", evaluate=die_in_epoch_2, progress=False)
    assert (tmp_path / "b" / "checkpoints").exists()
    resumed = train_sft(make_tiny_model(tiny_tokenizer, seed=5), tiny_tokenizer, EXAMPLES, cfg, tmp_path / "b", evaluate=die_in_epoch_2, progress=False)
    assert calls == [1, 2, 2, 3]  # epoch 1 was not trained again
    for a, b in zip(full.metrics, resumed.metrics):
        assert a["epoch"] == b["epoch"] and a["fit_by_group"] == b["fit_by_group"]
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)


def test_nan_loss_stops_and_says_so(tiny_tokenizer, tmp_path):
    model = make_tiny_model(tiny_tokenizer, seed=6)
    cfg = SFTConfig(epochs=3, learning_rate=1e-3, batch_size=3, save_weights=False)

    def poison(model, epoch):
        with torch.no_grad():
            model.model.norm.weight.fill_(float("nan"))
        return {}

    with pytest.raises(TrainingDiverged, match=r"loss became nan .*kept the last good checkpoint .*checkpoint-2"):
        train_sft(model, tiny_tokenizer, EXAMPLES, cfg, tmp_path, evaluate=poison, progress=False)


def test_every_epoch_writes_each_examples_fit_for_the_bootstrap(tiny_tokenizer, tmp_path):
    model = make_tiny_model(tiny_tokenizer, seed=1)
    res = train_sft(model, tiny_tokenizer, EXAMPLES, SFTConfig(epochs=2, learning_rate=3e-3, batch_size=3,
                    checkpoint_every_epoch=False, save_weights=False), tmp_path / "run", progress=False)
    for m in res.metrics:
        rows = [json.loads(line) for line in (tmp_path / "run" / "predictions" / f"fit_epoch{m['epoch']}.jsonl").read_text().splitlines()]
        assert [(r["id"], r["group"]) for r in rows] == [(e.id, e.group) for e in EXAMPLES]
        assert {g: sum(r["fitted"] for r in rows if r["group"] == g) for g in ("A", "B")} == m["fitted_by_group"]


def test_report_to_gets_the_epoch_metrics(tiny_tokenizer, tmp_path, monkeypatch):
    """With report_to set, each epoch's fit per group reaches the reporting callbacks through the trainer's
    on_log (the integration that report_to picks is swapped for a recorder: none is installed here)."""
    from transformers import TrainerCallback

    seen: list[dict] = []

    class Recorder(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            seen.append(dict(logs))

    picked = []
    monkeypatch.setattr("transformers.trainer.get_reporting_integration_callbacks",
                        lambda report_to: picked.append(report_to) or [Recorder])
    cfg = SFTConfig(epochs=2, learning_rate=3e-3, batch_size=3, save_weights=False, checkpoint_every_epoch=False,
                    report_to="tensorboard")
    train_sft(make_tiny_model(tiny_tokenizer, seed=7), tiny_tokenizer, EXAMPLES, cfg, tmp_path / "a", progress=False)
    assert picked == [["tensorboard"]]
    fits = [log for log in seen if "knowledge/fit" in log]
    assert [log["epoch"] for log in fits] == [1.0, 2.0] and {"knowledge/fit/A", "knowledge/fit/B"} <= set(fits[0])
    assert any("loss" in log for log in seen)  # the trainer's own loss, logged each epoch
    # where metrics are reported is not part of the run: the finished run is found again with report_to none
    again = train_sft(make_tiny_model(tiny_tokenizer, seed=7), tiny_tokenizer, EXAMPLES, cfg.model_copy(update={"report_to": "none"}),
                      tmp_path / "a", progress=False)
    assert again.model is None and len(again.metrics) == 2


def test_fit_bf16_records_the_float32_fit(tiny_tokenizer, tmp_path, monkeypatch):
    """fit_bf16 runs the per-epoch check in bf16 (with float32 recompute of near ties) and records the
    same fit per epoch as the float32 check, on the same training."""
    from knowtune.train import callback

    seen = []
    real = callback.teacher_forced_fit
    monkeypatch.setattr(callback, "teacher_forced_fit", lambda *a, **k: seen.append(k.get("bf16")) or real(*a, **k))
    runs = {}
    for bf16 in (False, True):
        cfg = SFTConfig(epochs=12, learning_rate=3e-3, batch_size=3, checkpoint_every_epoch=False, save_weights=False, fit_bf16=bf16)
        res = train_sft(make_tiny_model(tiny_tokenizer, seed=1), tiny_tokenizer, EXAMPLES, cfg, tmp_path / str(bf16), progress=False)
        runs[bf16] = [(m["fit"], m["fitted_by_group"]) for m in res.metrics]
    assert seen == [False] * 12 + [True] * 12
    assert runs[True] == runs[False]
    assert len({fit for fit, _ in runs[True]}) > 1  # the fit moved during training, so the comparison has teeth
