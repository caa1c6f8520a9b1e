"""Fine-tuning: `knowtune curate` (the study's training sets), `train`, `audit` (your SFT set) and `update` (F-Learning)."""

from __future__ import annotations

from pathlib import Path

import typer

from knowtune.cli.app import app, console, parse_settings
from knowtune.errors import ConfigError
from knowtune.settings import parse_overrides, validated, with_overrides


@app.command()
def curate(
    probe: Path = typer.Option(..., help="probe.jsonl of the training pool (from `knowtune probe --split train`)."),
    size: int = typer.Option(..., min=1, help="|D|: examples in every training set."),
    out: Path = typer.Option(..., help="Directory for <set>.jsonl files and manifest.json."),
    seed: int = typer.Option(0, help="Fixes every sample."),
    idk_unknown_percent: int = typer.Option(50, min=0, max=100, help="The mixture D_IDK relabels."),
) -> None:
    """Build the study's training sets: X % Unknown mixtures, single categories, D_Natural, D_Known, D_IDK."""
    from knowtune.curate.new_knowledge_sets import describe_set, study_sets
    from knowtune.files import (
        atomic_write_json,
        atomic_write_jsonl,
        check_or_write_manifest,
        sha256_file,
        versions,
    )
    from knowtune.probe.slick import read_probe_records
    from knowtune.provenance import provenance_of
    from knowtune.report.tables import sets_table

    records = read_probe_records(probe)
    if size > len(records):  # say which file, before study_sets refuses the same request
        raise ConfigError(f"--size {size} is more than the {len(records)} probe records in {probe}")
    prov = {k: v for k, v in (provenance_of(probe) or {}).items() if k != "source"}
    sets = study_sets(records, size, seed, idk_unknown_percent)
    manifest = {name: describe_set(rows) for name, rows in sets.items()}
    record = {"probe": str(probe), "probe_sha256": sha256_file(probe), "provenance": prov, "size": size, "seed": seed,
              "idk_unknown_percent": idk_unknown_percent, "versions": versions(), "sets": manifest}
    # The resume guard before any set is (re)written; the manifest is written last: the sets are complete once it exists.
    check_or_write_manifest(out / "manifest.json", record, "curated sets", ("probe_sha256", "size", "seed", "idk_unknown_percent"),
                            write=False)
    for name, rows in sets.items():
        atomic_write_jsonl(out / f"{name}.jsonl", [r.to_dict() for r in rows])
    atomic_write_json(out / "manifest.json", record)
    console.print(sets_table(manifest, f"training sets (|D| = {size}, seed {seed})"))


@app.command()
def train(
    model: str = typer.Option("builtin", help="Model spec to fine-tune."),
    train_set: Path = typer.Option(..., "--train", help="JSONL of {question, answer} or {prompt, target} rows, optional "
                                   "group (a curated <set>.jsonl from `knowtune curate` works as it is)."),
    out: Path = typer.Option(..., help="Run directory: metrics.jsonl, early_stop/, convergence/ (re-run to resume)."),
    dev: Path | None = typer.Option(None, help="Probe records for dev accuracy (EARLY_STOP selection)."),
    test: Path | None = typer.Option(None, help="Probe records for test accuracy per category."),
    set_: list[str] = typer.Option([], "--set", help="Override a training setting, e.g. --set method=lora."),
) -> None:
    """Fine-tune on question → answer pairs, recording fit per group (e.g. SliCK category) and accuracy after every epoch."""
    from knowtune.evaluate.qa import evaluate_qa
    from knowtune.files import versions
    from knowtune.models import load_model
    from knowtune.probe.slick import read_probe_records
    from knowtune.provenance import check_inputs, provenance_of
    from knowtune.train.examples import read_examples
    from knowtune.train.processes import process_state
    from knowtune.train.sft_config import SFTConfig
    from knowtune.train.sft_trainer import train_sft

    cfg = validated(SFTConfig, parse_settings(set_), "training settings")
    examples = read_examples(train_set)
    evals = {name: read_probe_records(path) for name, path in (("dev", dev), ("test", test)) if path is not None}
    lm = load_model(model)
    check_inputs(model, lm.fingerprint, {"--train": train_set, "--dev": dev, "--test": test})
    meta = {"provenance": {"model": lm.fingerprint, "model_spec": model, "data": (provenance_of(train_set) or {}).get("data")},
            "versions": versions()}

    def evaluate(m, epoch: int) -> dict:
        row = {}
        for name, recs in evals.items():
            row[name], _ = evaluate_qa(m, lm.tokenizer, recs, cfg.eval_batch_size)
            row[f"{name}_accuracy"] = row[name]["accuracy"]
        return row

    res = train_sft(lm.model, lm.tokenizer, examples, cfg, out, evaluate if evals else None, meta=meta)
    if process_state().is_main_process:  # under `accelerate launch` every process gets here
        console.print(f"EARLY_STOP epoch {res.early_stop_epoch}, CONVERGENCE epoch {res.convergence_epoch}; metrics: {out / 'metrics.jsonl'}")


