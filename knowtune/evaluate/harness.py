"""Optional multiple-choice evaluation through EleutherAI's lm-evaluation-harness (`pip install lm-eval`),
on local MMLU files (or any `MCDataset`), for users who want the standard harness's numbers.

Each subject becomes an lm-eval task that *includes the harness's own MMLU template*
(`lm_eval/tasks/mmlu/default/_default_template_yaml`) and only swaps the data source for local JSON
files, so prompt, few-shot sampling and scoring are lm-eval's. How that protocol differs from
knowtune's probe (`knowtune.probe.multiple_choice`, the one the self-aligning study uses):

* Scoring: lm-eval's MMLU task is `output_type: multiple_choice`: it computes the log-likelihood of each
  continuation " A" … " D" (target delimiter " " + choice) after the prompt and takes the argmax (`acc`).
  knowtune takes the argmax of the four letters' next-token logits. For one-token " A" … " D" the two
  differ by one constant per question (the log-softmax normaliser), and a separate space token adds the
  same term to all four, so *on the same prompt* the predictions agree (tests/evaluate/test_multiple_choice_eval.py checks it).
* Exemplars: lm-eval uses the first k questions of the subject's dev split in file order (`first_n`),
  the same k for every question; knowtune draws k from the subject's exemplar pool in an order fixed by
  (seed, subject). The header and layout are the same wording; lm-eval strips the question text.
* Shots: lm-eval's MMLU default is 0-shot unless `num_fewshot` is given (the Open LLM Leaderboard used 5);
  knowtune's default is 5.
* Encoding: lm-eval encodes context + continuation whole and splits at the context's length, left-truncates
  prompts longer than the model's window (knowtune refuses them), and pads batches on the right.
* Output: lm-eval aggregates `acc` per subject (and, with its own group configs, size-weighted per
  category); knowtune also reports the predicted-letter distribution and the knowledge consistency.
"""

from __future__ import annotations

import json
import tempfile
from importlib import metadata
from pathlib import Path

import numpy as np
import yaml

from knowtune.data.multiple_choice import MCDataset, MCQuestion
from knowtune.errors import ConfigError, KnowtuneError
from knowtune.probe.multiple_choice import HEADER, MCPrediction, predictions_from_logits

INSTALL_HINT = "pip install lm-eval"


def _lm_eval():
    """Import lm_eval lazily: it is an optional dependency with many of its own."""
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise KnowtuneError(f"evaluation through lm-evaluation-harness needs the lm_eval package: {INSTALL_HINT}") from None
    return lm_eval, HFLM, TaskManager


def mmlu_template() -> Path:
    """The installed harness's MMLU task template, which every generated task includes."""
    lm_eval, _, _ = _lm_eval()
    path = Path(lm_eval.__file__).parent / "tasks" / "mmlu" / "default" / "_default_template_yaml"
    if not path.exists():
        raise KnowtuneError(f"lm_eval {metadata.version('lm_eval')} has no MMLU template at {path}; "
                            f"knowtune was tested with lm-eval 0.4.13 ({INSTALL_HINT}==0.4.13)")
    return path


def _doc(q: MCQuestion) -> dict:
    """A question in the cais/mmlu field layout the template reads (question, choices, answer 0-3), plus its id."""
    return {"id": q.id, "question": q.question, "subject": q.subject, "choices": list(q.options), "answer": q.answer}


def _write_tasks(data: MCDataset, questions: list[MCQuestion], root: Path) -> dict[str, str]:
    """One task YAML + JSONL files per subject under `root`; returns task name -> subject."""
    if data.exemplar_split is None:
        raise ConfigError(f"dataset {data.name!r} has no exemplar split; lm-eval's MMLU template needs a dev split")
    template = mmlu_template()
    names = {}
    for i, subject in enumerate(sorted({q.subject for q in questions})):
        dev = [e for e in data.split(data.exemplar_split) if e.subject == subject]
        if not dev:
            raise ConfigError(f"subject {subject!r} has no {data.exemplar_split!r} questions for lm-eval's few-shot split")
        files = {}
        for split, qs in (("test", [q for q in questions if q.subject == subject]), ("dev", dev)):
            files[split] = str(root / f"{i:03d}_{split}.jsonl")
            Path(files[split]).write_text("".join(json.dumps(_doc(q)) + "\n" for q in qs), encoding="utf-8")
        name = f"knowtune_mc_{i:03d}"
        config = {
            "include": str(template), "task": name, "task_alias": subject, "dataset_path": "json", "dataset_name": None,
            "dataset_kwargs": {"data_files": files, "cache_dir": str(root / "hf-cache")},
            "description": HEADER.format(topic=data.topic(subject)),
        }
        (root / f"{name}.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        names[name] = subject
    return names


def lm_eval_mc(
    model, tokenizer, data: MCDataset, questions: list[MCQuestion], k_shot: int = 5, batch_size: int = 8,
) -> list[MCPrediction]:
    """Evaluate `questions` with lm-eval's MMLU protocol; one prediction per question, in order, with the
    option probabilities as the softmax of lm-eval's four continuation log-likelihoods."""
    _, HFLM, TaskManager = _lm_eval()
    from lm_eval import simple_evaluate

    if not questions:
        raise ConfigError("no questions to evaluate")
    device = str(next(model.parameters()).device)
    with tempfile.TemporaryDirectory(prefix="knowtune-lm-eval-") as tmp:
        names = _write_tasks(data, questions, Path(tmp))
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=device)
        out = simple_evaluate(model=lm, tasks=list(names), num_fewshot=k_shot, task_manager=TaskManager(
            include_path=tmp, include_defaults=False), log_samples=True, bootstrap_iters=0)
    loglik: dict[str, list[float]] = {}
    for name in names:
        for sample in out["samples"][name]:
            loglik[sample["doc"]["id"]] = [float(r[0]) for r in sample["filtered_resps"]]
    missing = [q.id for q in questions if q.id not in loglik]
    if missing:
        raise KnowtuneError(f"lm-eval returned no result for {len(missing)} questions (e.g. {missing[0]})")
    return predictions_from_logits(questions, np.array([loglik[q.id] for q in questions]))
