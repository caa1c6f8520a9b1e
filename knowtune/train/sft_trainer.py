"""Supervised fine-tuning on (prompt, target) pairs with the Hugging Face Trainer, full or LoRA.

After every epoch the shared `KnowledgeCallback` (callback.py) records, to `metrics.jsonl`: the training loss, the training-set
**fit** per group (teacher-forced, one forward pass; see fit.py) and whatever the caller's
`evaluate(model, epoch)` returns (dev and test accuracy for the SliCK study). The best epoch by
`select` (dev accuracy) is EARLY_STOP, the last is CONVERGENCE; both are saved as safetensors.
A killed run resumes from its last epoch checkpoint; a NaN loss stops the run and keeps the last
good checkpoint. The metrics also go to the `report_to` integrations (TensorBoard, W&B).

Under `accelerate launch --num_processes N` every process trains on its share of each batch (the
optimizer step takes the same examples as in one process: see processes.py); only the main process
computes the per-epoch metrics and writes the run directory, the others wait for it.
"""

from __future__ import annotations

import json
import math
import pickle
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import Trainer, TrainingArguments

from knowtune.errors import KnowtuneError
from knowtune.files import (
    atomic_write_json,
    atomic_write_jsonl,
    check_or_write_manifest,
    fingerprint,
    iter_jsonl,
    read_json,
    remove_stale_temp,
    versions,
)
from knowtune.memory import check_fits, training_estimate
from knowtune.provenance import warn
from knowtune.train.callback import EvaluateFn, KnowledgeCallback
from knowtune.train.examples import SFTExample
from knowtune.train.fit import encode_pair
from knowtune.train.processes import (
    BARRIER_TIMEOUT,
    check_launch,
    per_device_batch,
    process_state,
    use_cpu,
    warn_one_cpu_process,
)
from knowtune.train.sft_config import SFTConfig
from knowtune.train.weights import save_weights

__all__ = ["EvaluateFn", "TrainResult", "TrainingDiverged", "save_weights", "train_sft"]


class TrainingDiverged(KnowtuneError):
    """The loss became NaN or infinite: training stopped at the last good checkpoint."""


@dataclass
class TrainResult:
    """Per-epoch metrics and where the EARLY_STOP and CONVERGENCE weights are."""

    metrics: list[dict]
    early_stop_epoch: int
    convergence_epoch: int
    early_stop_dir: Path | None = None
    convergence_dir: Path | None = None
    model: object = field(default=None, repr=False)  # the trained model (peft-wrapped for LoRA), when trained now


class _PairDataset(torch.utils.data.Dataset):
    def __init__(self, tokenizer, examples: list[SFTExample]):
        self.items = []
        for ex in examples:
            ids, split = encode_pair(tokenizer, ex.prompt, ex.target)
            self.items.append({"input_ids": ids, "labels": [-100] * split + ids[split:]})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def _collate(pad_id: int):
    def collate(batch: list[dict]) -> dict:
        width = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, b in enumerate(batch):
            n = len(b["input_ids"])
            ids[i, :n], labels[i, :n], mask[i, :n] = torch.tensor(b["input_ids"]), torch.tensor(b["labels"]), 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}

    return collate


class _Trainer(Trainer):
    """The HF Trainer, plus a loss sum per epoch and a stop on a non-finite loss."""

    epoch_losses: list[float]

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        # Under N processes each loss is its share of the step's (normalised by the tokens of all of them,
        # times N): their mean is the loss one process would see, and every process stops on a NaN together.
        value = float(self.accelerator.reduce(loss.detach(), "mean") if self.args.world_size > 1 else loss.detach())
        if not math.isfinite(value):
            raise TrainingDiverged(f"loss became {value} at step {self.state.global_step + 1} (epoch {self.state.epoch:.2f})")
        self.epoch_losses.append(value)
        return loss