@app.command()
def audit(
    model: str = typer.Option("builtin", help="'builtin', a hub id, a local HF directory or a .gguf file."),
    data: str = typer.Option(..., help="Your SFT set: .jsonl, .json, .parquet, a datasets directory or a hub id; rows of "
                                       "{question, answer(s)}, {prompt, completion}, {instruction, input, output} or {messages}."),
    out: Path = typer.Option(..., help="Directory for audit.jsonl, summary.json, report.html and exports (re-run to resume)."),
    preset: str = typer.Option("paper", help="paper (10 sets × (1+16)) or quick (4 × (1+8))."),
    seed: int = typer.Option(0, help="Fixes exemplar sets, held-out exemplars and samples."),
    question_field: str | None = typer.Option(None, help="The field holding the question, for other shapes."),
    answer_field: str | None = typer.Option(None, help="The field holding the answer (a string or a list of aliases)."),
    relation_field: str = typer.Option("relation", help="Rows with this field get exemplars and shares per relation."),
    exemplars: str | None = typer.Option(None, help="Few-shot exemplars from this file instead of held out from --data."),
    max_answer_words: int = typer.Option(8, min=1, help="Longer answers are not short factual answers: not auditable."),
    export: str | None = typer.Option(None, help="filtered (drop Unknown), idk, self-aligned or all."),
    format_: str = typer.Option("jsonl", "--format", help="jsonl (your shape), messages (TRL conversational) or datasets."),
    idk: str = typer.Option("I don't know", help="The answer --export idk gives Unknown rows."),
    batch_size: int = typer.Option(16, min=1, help="Questions per forward batch."),
    dtype: str = typer.Option("float32", help="float32, bfloat16 or float16."),
    trust_remote_code: bool = typer.Option(False, help="Allow model code from the hub (off by default)."),
    set_: list[str] = typer.Option([], "--set", help="Override a probe setting, e.g. --set k_shot=2."),
) -> None:
    """Audit your SFT set: which rows teach the model facts it does not know (SliCK), and curated exports."""
    from knowtune.audit.run import plan_audit, run_audit
    from knowtune.curate.exports import EXPORTS, FORMATS, write_export
    from knowtune.data.sft_rows import read_sft_rows
    from knowtune.engine import HFTreeEngine
    from knowtune.models import describe, load_model
    from knowtune.probe.config import probe_config
    from knowtune.probe.slick import check_probe_fits, read_probe_records

    kinds = list(EXPORTS) if export == "all" else [export] if export else []
    if any(k not in EXPORTS for k in kinds):
        raise ConfigError(f"unknown --export {export!r}; choose one of {', '.join(EXPORTS)} or all")
    if format_ not in FORMATS:
        raise ConfigError(f"unknown --format {format_!r}; choose one of {', '.join(FORMATS)}")
    cfg = probe_config(preset, {"seed": str(seed), **parse_overrides(set_)})
    fields = {"question_field": question_field, "answer_field": answer_field, "relation_field": relation_field,
              "max_answer_words": max_answer_words}
    rows = read_sft_rows(data, **fields)
    plan = plan_audit(rows, cfg, read_sft_rows(exemplars, **fields) if exemplars else None)  # refuses before the model loads
    loaded = load_model(model, dtype=dtype, trust_remote_code=trust_remote_code)
    questions = [q for _, _, qs in plan.passes for q in qs]
    check_probe_fits(loaded.model, loaded.tokenizer, questions, cfg, batch_size)
    summary = run_audit(HFTreeEngine(loaded.model, loaded.tokenizer, batch_size=batch_size), rows, plan, cfg, out, describe(loaded))
    cats = summary["categories"]
    console.print(f"{summary['audited']} rows audited, {summary['not_auditable']} not auditable; "
                  + ", ".join(f"{c} {n}" for c, n in cats.items()) + f"; Unknown share {summary['unknown_share']:.1%}")
    records = read_probe_records(out / "audit.jsonl")
    for kind in kinds:
        written = write_export(kind, format_, rows.rows, records, out, idk)
        console.print(f"export {kind}: {written['rows']} rows → {written['path']}")
    console.print(f"audit: {out / 'audit.jsonl'}   summary: {out / 'summary.json'}   report: {out / 'report.html'}")


@app.command()
def update(
    model: str = typer.Option("builtin", help="Model spec to edit."),
    edits: str = typer.Option(..., help="counterfact:PATH, zsre:PATH, counterfact-rome:PATH, a JSON file, or an edits.jsonl from `knowtune study flearning`."),
    method: str = typer.Option("flearning-ft", help="ft, lora, flearning-ft, flearning-lora or lora-ft."),
    lam: float = typer.Option(1.0, "--lambda", help="λ in θ′ = θ − λ·(FT(θ, K_old) − θ); ignored by ft and lora."),
    out: Path = typer.Option(..., help="Run directory: update.json, forget/, learn/convergence (the edited model)."),
    set_: list[str] = typer.Option([], "--set", help="e.g. --set full.epochs=5 --set lora.learning_rate=1e-3"),
) -> None:
    """Update knowledge: F-Learning (forget K_old, then learn K_new) or a fine-tuning baseline."""
    from knowtune.data.edit_records import resolve_edits
    from knowtune.update.flearning import run_update
    from knowtune.update.flearning_config import FLearningConfig

    cfg = validated(FLearningConfig, with_overrides({"method": method, "lam": lam}, parse_overrides(set_)), "update settings",
                    {"lam": "--lambda", "method": "--method"})
    run_update(model, resolve_edits(edits).examples, cfg, out)
    console.print(f"edited model: {out / 'learn' / 'convergence'}   summary: {out / 'update.json'}")
