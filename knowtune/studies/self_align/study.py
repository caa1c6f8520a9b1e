"""The self-align study (Ren et al. 2024) end to end: probe the base model → Harmonious /
Incompatible / Self-aligning sets (and mixtures) → fine-tune each, per seed → after every epoch evaluate
HOMO / ID / OOD (and dev) with the probe's own protocol → findings → report. The protocol (`probe.scoring`:
letter-logit as in the paper, or cloze option likelihood) fixes the base probe, the training format and every
evaluation, so one study never mixes the two.

The base model and every fine-tuned model read the same k-shot prompts (exemplars fixed by `probe_seed`),
so accuracy changes and the knowledge consistency (option rankings before vs after) compare like with
like. Seeds vary the set sampling, the data order and the LoRA initialisation; the probe runs once.
Every stage writes into the study directory and is skipped when its output is complete, so a killed
study resumes where it stopped.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from rich.console import Console

from knowtune.curate.self_align_sets import (
    ConsistencyExample,
    consistency_sets,
    evaluation_sets,
    mixtures,
)
from knowtune.data.multiple_choice import LETTERS, MCDataset, MCQuestion, load_mc
from knowtune.data.select import round_robin
from knowtune.errors import ConfigError, KnowtuneError
from knowtune.evaluate.multiple_choice import chance_check, evaluate_parts
from knowtune.files import (
    atomic_write_json,
    atomic_write_jsonl,
    fingerprint,
    iter_jsonl,
    read_json,
    stable_int,
)
from knowtune.models import describe, load_model
from knowtune.probe.multiple_choice import MCPrediction, probe_mc
from knowtune.studies.common import check_study, load_outcomes, train_sets, write_sets
from knowtune.studies.self_align.config import SelfAlignConfig
from knowtune.studies.self_align.findings import analyse
from knowtune.studies.self_align.report import write_report
from knowtune.train.examples import SFTExample

console = Console(stderr=True)


def balanced_sample(questions: list[MCQuestion], n: int | None, seed: int, tag: str) -> list[MCQuestion]:
    """n questions taken round-robin over subjects, each subject in a shuffled order fixed by (seed, tag)."""
    if n is None or n >= len(questions):
        return list(questions)
    rng = np.random.default_rng(stable_int("selfalign-sample", seed, tag))
    groups: dict[str, list[MCQuestion]] = defaultdict(list)
    for q in sorted(questions, key=lambda q: q.id):
        groups[q.subject].append(q)
    return round_robin([[g[i] for i in rng.permutation(len(g))] for _, g in sorted(groups.items())], n)


def study_questions(cfg: SelfAlignConfig, data: MCDataset) -> dict[str, list[MCQuestion]]:
    """The questions the study probes: the training pool, dev (if any) and the HOMO / ID / OOD test sets."""
    unknown = sorted(set(cfg.train_subjects) - set(data.subjects()))
    if unknown:
        raise ConfigError(f"unknown training subjects {unknown} in {data.name!r} (has: {', '.join(data.subjects())})")
    for split in {cfg.pool_split, cfg.test_split, cfg.dev_split} - {None}:
        if split not in data.splits():
            raise ConfigError(f"split {split!r} is not in {data.name!r} (has: {', '.join(data.splits())})")
    train = set(cfg.train_subjects)
    tests = evaluation_sets(data, cfg.train_subjects, cfg.test_split)
    homo = balanced_sample(tests["homo"], cfg.homo_size, cfg.probe_seed, "homo")
    held_out = {q.id for q in homo}  # when pool and test share a split (MMLU's test), HOMO stays out of the pool
    pool = [q for q in data.split(cfg.pool_split) if q.subject in train and q.id not in held_out]
    parts = {"pool": balanced_sample(pool, cfg.pool_size, cfg.probe_seed, "pool")}
    if not parts["pool"]:
        raise KnowtuneError(f"no {cfg.pool_split!r} questions of {sorted(train)} are left for the training pool")
    if cfg.dev_split is not None:
        dev = [q for q in data.split(cfg.dev_split) if q.subject in train and q.id not in held_out]
        if not dev:
            raise ConfigError(f"no {cfg.dev_split!r} questions of {sorted(train)} for the dev set (set dev_split: null)")
        parts["dev"] = balanced_sample(dev, cfg.dev_size, cfg.probe_seed, "dev")
    parts["homo"] = homo
    parts["id"] = balanced_sample(tests["id"], cfg.id_size, cfg.probe_seed, "id")
    parts["ood"] = balanced_sample(tests["ood"], cfg.ood_size, cfg.probe_seed, "ood")
    return parts


def base_predictions(cfg: SelfAlignConfig, data: MCDataset, lm, parts: dict[str, list[MCQuestion]],
                     out: Path) -> dict[str, list[MCPrediction]]:
    """The base model's k-shot predictions on every part, cached in `out/base` under a key of what they depend on."""
    key = fingerprint({"model": lm.fingerprint, "data": data.fingerprint(), "k_shot": cfg.k_shot,
                       "probe_seed": cfg.probe_seed, "scoring": cfg.probe.model_dump(), "ids": {p: [q.id for q in qs] for p, qs in parts.items()}})
    path, key_path = out / "base" / "predictions.jsonl", out / "base" / "key.json"
    if not (key_path.exists() and read_json(key_path) == {"key": key}):
        n = sum(map(len, parts.values()))
        console.print(f"probing the base model on {n} questions ({cfg.k_shot}-shot, {cfg.probe.label()} scoring)")
        questions = [q for qs in parts.values() for q in qs]
        preds = probe_mc(lm.model, lm.tokenizer, data, questions, cfg.k_shot, cfg.probe_seed, cfg.batch_size, progress=True,
                         scoring=cfg.probe)
        part_of = {q.id: p for p, qs in parts.items() for q in qs}
        atomic_write_jsonl(path, [{"part": part_of[p.question.id], **p.to_dict()} for p in preds])
        atomic_write_json(key_path, {"key": key})
    by_part: dict[str, list[MCPrediction]] = defaultdict(list)
    for _, row in iter_jsonl(path):
        by_part[row["part"]].append(MCPrediction.from_dict(row))
    return dict(by_part)