class _EpochCallback(KnowledgeCallback):
    """The shared KnowledgeCallback, once per epoch, writing metrics.jsonl rows that start with the
    epoch and its mean training loss (the studies read these keys)."""

    def __init__(self, trainer: _Trainer, tokenizer, examples: list[SFTExample], evaluate: EvaluateFn | None, select: str,
                 out: Path, cfg: SFTConfig, meta: dict):
        super().__init__(tokenizer, examples=examples, evaluate=evaluate, select=select, output_dir=out,
                         metrics_file="metrics.jsonl", best_dir="early_stop", best_meta=meta, save_best=cfg.save_weights,
                         log=cfg.report_to != "none", fit_bf16=cfg.fit_bf16)
        self.trainer = trainer

    def row_head(self, state) -> dict:
        losses = self.trainer.epoch_losses
        return {"epoch": round(state.epoch), "train_loss": sum(losses) / len(losses) if losses else None}

    def on_epoch_end(self, args, state, control, **kwargs):
        super().on_epoch_end(args, state, control, **kwargs)
        self.trainer.epoch_losses = []  # on every process: the next epoch's mean starts afresh
        return control

    def best_epoch(self) -> int:
        """EARLY_STOP: the epoch with the best `select` metric (the earliest on ties); the last without one."""
        best = self.best()
        return (best or self.history[-1])["epoch"]


def check_training_fits(model, tokenizer, examples: list[SFTExample], cfg: SFTConfig, processes: int = 1) -> None:
    """Refuse fine-tuning on `examples` (at least one) that cannot fit; a batch (each process's share of
    it) is never larger than the set, and the longest example sets the sequence length."""
    seq_len = max(len(ids) for ids in tokenizer([e.prompt + e.target for e in examples])["input_ids"])
    lora = (cfg.lora_r, cfg.lora_target_modules) if cfg.method == "lora" else None
    batch = min(per_device_batch(cfg.batch_size, processes), len(examples))
    check_fits(training_estimate(model, batch, seq_len, lora=lora, bf16=cfg.bf16), model)


def _prepare_model(model, cfg: SFTConfig):
    """Wrap the model with a LoRA adapter when asked; full fine-tuning trains it as is."""
    if cfg.method == "full":
        return model
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(cfg.seed)
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=cfg.lora_target_modules, task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def last_complete_checkpoint(ckpt_dir: Path) -> Path | None:
    """The newest checkpoint the Trainer finished writing, deleting any it did not.

    The HF Trainer writes a checkpoint folder in place and `trainer_state.json` last, so a run killed
    mid-save leaves a folder without it (or with it cut short); `get_last_checkpoint` would pick that
    folder and resume from half a checkpoint."""
    if not ckpt_dir.exists():
        return None
    for folder in sorted(ckpt_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]), reverse=True):
        try:
            json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
            return folder
        except (OSError, ValueError):  # missing, or cut off mid-write
            shutil.rmtree(folder)
    return None


def _check_same_run(out: Path, cfg: SFTConfig, examples: list[SFTExample], meta: dict | None, processes: int) -> None:
    """The resume guard, before anything in `out` is reused (a finished result included): the same
    settings, training data and base model, or a refusal naming the first that differs."""
    # Where metrics are reported does not change the run: a resumed run may report elsewhere.
    manifest = {"config": cfg.model_dump(exclude={"report_to"}), "reporting": cfg.report_to, "examples": len(examples),
                "data_fingerprint": fingerprint([(e.id, e.prompt, e.target, e.group) for e in examples]),
                "base_model": ((meta or {}).get("provenance") or {}).get("model"), "versions": versions(),
                "processes": processes}  # recorded, not compared: a step takes the same examples with any number
    check_or_write_manifest(out / "train_config.json", manifest, "a training run",
                            compare=("config", "examples", "data_fingerprint", "base_model"))


