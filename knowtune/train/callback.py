"""`KnowledgeCallback`: the paper's fit tracking and early stopping inside any `transformers.Trainer`
(TRL's `SFTTrainer` included), and inside knowtune's own trainer.

After every epoch (or every N optimizer steps) it measures the training-set **fit** per SliCK category
(teacher-forced, one forward pass, no generation; see fit.py) and dev accuracy (greedy answers,
exact match after normalisation against any alias: that needs generation), logs them through the
trainer's callbacks (so `report_to="tensorboard"` / `"wandb"` show them), appends them to
`knowledge_metrics.jsonl` (fsynced line by line) with each example's fit under predictions/, saves
the best model by dev accuracy and, with `early_stop`, stops training after `patience` evaluations
without improvement. Under `accelerate launch` (DDP) it measures on the main process only and
broadcasts the stop decision.
"""

from __future__ import annotations

import inspect
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import CallbackHandler

from knowtune.data.formats import qa_prompt
from knowtune.data.sft_rows import SFTRow, SFTRowSet, read_sft_rows
from knowtune.engine import HFTreeEngine, SamplingParams
from knowtune.errors import ConfigError
from knowtune.files import JsonlAppender, atomic_write_jsonl
from knowtune.matching import is_correct
from knowtune.probe.records import ProbeRecord
from knowtune.probe.slick import read_probe_records
from knowtune.train.examples import SFTExample
from knowtune.train.fit import teacher_forced_fit
from knowtune.train.weights import save_weights

EvaluateFn = Callable[[torch.nn.Module, int], dict]
METRICS_FILE = "knowledge_metrics.jsonl"
BEST_DIR = "knowledge_best"


def chat_pair(tokenizer, question: str, answer: str, system: str | None = None) -> tuple[str, str]:
    """(prompt, target) of a one-turn chat as the tokenizer's chat template writes it (as TRL trains it);
    the target ends with the end-of-turn token, where generation stops."""
    msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]
    prompt = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(msgs + [{"role": "assistant", "content": answer}], tokenize=False)
    if not full.startswith(prompt):
        raise ConfigError("the tokenizer's chat template does not extend the prompt with the answer; use prompt='qa'")
    target = full[len(prompt):]
    eos = tokenizer.eos_token
    return prompt, target[: target.index(eos) + len(eos)] if eos and eos in target else target


def pair(tokenizer, prompt: str, question: str, answer: str, system: str | None = None) -> tuple[str, str]:
    """(prompt, target) in one of the two prompt formats: 'chat' (the chat template) or 'qa' (`Q: …\\nA:`)."""
    return chat_pair(tokenizer, question, answer, system) if prompt == "chat" else (qa_prompt(question), f" {answer}\n")


def tracked_examples(tokenizer, records: list[ProbeRecord], train: SFTRowSet | None, prompt: str) -> list[SFTExample]:
    """The audited rows as (prompt, trained label) pairs grouped by SliCK category. With `train` (the set
    actually trained on, e.g. an export), each of its rows is matched to its audit record by question
    and tracked with its own label; without it, the label is the audited answer."""
    if train is None:
        return [SFTExample(r.id, *pair(tokenizer, prompt, r.question, r.answers[0]), group=r.category) for r in records]
    by_question: dict[str, list[ProbeRecord]] = defaultdict(list)
    for r in records:
        by_question[r.question].append(r)
    out = []
    for row in train.rows:
        if row.question and row.answers and by_question.get(row.question):
            rec = by_question[row.question].pop(0)
            out.append(SFTExample(rec.id, *pair(tokenizer, prompt, row.question, row.answers[0], row.system), group=rec.category))
    return out


def dev_accuracy(tokenizer, rows: list[SFTRow], prompt: str, batch_size: int = 16, max_new_tokens: int = 24) -> EvaluateFn:
    """An evaluate function: the share of `rows` whose greedy answer matches an answer (first line, normalised)."""
    prompts = [pair(tokenizer, prompt, r.question, r.answers[0], r.system)[0] for r in rows]

    def evaluate(model, epoch: int) -> dict:
        engine = HFTreeEngine(model, tokenizer, batch_size=batch_size)
        outs = engine.complete("", prompts, [0] * len(prompts), SamplingParams(n_samples=0, max_new_tokens=max_new_tokens))
        return {"dev_accuracy": sum(is_correct(o.greedy, r.answers) for o, r in zip(outs, rows)) / len(rows)}

    return evaluate


