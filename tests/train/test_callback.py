"""KnowledgeCallback inside a plain transformers Trainer (full and LoRA), and (slow) inside TRL's
SFTTrainer on an `idk` export of a builtin audit: metrics per category through the trainer's logging,
knowledge_metrics.jsonl, the best model kept, and early stopping on a dev set built to stop improving."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import CAPITALS, make_tiny_model
from transformers import Trainer, TrainerCallback, TrainingArguments

from knowtune.errors import ConfigError
from knowtune.integrations import KnowledgeCallback
from knowtune.train.examples import SFTExample
from knowtune.train.sft_trainer import _collate, _PairDataset

CATS = ("HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown")


class Recorder(TrainerCallback):
    """Stands where TensorBoardCallback / WandbCallback stand: it sees what the trainer logs."""

    def __init__(self):
        self.logs: list[dict] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append(dict(logs))


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def audited(tmp_path):
    """An audit.jsonl of the ten capitals (categories in turn) and a dev set nobody can answer."""
    rows = [{"id": f"c{i}", "relation": "cap", "question": f"What is the capital of {c}?", "answers": [a], "category": CATS[i % 4]}
            for i, (c, a) in enumerate(CAPITALS)]
    dev = [{"question": f"What is the capital of Atlantis {i}?", "answer": f"Zq{i}xv"} for i in range(3)]
    return _write(tmp_path / "audit.jsonl", rows), _write(tmp_path / "dev.jsonl", dev), rows


def _train(model, tok, rows, callback, out: Path, epochs: int = 3, lr: float = 3e-3) -> tuple[Trainer, Recorder]:
    examples = [SFTExample(r["id"], f"Q: {r['question']}\nA:", f" {r['answers'][0]}\n") for r in rows]
    args = TrainingArguments(output_dir=str(out), num_train_epochs=epochs, per_device_train_batch_size=5, learning_rate=lr,
                             save_strategy="no", logging_strategy="no", report_to="none", disable_tqdm=True,
                             remove_unused_columns=False, use_cpu=True)
    recorder = Recorder()
    trainer = Trainer(model=model, args=args, train_dataset=_PairDataset(tok, examples), data_collator=_collate(tok.pad_token_id),
                      callbacks=[recorder, callback])
    trainer.train()
    return trainer, recorder


def test_metrics_per_category_are_logged_and_recorded(tiny_tokenizer, audited, tmp_path):
    audit, dev, rows = audited
    cb = KnowledgeCallback(tiny_tokenizer, audit=audit, dev=dev, every="epoch")
    trainer, recorder = _train(make_tiny_model(tiny_tokenizer, seed=1), tiny_tokenizer, rows, cb, tmp_path / "run", 30, 1e-2)
    metrics = [json.loads(line) for line in (tmp_path / "run" / "knowledge_metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == list(range(1, 31)) and [m["step"] for m in metrics] == list(range(2, 61, 2))
    assert set(metrics[0]["group_sizes"]) == set(CATS) and sum(metrics[0]["group_sizes"].values()) == 10
    assert metrics[-1]["fit"] > metrics[0]["fit"] and metrics[-1]["dev_accuracy"] == 0.0
    logged = [log for log in recorder.logs if "knowledge/fit" in log]
    assert len(logged) == 30 and {f"knowledge/fit/{c}" for c in CATS} <= set(logged[0])
    assert logged[-1]["knowledge/fit"] == metrics[-1]["fit"] and "knowledge/dev_accuracy" in logged[0]
    assert sum("knowledge/fit" in h for h in trainer.state.log_history) == 30
    assert json.loads((tmp_path / "run" / "knowledge_best" / "knowtune_meta.json").read_text())["step"] == 2
    last = [json.loads(line) for line in (tmp_path / "run" / "predictions" / "fit_epoch30.jsonl").read_text().splitlines()]
    assert [(r["id"], r["group"]) for r in last] == [(r["id"], r["category"]) for r in rows]
    assert {c: sum(r["fitted"] for r in last if r["group"] == c) for c in CATS} == metrics[-1]["fitted_by_group"]


def test_early_stop_on_a_dev_set_that_stops_improving(tiny_tokenizer, audited, tmp_path):
    audit, dev, rows = audited
    cb = KnowledgeCallback(tiny_tokenizer, audit=audit, dev=dev, every=1, early_stop=True, patience=2)
    trainer, _ = _train(make_tiny_model(tiny_tokenizer, seed=1), tiny_tokenizer, rows, cb, tmp_path / "run")
    assert trainer.state.global_step == 3 and cb.stopped_at["step"] == 3  # best at step 1, then two without improvement
    assert len(cb.history) == 3
    assert sorted(p.name for p in (tmp_path / "run" / "predictions").iterdir()) == [f"fit_step{i}.jsonl" for i in (1, 2, 3)]


def test_lora_model_keeps_its_best_adapter(tiny_tokenizer, audited, tmp_path):
    from peft import LoraConfig, get_peft_model

    audit, dev, rows = audited
    model = get_peft_model(make_tiny_model(tiny_tokenizer, seed=2), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    cb = KnowledgeCallback(tiny_tokenizer, audit=audit, dev=dev, every="epoch", early_stop=True, patience=1)
    trainer, _ = _train(model, tiny_tokenizer, rows, cb, tmp_path / "run")
    assert trainer.state.global_step == 4  # epoch 1 is best (dev stays 0), epoch 2 has not improved: stop
    assert (tmp_path / "run" / "knowledge_best" / "adapter" / "adapter_config.json").exists()
    assert (tmp_path / "run" / "knowledge_best" / "model.safetensors").exists()


def test_the_trained_labels_come_from_the_train_file(tiny_tokenizer, audited, tmp_path):
    audit, _, rows = audited
    idk = [{"question": r["question"], "answer": "I don't know" if r["category"] == "Unknown" else r["answers"][0]} for r in rows]
    cb = KnowledgeCallback(tiny_tokenizer, audit=audit, train=_write(tmp_path / "idk.jsonl", idk))
    targets = {e.id: e.target for e in cb.examples}
    assert targets["c3"] == " I don't know\n" and targets["c0"] == " Paris\n"


def test_bad_settings(tiny_tokenizer, audited):
    audit, _, _ = audited
    with pytest.raises(ConfigError, match="every: expected 'epoch' or a positive number of steps, got 0"):
        KnowledgeCallback(tiny_tokenizer, audit=audit, every=0)
    with pytest.raises(ConfigError, match="early_stop needs dev="):
        KnowledgeCallback(tiny_tokenizer, audit=audit, early_stop=True)
    with pytest.raises(ConfigError, match="needs audit="):
        KnowledgeCallback(tiny_tokenizer)


@pytest.mark.slow
def test_trl_sft_trainer_on_an_idk_export_of_a_builtin_audit(cli, tmp_path):
    """audit (24 builtin questions as messages rows) → --export idk --format messages → trl.SFTTrainer on the
    builtin model, unchanged, with the callback every step: fit per category logged, early stop on a dev
    set nobody can answer (best at step 1, stop at step 3 of 6)."""
    import datasets
    import trl

    from knowtune.data import load_qa, select_examples
    from knowtune.models import load_model

    ds = load_qa("builtin")
    rows = [{"id": e.id, "relation": e.relation, "messages": [{"role": "user", "content": e.question},
                                                            {"role": "assistant", "content": e.answers[0]}]}
            for e in select_examples(ds, "test", None, 24)]
    pool = _write(tmp_path / "exemplars.jsonl", [e.to_dict() for e in ds.split("exemplar")])
    audit = tmp_path / "audit"
    code, _, err = cli("audit", "--data", str(_write(tmp_path / "set.jsonl", rows)), "--exemplars", str(pool), "--preset", "quick",
                       "--out", str(audit), "--export", "idk", "--format", "messages")
    assert code == 0, err
    export = audit / "export_idk.messages.jsonl"
    dev = _write(tmp_path / "dev.jsonl", [{"question": f"What is the capital of Atlantis {i}?", "answer": f"Zq{i}xv"} for i in range(4)])
    lm = load_model("builtin")
    cb = KnowledgeCallback(lm.tokenizer, audit=audit / "audit.jsonl", train=export, dev=dev, every=1, early_stop=True, patience=2)
    recorder = Recorder()
    args = trl.SFTConfig(output_dir=str(tmp_path / "run"), num_train_epochs=1, per_device_train_batch_size=4, learning_rate=1e-5,
                         save_strategy="no", logging_strategy="no", report_to="none", disable_tqdm=True, use_cpu=True,
                         bf16=False)  # TRL's default bf16 is slow on CPUs without bf16 units
    trainer = trl.SFTTrainer(model=lm.model, args=args, processing_class=lm.tokenizer, callbacks=[recorder, cb],
                             train_dataset=datasets.load_dataset("json", data_files=str(export), split="train"))
    trainer.train()
    assert trainer.state.global_step == 3 and cb.stopped_at["step"] == 3
    categories = {json.loads(line)["category"] for line in (audit / "audit.jsonl").read_text().splitlines()}
    metrics = [json.loads(line) for line in (tmp_path / "run" / "knowledge_metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 3 and set(metrics[0]["group_sizes"]) == categories and sum(metrics[0]["group_sizes"].values()) == 24
    logged = [log for log in recorder.logs if "knowledge/fit" in log]
    assert len(logged) == 3 and {f"knowledge/fit/{c}" for c in categories} <= set(logged[0])
    unknown = [e for e in cb.examples if e.group == "Unknown"]
    assert unknown and all(e.target == "I don't know<|im_end|>" for e in unknown)
    assert (tmp_path / "run" / "knowledge_best" / "model.safetensors").exists()
