"""Plain functions behind `knowtune update`, `knowtune evaluate --edits` and `knowtune study flearning`;
cli.py registers them. Bad input raises KnowtuneError subclasses with one-line messages."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from knowtune.data.edit_records import resolve_edits
from knowtune.errors import ConfigError
from knowtune.evaluate.edit_metrics import PROTOCOLS, edit_scores, pre_edit_reference
from knowtune.files import atomic_write_json
from knowtune.recipes.config import load_study_config, set_key
from knowtune.recipes.flearning_config import FLearningStudyConfig
from knowtune.recipes.flearning_study import run_flearning_study
from knowtune.update.flearning import run_update
from knowtune.update.flearning_config import FLearningConfig

C = TypeVar("C", bound=BaseModel)


def _validated(model_cls: type[C], tree: dict, what: str) -> C:
    try:
        return model_cls(**tree)
    except ValidationError as e:
        err = e.errors()[0]
        raise ConfigError(f"{what}: key '{'.'.join(map(str, err['loc'])) or '(root)'}': {err['msg']}") from None


def update_command(model: str, edits: str, method: str, lam: float, out: Path, overrides: dict[str, str]) -> None:
    """`knowtune update`: learn the edits with one method (`--set full.epochs=5` style overrides)."""
    tree: dict = {"method": method, "lam": lam}
    for key, value in overrides.items():
        set_key(tree, key, value)
    cfg = _validated(FLearningConfig, tree, "update settings")
    run_update(model, resolve_edits(edits).examples, cfg, out)


def evaluate_edits_command(model: str, edits: str, protocol: str, reference_model: str, out: Path | None) -> dict:
    """`knowtune evaluate --edits`: R/G/L of `model` under one protocol or 'both', with Locality
    against `reference_model` (the pre-edit model); writes per-edit scores to `out` when given."""
    from knowtune.models import load_model

    protocols = list(PROTOCOLS) if protocol == "both" else [protocol]
    if any(p not in PROTOCOLS for p in protocols):
        raise ConfigError(f"unknown edit-metric protocol {protocol!r}; use token, exact or both")
    ds = resolve_edits(edits)
    ref_lm = load_model(reference_model)
    refs = {p: pre_edit_reference(ref_lm.model, ref_lm.tokenizer, ds.examples, p) for p in protocols}
    del ref_lm  # the two models need not be in memory together
    lm = load_model(model)
    scores = {p: edit_scores(lm.model, lm.tokenizer, ds.examples, refs[p]) for p in protocols}
    result = {"model": model, "reference_model": reference_model, "edits": edits, "n_edits": len(ds.examples),
              "skipped": ds.skipped, "scores": {p: s.to_dict() for p, s in scores.items()}}
    if out is not None:
        atomic_write_json(out, {**result, "per_edit": {p: s.per_edit for p, s in scores.items()}})
    return result


def study_flearning_command(out: Path, preset: str, overrides: dict[str, str]) -> dict:
    """`knowtune study flearning`: validate the preset and overrides, then run or resume the study."""
    cfg = load_study_config(FLearningStudyConfig, "flearning", preset, overrides)
    return run_flearning_study(cfg, out)
