"""F-Learning, "forgetting before learning" (Ni et al. 2024; docs/design.md "F-Learning"):

    θ_Δold = FT(θ, K_old) − θ;   θ′ = θ − λ·θ_Δold;   θ* = FT(θ′, K_new)

K_old are the true facts behind the edits (canonical `ground_truth`), K_new the edits (`target_new`);
each is learned as one fine-tuning set with the shared trainer (`train_sft`). The LoRA variants take
θ_Δold = the merged LoRA update (α/r)·B·A, subtracted from the base weights in float32. The
forgetting fine-tune is the expensive part and does not depend on λ, so it runs once and its Δ is
cached as safetensors (`forget_delta`): a λ sweep only re-runs the learning step.

Training targets are `" " + answer` (the edit text convention, see data/edits.py); a QA-style edit
also gets the newline that ends an answer, so that greedy decoding stops after the new answer (the
exact-match protocol reads up to the first newline). Completion-style targets (CounterFact) get none.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Literal

import torch

from knowtune.data.edits import EditExample, knowledge_pairs
from knowtune.errors import ConfigError, KnowtuneError
from knowtune.evaluate.edit_metrics import greedy_answers, target_argmax
from knowtune.files import (
    atomic_write_json,
    check_or_write_manifest,
    fingerprint,
    read_json,
)
from knowtune.matching import is_correct
from knowtune.train.examples import SFTExample
from knowtune.train.sft_config import SFTConfig
from knowtune.train.sft_trainer import TrainResult, train_sft
from knowtune.update.arithmetic import (
    StateDict,
    apply_to_model,
    load_tensors,
    lora_delta_of_model,
    save_tensors,
    task_vector,
)
from knowtune.update.flearning_config import FamilySettings, FLearningConfig, Method

DELTA_FILE = "delta.safetensors"
DELTA_INFO = "delta.json"


def edit_sft_examples(edits: list[EditExample], which: Literal["old", "new"]) -> list[SFTExample]:
    """The fine-tuning set of K_old ('old', the true answers) or K_new ('new', the edits)."""
    pairs = knowledge_pairs(edits, which)
    return [SFTExample(e.id, prompt, target + ("\n" if e.prompt_style == "qa" else ""))
            for e, (prompt, target) in zip(edits, pairs, strict=True)]


@torch.inference_mode()
def knowledge_of(
    model: torch.nn.Module, tokenizer, edits: list[EditExample], which: Literal["old", "new"] = "old",
    max_new_tokens: int = 16, batch_size: int = 16,
) -> dict:
    """How well a model knows K_old (or K_new) on the edit prompts: greedy exact match against any
    alias, and teacher-forced token accuracy of the canonical answer (EasyEdit's token measure)."""
    prompts = [e.prompt for e in edits]
    answers = [e.ground_truth if which == "old" else (e.target_new,) for e in edits]
    tokens = target_argmax(model, tokenizer, prompts, [a[0] for a in answers], batch_size)
    # Completion prompts have no natural stop: their answer gets as many tokens as the target has.
    limits = [max_new_tokens if e.prompt_style == "qa" else len(t.labels) for e, t in zip(edits, tokens, strict=True)]
    greedy = greedy_answers(model, tokenizer, prompts, limits, batch_size)
    per_edit = [{"id": e.id, "answer": g, "exact": is_correct(g, a), "token_accuracy": t.accuracy}
                for e, g, a, t in zip(edits, greedy, answers, tokens, strict=True)]
    n = len(per_edit)
    return {"which": which, "n": n, "exact_match": sum(p["exact"] for p in per_edit) / n if n else None,
            "token_accuracy": sum(p["token_accuracy"] for p in per_edit) / n if n else None, "per_edit": per_edit}


def _delta_key(cfg: SFTConfig, examples: list[SFTExample]) -> str:
    return fingerprint({"config": cfg.model_dump(), "examples": [(e.id, e.prompt, e.target) for e in examples]})


def forget_delta(
    model: torch.nn.Module, tokenizer, edits: list[EditExample], cfg: SFTConfig, out: str | Path, progress: bool = True,
) -> StateDict:
    """θ_Δold: fine-tune `model` (the base weights; changed in place) on K_old and return the update,
    FT(θ) − θ for full fine-tuning or the merged (α/r)·B·A for LoRA. Cached in `out`: a second call
    with the same edits and settings reads `delta.safetensors` and trains nothing."""
    out = Path(out)
    cfg = cfg.model_copy(update={"save_weights": False})  # Δ is the artefact; the weights are not needed
    examples = edit_sft_examples(edits, "old")
    key = _delta_key(cfg, examples)
    if (out / DELTA_FILE).exists() and (out / DELTA_INFO).exists():
        info = read_json(out / DELTA_INFO)
        if info.get("key") != key:
            raise KnowtuneError(f"{out}: holds a forgetting delta of other edits or settings; use another directory")
        return load_tensors(out / DELTA_FILE)
    if (out / "result.json").exists():
        # Trained, but stopped before Δ was written: with no weights kept, the fine-tune must run again.
        shutil.rmtree(out)
    base = {n: t.detach().clone() for n, t in model.state_dict().items()} if cfg.method == "full" else None
    res = train_sft(model, tokenizer, examples, cfg, out, progress=progress)
    if base is not None:
        delta = task_vector(res.model.state_dict(), base)
    else:
        delta = lora_delta_of_model(res.model)
    save_tensors(out / DELTA_FILE, delta, {"method": cfg.method, "key": key})
    norm = float(torch.sqrt(sum((t.float() ** 2).sum() for t in delta.values())))
    atomic_write_json(out / DELTA_INFO, {"key": key, "method": cfg.method, "tensors": len(delta), "norm": norm,
                                         "fit_k_old": [m["fit"] for m in res.metrics]})
    return delta


def forget_then_learn(
    model: torch.nn.Module, tokenizer, edits: list[EditExample], method: Method, lam: float | None,
    delta: StateDict | None, cfg: FamilySettings, out: str | Path, progress: bool = True,
) -> TrainResult:
    """θ′ = θ − λ·Δ written into `model` (methods that forget), then learn K_new with the method's
    family; baselines learn K_new from θ as is. `model` is trained in place."""
    if method.forget is not None:
        if delta is None or lam is None:
            raise KnowtuneError(f"{method.label} forgets before learning: it needs a forgetting delta and λ")
        apply_to_model(model, delta, lam)
    return train_sft(model, tokenizer, edit_sft_examples(edits, "new"), cfg.sft(method.learn), out, progress=progress)


def _summary(knowledge: dict) -> dict:
    return {k: v for k, v in knowledge.items() if k != "per_edit"}


def run_update(model_spec: str, edits: list[EditExample], cfg: FLearningConfig, out: str | Path,
               progress: bool = True) -> dict:
    """`knowtune update`: measure the base model's K_old, forget (Δ cached), learn K_new; the edited
    model is `out/learn/convergence`. Re-running the same update in `out` resumes it."""
    from knowtune.models import describe, load_model

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not edits:
        raise ConfigError("no edits to learn")
    method = cfg.spec
    lm = load_model(model_spec)
    manifest = {"method": method.id, "lam": cfg.lam if method.uses_lambda else None, "config": cfg.model_dump(),
                "model": lm.fingerprint, "edits": fingerprint([e.to_dict() for e in edits])}
    check_or_write_manifest(out / "update_config.json", manifest, "an update")
    # The method assumes the base model knows K_old: measure that before anything changes the weights.
    if (out / "knowledge_before.json").exists():
        before = read_json(out / "knowledge_before.json")
    else:
        before = {w: knowledge_of(lm.model, lm.tokenizer, edits, w, cfg.max_new_tokens, cfg.eval_batch_size)
                  for w in ("old", "new")}
        atomic_write_json(out / "knowledge_before.json", before)
    delta = None
    if method.forget is not None:
        delta = forget_delta(load_model(model_spec).model, lm.tokenizer, edits, cfg.sft(method.forget),
                             out / "forget" / method.forget, progress)
    info = describe(lm)
    res = forget_then_learn(lm.model, lm.tokenizer, edits, method, manifest["lam"], delta, cfg, out / "learn", progress)
    summary = {"method": method.label, "lam": manifest["lam"], "model": info, "edits": len(edits),
               "knowledge_before": {w: _summary(k) for w, k in before.items()},
               "fit_k_new": [m["fit"] for m in res.metrics],
               "edited_model": str(res.convergence_dir) if res.convergence_dir else None, "config": cfg.model_dump()}
    atomic_write_json(out / "update.json", summary)
    return summary
