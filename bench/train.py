"""One epoch of the quick SliCK study's training: knowtune vs a plain Hugging Face Trainer run
whose per-epoch evaluation generates answers with `model.generate`, in one run.

Both sides fine-tune the builtin model on the same |D| question → answer pairs with the same
Trainer settings, then measure the training-set fit and the dev / test / OOD accuracy. The baseline
generates an answer per question (greedy, stop at newline); knowtune checks the fit in one
teacher-forced forward pass and answers the questions with its batched engine. Each side runs in its
own process. A third process repeats knowtune's side with `bf16=true` (mixed-precision training on the same
steps), its fit and accuracy measured in float32 as on the others.

    python bench/train.py
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from common import run_in_process  # noqa: E402  (bench/ is on sys.path when run as a script)

RESULTS = Path(__file__).parent / "results" / "train.json"


def _setup(args):
    import torch

    from knowtune.data import load_qa, select_examples
    from knowtune.data.formats import qa_prompt
    from knowtune.models import load_model
    from knowtune.studies.registry import get_study
    from knowtune.train.examples import SFTExample

    torch.set_num_threads(args.threads)
    cfg = get_study("new-knowledge").load_config("quick", {})
    data = load_qa(cfg.data)
    rel = ",".join(cfg.relations)
    train = select_examples(data, "train", rel, cfg.size)
    evals = (select_examples(data, "dev", rel, cfg.dev_size) + select_examples(data, "test", rel, cfg.test_size)
             + select_examples(data, "test", ",".join(cfg.ood_relations), cfg.ood_test_size))
    examples = [SFTExample(e.id, qa_prompt(e.question), f" {e.answers[0]}\n") for e in train]
    sft = cfg.train.model_copy(update={"epochs": 1})
    return cfg, examples, evals, sft, load_model(cfg.model)


def _knowtune(args, queue):
    from knowtune.evaluate.qa import evaluate_qa
    from knowtune.probe.records import ProbeRecord
    from knowtune.train.fit import teacher_forced_fit
    from knowtune.train.sft_trainer import train_sft

    cfg, examples, evals, sft, lm = _setup(args)
    sft = sft.model_copy(update={"bf16": args.bf16})
    timing = {}
    records = [ProbeRecord.from_dict({**e.to_dict(), "category": "all"}) for e in evals]

    def evaluate(model, epoch):
        start = time.perf_counter()
        metrics, _ = evaluate_qa(model, lm.tokenizer, records, sft.eval_batch_size)
        timing["eval_s"] = time.perf_counter() - start
        return {"accuracy": metrics["accuracy"]}

    start = time.perf_counter()
    res = train_sft(lm.model, lm.tokenizer, examples, sft, Path(args.workdir) / ("knowtune-bf16" if args.bf16 else "knowtune"), evaluate, "accuracy", progress=False)
    total = time.perf_counter() - start
    t0 = time.perf_counter()  # the fit check once more, alone, to price it against the epoch's training
    fit = teacher_forced_fit(res.model, lm.tokenizer, [(e.prompt, e.target) for e in examples])
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()  # and in bf16 with float32 recompute of near ties: must give the same fit
    fit_bf16 = teacher_forced_fit(res.model, lm.tokenizer, [(e.prompt, e.target) for e in examples], bf16=True)
    fit_bf16_s = time.perf_counter() - t0
    queue.put({"seconds": total, "fit_s": fit_s, "eval_s": timing["eval_s"], "fit": sum(fit) / len(fit),
               "accuracy": res.metrics[-1]["accuracy"], "train_s": total - fit_s - timing["eval_s"],
               "fit_bf16_s": fit_bf16_s, "fit_bf16_identical": float(fit_bf16 == fit)})


def _baseline(args, queue):
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from knowtune.data.formats import qa_prompt
    from knowtune.engine import answer_text
    from knowtune.matching import is_correct
    from knowtune.train.sft_trainer import _collate, _PairDataset

    cfg, examples, evals, sft, lm = _setup(args)
    model, tok = lm.model, lm.tokenizer
    out = {}

    def generate(prompt: str) -> str:
        inputs = tok(prompt, return_tensors="pt")
        with torch.inference_mode():
            ids = model.generate(**inputs, do_sample=False, max_new_tokens=24, stop_strings=["\n"], tokenizer=tok,
                                 pad_token_id=tok.pad_token_id)
        return answer_text(tok, ids[0, inputs["input_ids"].shape[1]:].tolist())

    class GenerationEval(TrainerCallback):
        def on_epoch_end(self, args_, state, control, **kw):
            model.eval()
            start = time.perf_counter()
            out["fit"] = sum(generate(e.prompt) == e.target.strip() for e in examples) / len(examples)
            out["fit_s"] = time.perf_counter() - start
            out["accuracy"] = sum(is_correct(generate(qa_prompt(e.question)), e.answers) for e in evals) / len(evals)
            out["eval_s"] = time.perf_counter() - start - out["fit_s"]
            model.train()

    targs = TrainingArguments(output_dir=str(Path(args.workdir) / "baseline"), num_train_epochs=1,
                              learning_rate=sft.learning_rate, per_device_train_batch_size=sft.batch_size,
                              lr_scheduler_type=sft.lr_scheduler_type, seed=sft.seed, data_seed=sft.seed,
                              save_strategy="no", logging_strategy="no", report_to="none", disable_tqdm=True,
                              remove_unused_columns=False, use_cpu=True)
    trainer = Trainer(model=model, args=targs, train_dataset=_PairDataset(tok, examples), data_collator=_collate(tok.pad_token_id),
                      callbacks=[GenerationEval()])
    start = time.perf_counter()
    trainer.train()
    out["seconds"] = time.perf_counter() - start
    out["train_s"] = out["seconds"] - out["fit_s"] - out["eval_s"]
    queue.put(out)


def main() -> None:
    import tempfile

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        args.workdir = tmp
        args.bf16 = False
        kt = run_in_process(_knowtune, args)
        args.bf16 = True
        kt16 = run_in_process(_knowtune, args)
        base = run_in_process(_baseline, args)
    result = {
        "command": " ".join(["python", "bench/train.py", *sys.argv[1:]]),
        "baseline_s": round(base["seconds"], 2), "knowtune_s": round(kt["seconds"], 2),
        "speedup": round(base["seconds"] / kt["seconds"], 2),
        "baseline": {k: round(v, 4) for k, v in base.items()}, "knowtune": {k: round(v, 4) for k, v in kt.items()},
        "fit_share_of_training": round(kt["fit_s"] / kt["train_s"], 4),
        "fit_share_of_training_bf16": round(kt["fit_bf16_s"] / kt["train_s"], 4),
        "fit_bf16_identical_to_float32": bool(kt["fit_bf16_identical"]),
        "train_bf16": {"train_s": round(kt16["train_s"], 2), "train_speedup_vs_float32": round(kt["train_s"] / kt16["train_s"], 2),
                       "fit": round(kt16["fit"], 4), "accuracy": round(kt16["accuracy"], 4)},
    }
    print(f"{'':28}{'HF Trainer + generate':>24}{'knowtune':>12}")
    for key in ("seconds", "train_s", "fit_s", "eval_s", "fit", "accuracy"):
        print(f"{key:28}{base[key]:>24.3f}{kt[key]:>12.3f}")
    print(f"speedup {result['speedup']}×; knowtune's fit tracking costs {result['fit_share_of_training']:.1%} of the epoch's training time "
          f"(bf16 with float32 recompute: {result['fit_share_of_training_bf16']:.1%}, "
          f"identical fit: {result['fit_bf16_identical_to_float32']})")
    print(f"training with bf16=true: {kt16['train_s']:.1f} s vs {kt['train_s']:.1f} s float32 "
          f"({result['train_bf16']['train_speedup_vs_float32']}×), fit {kt16['fit']:.3f} vs {kt['fit']:.3f}, "
          f"accuracy {kt16['accuracy']:.3f} vs {kt['accuracy']:.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
