"""Choosing each family's learning rate on dev edits, before any F-Learning run.

A rate that learns 100 edits at once can also rewrite the answers to every other question of their
relations, and then Locality says nothing about the methods. So, when `lr_grid` names rates, the
study trains the family's plain baseline (FT for full, LoRA for lora) on the first seed's edits at
every rate and keeps one by a rule fixed in advance (`choose_rate`). Only the baselines take part,
never an F-Learning method, so the choice cannot lean towards the claims under test; forgetting and
learning then share the chosen rate, as in the paper.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from rich.console import Console

from knowtune.errors import ConfigError
from knowtune.evaluate.edit_metrics import (
    PreEditReference,
    edit_scores,
    pre_edit_reference,
)
from knowtune.files import (
    atomic_write_json,
    check_or_write_manifest,
    fingerprint,
    read_json,
)
from knowtune.models import LoadedModel, load_model
from knowtune.studies.flearning.config import FLearningStudyConfig
from knowtune.train.sft_trainer import TrainingDiverged
from knowtune.update.flearning import forget_then_learn
from knowtune.update.flearning_config import METHODS

console = Console(stderr=True)
BASELINE = {"full": "ft", "lora": "lora"}


def _mean(r: dict, metrics: tuple[str, ...]) -> float:
    vals = [r["dev"][m] for m in metrics if r["dev"][m] is not None]
    return sum(vals) / len(vals) if vals else 1.0  # edits without such prompts cannot show damage there


def choose_rate(rows: list[dict], floor: float) -> float:
    """The rule: among rates whose dev Locality reaches `floor`, the best mean of dev Reliability and
    Generality; if none reaches it, the rate with the highest Locality. Ties go to the smaller rate."""
    ok = [r for r in rows if "diverged" not in r]
    if not ok:
        raise ConfigError("every learning rate of the grid diverged; give smaller rates in lr_grid")
    passing = [r for r in ok if _mean(r, ("locality",)) >= floor]
    if passing:
        return max(passing, key=lambda r: (_mean(r, ("reliability", "generality")), -r["lr"]))["lr"]
    return max(ok, key=lambda r: (_mean(r, ("locality",)), -r["lr"]))["lr"]


def _sweep_run(cfg: FLearningStudyConfig, family: str, lr: float, edits, dev, ref, lm: LoadedModel, run_dir: Path,
               progress: bool) -> dict:
    started = time.time()
    settings = cfg.model_copy(update={family: cfg.sft(family).model_copy(update={"learning_rate": lr})})
    try:
        res = forget_then_learn(load_model(cfg.model).model, lm.tokenizer, edits, METHODS[BASELINE[family]], None, None,
                                settings, run_dir, progress)
    except TrainingDiverged as e:
        console.print(f"[red]{e}[/red]")
        return {"lr": lr, "diverged": str(e)}
    s = edit_scores(res.model, lm.tokenizer, dev, ref, batch_size=cfg.eval_batch_size)
    return {"lr": lr, "dev": {"reliability": s.reliability, "generality": s.generality, "locality": s.locality, "n": len(dev)},
            "fit_k_new": [m["fit"] for m in res.metrics], "seconds": round(time.time() - started, 1)}


def choose_learning_rates(cfg: FLearningStudyConfig, edits: list, lm: LoadedModel, sweep_dir: Path,
                          progress: bool = True) -> dict:
    """Per family in `cfg.lr_grid`: every rate's baseline scores on the dev edits (token protocol) and the chosen rate.
    Runs are kept in `sweep_dir` and reused when the study is run again."""
    manifest = {"edits": fingerprint([e.to_dict() for e in edits]), "model": lm.fingerprint,
                **{f: cfg.sft(f).model_dump(exclude={"learning_rate"}) for f in cfg.lr_grid}}
    check_or_write_manifest(sweep_dir / "manifest.json", manifest, "a learning-rate sweep")
    ref_path = sweep_dir / "reference_token.json"
    dev = [e for e in edits if e.split == "dev"]
    if not ref_path.exists():
        pre_edit_reference(lm.model, lm.tokenizer, dev, "token", batch_size=cfg.eval_batch_size).save(ref_path)
    ref = PreEditReference.load(ref_path)
    out = {}
    for family, grid in cfg.lr_grid.items():
        rows = []
        for i, lr in enumerate(grid, start=1):
            run_dir = sweep_dir / f"{family}_lr{lr:g}"
            if not (run_dir / "scores.json").exists():
                shutil.rmtree(run_dir, ignore_errors=True)  # a run killed before scoring kept no weights: train again
                console.print(f"[lr {i}/{len(grid)}] {METHODS[BASELINE[family]].label} at learning rate {lr:g}")
                atomic_write_json(run_dir / "scores.json", _sweep_run(cfg, family, lr, edits, dev, ref, lm, run_dir, progress))
            rows.append(read_json(run_dir / "scores.json"))
        chosen = choose_rate(rows, cfg.locality_floor)
        console.print(f"{family} fine-tuning: learning rate {chosen:g} chosen on the dev edits")
        out[family] = {"baseline": BASELINE[family], "grid": rows, "chosen": chosen}
    atomic_write_json(sweep_dir / "choice.json", out)
    return out
