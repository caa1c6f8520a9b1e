"""The new-knowledge study (Gekhman et al. 2024) end to end:
probe → curate → train every variant (per seed) → evaluate per epoch → analyse → report.

Every stage writes into the study directory and is skipped when its output is already complete,
so a killed study resumes where it stopped. Probe results are cached by (model, data, settings,
questions) fingerprint under $KNOWTUNE_CACHE/probes, so studies sharing a model and data probe once.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from knowtune.curate.new_knowledge_sets import describe_set, study_sets
from knowtune.data import load_qa, select_examples
from knowtune.data.records import QADataset
from knowtune.data.select import check_relations
from knowtune.evaluate.qa import evaluate_qa, question_rows
from knowtune.files import atomic_write_json, atomic_write_jsonl
from knowtune.models import load_model
from knowtune.probe.records import ProbeRecord
from knowtune.probe.slick import summarize
from knowtune.studies.common import (
    cached_probe,
    check_study,
    load_outcomes,
    train_sets,
    write_sets,
)
from knowtune.studies.new_knowledge.config import NewKnowledgeConfig
from knowtune.studies.new_knowledge.findings import analyse
from knowtune.studies.new_knowledge.report import write_report
from knowtune.train.examples import SFTExample, example_from_row

console = Console(stderr=True)


def probe_study_questions(cfg: NewKnowledgeConfig, data: QADataset, lm) -> dict[str, list[ProbeRecord]]:
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


def _evaluator(cfg: NewKnowledgeConfig, probed: dict[str, list[ProbeRecord]], tokenizer, run_dir: Path):
    """The per-epoch evaluation: dev accuracy (for EARLY_STOP), test per category, OOD per category;
    every question's answer and score saved per epoch (run_dir/predictions/epoch<E>.jsonl) for the bootstrap."""
    def evaluate(model, epoch: int) -> dict:
        row: dict = {}
        answers = []
        for part in ("dev", "test", "ood"):
            if part in probed:
                metrics, preds = evaluate_qa(model, tokenizer, probed[part], cfg.train.eval_batch_size)
                row[f"{part}_accuracy"] = metrics["accuracy"]
                row[part] = metrics
                answers += [{"part": part, **q} for q in question_rows(probed[part], preds)]
        atomic_write_jsonl(run_dir / "predictions" / f"epoch{epoch}.jsonl", answers)
        return row

    return evaluate


def run_study(cfg: NewKnowledgeConfig, out: str | Path, progress: bool = True) -> dict:
    """Run (or resume) the whole study into `out`; returns the results written to results.json."""
    out = Path(out)
    started = time.time()
    data = load_qa(cfg.data)
    check_relations(data, cfg.relations + cfg.ood_relations)
    lm = load_model(cfg.model)
    check_study(out, cfg, lm, data.fingerprint(), extendable=("seeds",))  # --out is first written here, after validation
    probed = probe_study_questions(cfg, data, lm)
    atomic_write_jsonl(out / "probe.jsonl", [r.to_dict() for part in probed.values() for r in part])
    probe_summary = {p: summarize(rows, data) for p, rows in probed.items()}
    atomic_write_json(out / "probe_summary.json", probe_summary)
    # Curate every seed's sets before any training, so an impossible request fails up front.
    sets = {seed: study_sets(probed["train"], cfg.size, seed, cfg.idk_unknown_percent) for seed in cfg.seeds}
    info = {seed: {name: describe_set(rows) for name, rows in by_name.items()} for seed, by_name in sets.items()}
    write_sets(out, {seed: {n: [r.to_dict() for r in rows] for n, rows in by_name.items()} for seed, by_name in sets.items()}, info)
    examples: dict[int, dict[str, list[SFTExample]]] = {
        seed: {name: [example_from_row(r.to_dict()) for r in rows] for name, rows in by_name.items()} for seed, by_name in sets.items()}
    notes = {seed: {name: str(d["categories"]) for name, d in by_name.items()} for seed, by_name in info.items()}
    runs = train_sets(cfg.model, lm.tokenizer, examples, cfg.train, out,
                      lambda run_dir: _evaluator(cfg, probed, lm.tokenizer, run_dir), notes, progress)
    for seed, by_name in runs.items():
        for name, run in by_name.items():
            run["outcomes"] = load_outcomes(out / "runs" / f"seed{seed}" / name)
    results = analyse(cfg, probed, runs)
    results["probe_summary"] = probe_summary
    results["wall_seconds_this_invocation"] = round(time.time() - started, 1)
    atomic_write_json(out / "results.json", results)
    write_report(results, out / "report.html", probe_summary)
    return results
