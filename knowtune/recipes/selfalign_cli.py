"""Command bodies for `knowtune study self-align` and `knowtune probe-mc`, as plain functions the CLI registers."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from knowtune.data.multiple_choice import load_mc
from knowtune.evaluate.multiple_choice import chance_check
from knowtune.files import atomic_write_json, atomic_write_jsonl
from knowtune.models import describe, load_model
from knowtune.probe.consistency import mc_summary, probe_mc
from knowtune.recipes.config import load_study_config
from knowtune.recipes.selfalign_config import SelfAlignStudyConfig
from knowtune.recipes.selfalign_study import run_selfalign_study

console = Console()


def study_selfalign_command(out: Path, preset: str, overrides: dict[str, str]) -> dict:
    """Run (or resume) the self-aligning study from a preset plus `key=value` overrides; prints the findings."""
    cfg = load_study_config(SelfAlignStudyConfig, "selfalign", preset, overrides)
    results = run_selfalign_study(cfg, out)
    for line in results["caveats"]:
        console.print(f"[yellow]caveat:[/yellow] {line}")
    table = Table(title="findings (Ren et al. 2024)")
    for column in ("claim", "reproduced", "this run", "paper"):
        table.add_column(column)
    for f in results["findings"]:
        verdict = {True: "yes", False: "NO", None: "n/a"}[f["reproduced"]]
        table.add_row(f["claim"], verdict + (" (base at chance)" if f["base_at_chance"] else ""), f["this_run"], f["paper"])
    console.print(table)
    console.print(f"report: {out / 'report.html'}   results: {out / 'results.json'}")
    return results


def probe_mc_command(model: str, data: str, out: Path, k_shot: int, seed: int) -> dict:
    """Probe a model on a multiple-choice set's test split with the letter-logit probe; writes
    `out/predictions.jsonl` and `out/summary.json` (accuracy per domain and subject, letters, chance test)."""
    dataset = load_mc(data)
    questions = dataset.split("test")
    lm = load_model(model)
    preds = probe_mc(lm.model, lm.tokenizer, dataset, questions, k_shot, seed, progress=True)
    summary = {"model": describe(lm), "data": {"spec": data, "name": dataset.name, "fingerprint": dataset.fingerprint()},
               "split": "test", "k_shot": k_shot, "seed": seed, "chance_check": chance_check(preds), **mc_summary(preds)}
    atomic_write_jsonl(out / "predictions.jsonl", [p.to_dict() for p in preds])
    atomic_write_json(out / "summary.json", summary)
    table = Table(title=f"{model} on {data} (test, {k_shot}-shot)")
    for column in ("domain / subject", "n", "accuracy"):
        table.add_column(column, justify="left" if column.startswith("domain") else "right")
    for name, row in list(summary["domains"].items()) + [(f"  {s}", r) for s, r in summary["subjects"].items()]:
        table.add_row(name, str(row["n"]), f"{row['accuracy']:.3f}")
    check = summary["chance_check"]
    table.add_row("[b]all[/b]", str(check["n"]), f"{check['accuracy']:.3f}")
    console.print(table)
    console.print(f"chance 0.25: one-sided binomial p = {check['p_value']:.3g} "
                  f"({'above' if check['above_chance'] else 'NOT above'} chance); predicted letters "
                  f"{check['predicted_letters']}; always '{check['best_constant_letter']}' would score "
                  f"{check['best_constant_accuracy']:.3f}")
    console.print(f"predictions: {out / 'predictions.jsonl'}   summary: {out / 'summary.json'}")
    return summary