def _rows(source: str | Path | SFTRowSet) -> SFTRowSet:
    return source if isinstance(source, SFTRowSet) else read_sft_rows(source)


def _calling_handler() -> CallbackHandler | None:
    """The trainer's CallbackHandler that is calling this callback. A callback is not given its trainer;
    logging through the handler is what `Trainer.log` does, so the reporting callbacks see the metrics."""
    frame = inspect.currentframe()
    while frame is not None:
        if isinstance(frame.f_locals.get("self"), CallbackHandler):
            return frame.f_locals["self"]
        frame = frame.f_back
    return None


def _broadcast(flag: bool) -> bool:
    """The main process's decision, on every process (a no-op outside torch.distributed)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        box = [flag]
        torch.distributed.broadcast_object_list(box, src=0)
        return bool(box[0])
    return flag


class KnowledgeCallback(TrainerCallback):
    """Fit per SliCK category and dev accuracy during training, logged, recorded, with early stopping.

    `audit`: an audit.jsonl from `knowtune audit` (or any probe.jsonl); `train`: the file actually trained
    on when it is not the audited set itself (e.g. the idk export); `dev`: QA rows in any shape
    `knowtune audit` reads; `every`: "epoch" or a number of optimizer steps; `prompt`: "chat" (the
    tokenizer's chat template, as TRL trains `messages` rows; the default when there is one) or "qa".
    `fit_bf16`: the fit check in bf16 with near ties recomputed in float32 (fit.py). Outputs go to
    `output_dir` (default: the trainer's): knowledge_metrics.jsonl and knowledge_best/."""

    def __init__(self, tokenizer, audit: str | Path | None = None, dev: str | Path | SFTRowSet | None = None,
                 every: str | int = "epoch", early_stop: bool = False, patience: int = 1, *,
                 train: str | Path | SFTRowSet | None = None, prompt: str | None = None, output_dir: str | Path | None = None,
                 save_best: bool = True, batch_size: int = 16, max_new_tokens: int = 24,
                 examples: list[SFTExample] | None = None, evaluate: EvaluateFn | None = None, select: str = "dev_accuracy",
                 log: bool = True, metrics_file: str = METRICS_FILE, best_dir: str = BEST_DIR, best_meta: dict | None = None,
                 fit_bf16: bool = False):
        if every != "epoch" and not (isinstance(every, int) and not isinstance(every, bool) and every > 0):
            raise ConfigError(f"every: expected 'epoch' or a positive number of steps, got {every!r}")
        if patience < 1:
            raise ConfigError(f"patience: expected at least 1, got {patience}")
        prompt = prompt or ("chat" if getattr(tokenizer, "chat_template", None) else "qa")
        if prompt not in ("chat", "qa"):
            raise ConfigError(f"prompt: expected 'chat' or 'qa', got {prompt!r}")
        if examples is None:
            if audit is None:
                raise ConfigError("KnowledgeCallback needs audit= (an audit.jsonl from `knowtune audit`)")
            examples = tracked_examples(tokenizer, read_probe_records(audit), None if train is None else _rows(train), prompt)
        if evaluate is None and dev is not None:
            dev_rows = _rows(dev).auditable()
            if not dev_rows:
                raise ConfigError(f"dev: {dev}: no question/answer rows")
            evaluate = dev_accuracy(tokenizer, dev_rows, prompt, batch_size, max_new_tokens)
        if early_stop and evaluate is None:
            raise ConfigError("early_stop needs dev= (the dev accuracy it watches)")
        self.tokenizer, self.examples, self.evaluate, self.select = tokenizer, examples, evaluate, select
        self.every, self.early_stop, self.patience, self.save_best, self.log = every, early_stop, patience, save_best, log
        self.batch_size, self.metrics_file, self.best_dir, self.best_meta = batch_size, metrics_file, best_dir, best_meta or {}
        self.fit_bf16 = fit_bf16
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.history: list[dict] = []
        self.stopped_at: dict | None = None  # the row after which early stopping ended training

    # what a row starts with; knowtune's trainer records the epoch and its training loss instead
    def row_head(self, state) -> dict:
        """The row's position in training."""
        return {"step": state.global_step, "epoch": state.epoch}

    def measure(self, model, epoch: int, at: str) -> dict:
        """Fit per group (one teacher-forced pass) and the evaluate function's metrics, in eval mode;
        each example's fit goes to predictions/fit_<at>.jsonl (the studies' bootstrap resamples it)."""
        was_training = model.training
        model.eval()
        try:
            fit = teacher_forced_fit(model, self.tokenizer, [(e.prompt, e.target) for e in self.examples], self.batch_size,
                                     bf16=self.fit_bf16)
            atomic_write_jsonl(self.output_dir / "predictions" / f"fit_{at}.jsonl",
                               [{"id": ex.id, "group": ex.group, "fitted": ok} for ex, ok in zip(self.examples, fit)])
            by_group: dict[str, list[bool]] = defaultdict(list)
            for ex, ok in zip(self.examples, fit):
                by_group[ex.group].append(ok)
            row = {"fit": sum(fit) / len(fit) if fit else None,
                   "fit_by_group": {g: sum(v) / len(v) for g, v in sorted(by_group.items())},
                   "fitted_by_group": {g: sum(v) for g, v in sorted(by_group.items())},
                   "group_sizes": {g: len(v) for g, v in sorted(by_group.items())}}
            if self.evaluate is not None:
                row.update(self.evaluate(model, epoch))
        finally:
            model.train(was_training)
        return row

    def best(self) -> dict | None:
        """The row with the best `select` metric so far (the earliest on ties)."""
        scored = [r for r in self.history if r.get(self.select) is not None]
        return max(scored, key=lambda r: r[self.select]) if scored else None

    def scalars(self, row: dict) -> dict[str, float]:
        """The row's numbers under knowledge/…, as the reporting integrations log them."""
        out = {f"knowledge/{k}": v for k, v in row.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("step", "epoch", "train_loss")}
        out.update({f"knowledge/fit/{g}": v for g, v in row.get("fit_by_group", {}).items()})
        return out

    def on_train_begin(self, args, state, control, **kwargs):
        if self.output_dir is None:
            self.output_dir = Path(args.output_dir)
        return control

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.every != "epoch" and state.global_step % self.every == 0:
            self.checkpoint(args, state, control, model)
        return control

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        if self.every == "epoch":
            self.checkpoint(args, state, control, model)
        return control

    def checkpoint(self, args, state, control, model) -> None:
        """Measure, record, log, keep the best model, and decide whether to stop (on the main process)."""
        stop = False
        if state.is_world_process_zero:
            head = self.row_head(state)
            epoch = round(state.epoch or 0)
            row = {**head, **self.measure(model, epoch, f"epoch{epoch}" if self.every == "epoch" else f"step{state.global_step}")}
            self.history.append(row)
            with JsonlAppender(self.output_dir / self.metrics_file) as sink:
                sink.write_many([row])
            if self.log:
                self._log(args, state, control, self.scalars(row))
            best = self.best()
            if best is row and self.save_best:
                at = {k: head[k] for k in ("epoch", "step") if k in head}
                save_weights(model, self.tokenizer, self.output_dir / self.best_dir, {**self.best_meta, **at})
            if self.early_stop and best is not None:
                stop = len(self.history) - 1 - self.history.index(best) >= self.patience
        if _broadcast(stop):
            control.should_training_stop = True
            self.stopped_at = self.history[-1] if self.history else {}

    def _log(self, args, state, control, logs: dict) -> None:
        """What `Trainer.log` does: into the state's log history and through every callback's on_log."""
        logs = {**logs, "epoch": state.epoch}
        state.log_history.append({**logs, "step": state.global_step})
        handler = _calling_handler()
        if handler is not None:
            pending = control.should_log  # CallbackHandler.on_log clears it: the trainer's own log due now must still happen
            handler.on_log(args, state, control, logs)
            control.should_log = pending