def describe_set(rows: list[ConsistencyExample]) -> dict:
    """Size, label letters, label sources and how many labels are the gold option."""
    return {"size": len(rows), "label_letters": {L: sum(r.label == i for r in rows) for i, L in enumerate(LETTERS)},
            "label_source": dict(Counter(r.label_source for r in rows)), "gold_labels": sum(r.label == r.gold for r in rows)}


def training_sets(
    cfg: SelfAlignConfig, data: MCDataset, pool: list[MCPrediction], seed: int
) -> dict[str, list[ConsistencyExample]]:
    """The requested sets and mixtures of one seed; an empty set stops the study with the curation's message."""
    sets = consistency_sets(pool, data, cfg.size, seed, cfg.probe.scoring)
    out = {name: sets[name] for name in cfg.sets}
    if cfg.mixture_shares:
        out.update(mixtures(pool, data, cfg.mixture_shares, cfg.size, seed, cfg.probe.scoring))
    return out


def _evaluator(cfg: SelfAlignConfig, data: MCDataset, tokenizer, parts: dict[str, list[MCQuestion]],
               base: dict[str, list[MCPrediction]], run_dir: Path):
    """The per-epoch evaluation: accuracy, change and knowledge consistency per part; predictions saved per epoch."""
    def evaluate(model, epoch: int) -> dict:
        metrics, preds = evaluate_parts(model, tokenizer, data, parts, cfg.k_shot, cfg.probe_seed, cfg.batch_size, base,
                                        cfg.probe)
        atomic_write_jsonl(run_dir / "predictions" / f"epoch{epoch}.jsonl",
                           [{"part": part, **p.to_dict()} for part, ps in preds.items() for p in ps])
        return {**{f"{part}_accuracy": m["accuracy"] for part, m in metrics.items()}, "eval": metrics}

    return evaluate


def run_study(cfg: SelfAlignConfig, out: str | Path, progress: bool = True) -> dict:
    """Run (or resume) the whole study into `out`; returns the results written to results.json."""
    out = Path(out)
    started = time.time()
    data = load_mc(cfg.data)
    parts = study_questions(cfg, data)
    lm = load_model(cfg.model)
    check_study(out, cfg, lm, data.fingerprint(), extendable=("seeds",))  # --out is first written here, after validation
    base = base_predictions(cfg, data, lm, parts, out)
    base_summary = {part: chance_check(ps) for part, ps in base.items()}
    eval_parts = {p: qs for p, qs in parts.items() if p != "pool"}
    # Curate every seed's sets before any training, so an impossible request fails up front.
    sets = {seed: training_sets(cfg, data, base["pool"], seed) for seed in cfg.seeds}
    set_info = {seed: {n: describe_set(r) for n, r in by_name.items()} for seed, by_name in sets.items()}
    write_sets(out, {seed: {n: [r.to_dict() for r in rows] for n, rows in by_name.items()} for seed, by_name in sets.items()},
               set_info)
    examples = {seed: {n: [SFTExample(r.id, r.prompt, r.target, r.label_source) for r in rows] for n, rows in by_name.items()}
                for seed, by_name in sets.items()}
    notes = {seed: {n: f"{len(rows)} examples, labels {set_info[seed][n]['label_letters']}" for n, rows in by_name.items()}
             for seed, by_name in sets.items()}
    # EARLY_STOP is the best dev epoch; with no dev set it is the last epoch (never picked on a test set).
    runs = train_sets(cfg.model, lm.tokenizer, examples, cfg.train, out,
                      lambda run_dir: _evaluator(cfg, data, lm.tokenizer, eval_parts, base, run_dir), notes, progress)
    for seed, by_name in runs.items():
        for name, run in by_name.items():
            run["outcomes"] = load_outcomes(out / "runs" / f"seed{seed}" / name)
    base_rows = {part: {p.question.id: p.to_dict() for p in ps} for part, ps in base.items()}
    results = analyse(cfg, base_summary, set_info, runs, base_rows)
    results["model"] = describe(lm)
    results["wall_seconds_this_invocation"] = round(time.time() - started, 1)
    atomic_write_json(out / "results.json", results)
    write_report(results, out / "report.html")
    return results