def train_sft(
    model,
    tokenizer,
    examples: list[SFTExample],
    cfg: SFTConfig,
    out: str | Path,
    evaluate: EvaluateFn | None = None,
    select: str = "dev_accuracy",
    progress: bool = True,
    meta: dict | None = None,
) -> TrainResult:
    """Fine-tune `model` in place (LoRA wraps it with peft) on `examples`, recording metrics after every
    epoch; resumes a killed run in `out` and returns at once when `out` holds a finished one.
    `meta` (e.g. the base model's provenance) goes into each saved model's knowtune_meta.json."""
    if not examples:
        raise KnowtuneError("no training examples")
    check_launch(cfg.bf16)
    state = process_state()
    check_training_fits(model, tokenizer, examples, cfg, state.num_processes)  # before any work
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if state.is_main_process:
        _check_same_run(out, cfg, examples, meta, state.num_processes)
    state.wait_for_everyone()
    done = out / "result.json"
    if done.exists():
        return _load_result(out)
    if state.is_main_process:
        remove_stale_temp(out)
        resume = last_complete_checkpoint(out / "checkpoints")
        _warn_uneven_last_step(len(examples), cfg, state.num_processes)
        warn_one_cpu_process(state.num_processes)
    state.wait_for_everyone()
    if not state.is_main_process:  # the main process has checked the directory and removed unfinished checkpoints
        resume = last_complete_checkpoint(out / "checkpoints")
    run_model = _prepare_model(model, cfg)
    args = TrainingArguments(
        output_dir=str(out / "checkpoints"), num_train_epochs=cfg.epochs, learning_rate=cfg.learning_rate,
        per_device_train_batch_size=per_device_batch(cfg.batch_size, state.num_processes),
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        lr_scheduler_type=cfg.lr_scheduler_type, warmup_steps=cfg.warmup_ratio, weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm, seed=cfg.seed, data_seed=cfg.seed, bf16=cfg.bf16,
        save_strategy="epoch" if cfg.checkpoint_every_epoch else "no", save_total_limit=1,
        logging_strategy="no" if cfg.report_to == "none" else "epoch", report_to=cfg.report_to, disable_tqdm=not progress,
        remove_unused_columns=False, use_cpu=use_cpu(), dataloader_num_workers=0,
        ddp_timeout=int(BARRIER_TIMEOUT.total_seconds()),
    )
    trainer = _Trainer(model=run_model, args=args, train_dataset=_PairDataset(tokenizer, examples),
                       data_collator=_collate(tokenizer.pad_token_id or 0))
    trainer.epoch_losses = []
    callback = _EpochCallback(trainer, tokenizer, examples, evaluate, select, out, cfg, meta or {})
    # Metrics past the checkpoint we resume from belong to an epoch that will be trained again.
    resumed_epoch = round(read_json(resume / "trainer_state.json")["epoch"]) if resume else 0
    if resume and state.is_main_process:
        print(f"{out}: resuming from the checkpoint of epoch {resumed_epoch} of {cfg.epochs}", file=sys.stderr)
    metrics_path = out / "metrics.jsonl"
    earlier = [m for _, m in iter_jsonl(metrics_path)] if metrics_path.exists() else []
    callback.history = [m for m in earlier if m["epoch"] <= resumed_epoch]
    if state.is_main_process:
        atomic_write_jsonl(metrics_path, callback.history)
    trainer.add_callback(callback)
    try:
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    except TrainingDiverged as e:
        last = last_complete_checkpoint(out / "checkpoints")
        kept = f"kept the last good checkpoint {last}" if last else "no checkpoint had been saved yet"
        raise TrainingDiverged(f"{out}: {e}; training stopped, {kept}") from None
    except pickle.UnpicklingError as e:  # torch.load(weights_only=True) refused a checkpoint file
        raise KnowtuneError(f"{resume}: refused to load a checkpoint file that holds more than tensors "
                            f"({str(e).splitlines()[0]}); delete the checkpoint to train from scratch") from None
    run_model.eval()
    if state.is_main_process:
        metrics = callback.history
        result = {"metrics": metrics, "early_stop_epoch": callback.best_epoch(), "convergence_epoch": metrics[-1]["epoch"]}
        if cfg.save_weights:
            save_weights(run_model, tokenizer, out / "convergence", {**(meta or {}), "epoch": metrics[-1]["epoch"]})
        atomic_write_json(done, result)
        shutil.rmtree(out / "checkpoints", ignore_errors=True)  # the run is complete: no optimizer state is needed
    state.wait_for_everyone()
    res = _load_result(out)
    res.model = run_model
    return res


def _warn_uneven_last_step(n_examples: int, cfg: SFTConfig, processes: int) -> None:
    """Say when N processes cannot see the same batches as one: accelerate fills the shares of an epoch's
    last, partial batch with examples from the epoch's start (its `even_batches`), so that step differs."""
    if processes > 1 and n_examples % cfg.batch_size:
        warn(f"the training set ({n_examples} examples) is not a multiple of batch_size {cfg.batch_size}: under {processes} "
             f"processes each epoch's last batch is filled up with {cfg.batch_size - n_examples % cfg.batch_size} examples "
             f"from the epoch's start, so the run can differ slightly from a one-process run")


def _load_result(out: Path) -> TrainResult:
    res = read_json(out / "result.json")
    convergence = out / "convergence" if (out / "convergence").exists() else None
    same = res["early_stop_epoch"] == res["convergence_epoch"]
    return TrainResult(
        metrics=res["metrics"], early_stop_epoch=res["early_stop_epoch"], convergence_epoch=res["convergence_epoch"],
        early_stop_dir=out / "early_stop" if (out / "early_stop").exists() else convergence if same else None,
        convergence_dir=convergence,
    )
