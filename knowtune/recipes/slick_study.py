"""The new-knowledge study (Gekhman et al. 2024) as one recipe:
probe → curate → train every variant (per seed) → evaluate per epoch → analyse → report.

Every stage writes into the study directory and is skipped when its output is already complete,
so a killed study resumes where it stopped. Probe results are cached by (model, data, settings,
questions) fingerprint under $KNOWTUNE_CACHE/probes, so studies sharing a model and data probe once.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from knowtune.curate.slick_mixtures import describe_set, label_of, study_sets
from knowtune.data import load_qa, select_examples
from knowtune.data.records import QADataset
from knowtune.errors import ConfigError
from knowtune.evaluate.qa import evaluate_qa, qa_prompt
from knowtune.files import (
    atomic_write_json,
    atomic_write_jsonl,
    versions,
)
from knowtune.models import describe, load_model
from knowtune.probe.slick import summarize
from knowtune.recipes.common import cached_probe, train_variant
from knowtune.recipes.slick_config import SlickStudyConfig
from knowtune.recipes.slick_findings import analyse
from knowtune.recipes.slick_report import write_report
from knowtune.train.sft_trainer import SFTExample

console = Console(stderr=True)


def probe_study_questions(cfg: SlickStudyConfig, data: QADataset, lm) -> dict[str, list[dict]]:
    """Probe the training pool, dev, test and OOD test questions (cached) and return records by part."""
    parts = {
        "train": select_examples(data, "train", ",".join(cfg.relations), cfg.train_pool),
        "dev": select_examples(data, "dev", ",".join(cfg.relations), cfg.dev_size),
        "test": select_examples(data, "test", ",".join(cfg.relations), cfg.test_size),
    }
    if cfg.ood_relations:
        parts["ood"] = select_examples(data, "test", ",".join(cfg.ood_relations), cfg.ood_test_size)
    examples = [e for part in parts.values() for e in part]
    records = cached_probe(lm, data, examples, cfg.probe, cfg.batch_size)
    return {name: [records[e.id] for e in part] for name, part in parts.items()}


def sft_examples(rows: list[dict]) -> list[SFTExample]:
    """Question → answer pairs in the QA format, grouped by SliCK category for the fit."""
    return [SFTExample(r["id"], qa_prompt(r["question"]), f" {label_of(r)}\n", r["category"]) for r in rows]


def _evaluator(cfg: SlickStudyConfig, probed: dict[str, list[dict]], tokenizer):
    """The per-epoch evaluation: dev accuracy (for EARLY_STOP), test per category, OOD per category."""
    def evaluate(model, epoch: int) -> dict:
        row: dict = {}
        for part in ("dev", "test", "ood"):
            if part in probed:
                metrics, _ = evaluate_qa(model, tokenizer, probed[part], cfg.train.eval_batch_size)
                row[f"{part}_accuracy"] = metrics["accuracy"]
                row[part] = metrics
        return row

    return evaluate


def run_slick_study(cfg: SlickStudyConfig, out: str | Path, progress: bool = True) -> dict:
    """Run (or resume) the whole study into `out`; returns the results written to results.json."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    data = load_qa(cfg.data)
    for rel in cfg.relations + cfg.ood_relations:
        if rel not in data.relations():
            raise ConfigError(f"unknown relation {rel!r} in {data.name!r} (has: {', '.join(data.relations())})")
    lm = load_model(cfg.model)
    atomic_write_json(out / "study_config.json", {"config": cfg.model_dump(), "model": describe(lm),
                                                   "data": {"name": data.name, "fingerprint": data.fingerprint()},
                                                   "versions": versions()})
    probed = probe_study_questions(cfg, data, lm)
    atomic_write_jsonl(out / "probe.jsonl", [r for part in probed.values() for r in part])
    probe_summary = {p: summarize(rows, data) for p, rows in probed.items()}
    atomic_write_json(out / "probe_summary.json", probe_summary)
    # Curate every seed's sets before any training, so an impossible request fails up front.
    sets = {seed: study_sets(probed["train"], cfg.size, seed, cfg.idk_unknown_percent) for seed in cfg.seeds}
    for seed, by_name in sets.items():
        for name, rows in by_name.items():
            atomic_write_jsonl(out / "sets" / f"seed{seed}" / f"{name}.jsonl", rows)
        atomic_write_json(out / "sets" / f"seed{seed}" / "manifest.json", {n: describe_set(r) for n, r in by_name.items()})
    evaluate = _evaluator(cfg, probed, lm.tokenizer)
    runs: dict[int, dict[str, dict]] = {}
    total = sum(len(s) for s in sets.values())
    done = 0
    for seed, by_name in sets.items():
        runs[seed] = {}
        for name, rows in by_name.items():
            done += 1
            run_dir = out / "runs" / f"seed{seed}" / name
            console.print(f"[{done}/{total}] seed {seed} {name}: {describe_set(rows)['categories']}")
            train_cfg = cfg.train.model_copy(update={"seed": seed})
            runs[seed][name] = train_variant(cfg.model, lm.tokenizer, sft_examples(rows), train_cfg, run_dir, evaluate, progress)
    results = analyse(cfg, probed, runs)
    results["probe_summary"] = probe_summary
    results["wall_seconds_this_invocation"] = round(time.time() - started, 1)
    atomic_write_json(out / "results.json", results)
    write_report(results, out / "report.html", probe_summary)
    return results
