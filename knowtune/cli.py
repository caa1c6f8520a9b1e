"""The `knowtune` command: one sub-command per stage of the data flow."""

from __future__ import annotations

import errno
import sys
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from knowtune.errors import ConfigError, KnowtuneError
from knowtune.settings import parse_overrides, validated, with_overrides


class _Interrupted(Exception):
    """Ctrl-C during a command, carried past typer (which would turn it into a silent exit 130) to main."""


class _AppGroup(TyperGroup):
    """The top-level group: a KeyboardInterrupt from any command reaches `main` as _Interrupted."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise _Interrupted() from None


app = typer.Typer(
    cls=_AppGroup, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help="Knowledge-aware fine-tuning of language models."
)
data_app = typer.Typer(no_args_is_help=True, help="List and inspect QA datasets.")
app.add_typer(data_app, name="data")


class _StudyGroup(TyperGroup):
    """`knowtune study`: a name that is no command is an unknown study, answered with the ones there are."""

    def get_command(self, ctx, name: str):
        command = super().get_command(ctx, name)
        if command is None:
            from knowtune.studies.registry import get_study

            get_study(name)  # raises the one-line error naming the registered studies
        return command


study_app = typer.Typer(cls=_StudyGroup, no_args_is_help=True, help="One-command studies reproducing the papers.")
app.add_typer(study_app, name="study")
console = Console()
_state = {"debug": False}


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors.")) -> None:
    _state["debug"] = debug


def parse_settings(pairs: list[str]) -> dict:
    """`--set key=value` pairs as a nested dict: dotted keys are sections, values YAML."""
    return with_overrides({}, parse_overrides(pairs))


ENGINE_HELP = "Sampling engine: hf (exact tree sampling, default) or vllm (the knowtune[vllm] extra)."
ENGINE_SET_HELP = ("A vllm engine option, e.g. --engine-set tensor_parallel_size=2 (also gpu_memory_utilization, max_model_len, "
                   "dtype, enforce_eager); the hf engine takes none.")


def open_engine(name: str, pairs: list[str], model: str, dtype: str = "float32", seed: int = 0, trust_remote_code: bool = False,
                probe_fit: tuple | None = None, batch_size: int = 16):
    """The engine `--engine`/`--engine-set` choose on model `model`, and the model's manifest summary; for the hf
    engine `probe_fit` (examples, settings, batch) first refuses a probe that cannot fit in memory."""
    from knowtune.engine import HFTreeEngine, engine_options, vllm_engine

    options = engine_options(name, pairs, dtype)
    if name == "vllm":
        return vllm_engine(model, options, seed, trust_remote_code)
    from knowtune.models import describe, load_model
    from knowtune.probe.slick import check_probe_fits

    loaded = load_model(model, dtype=dtype, trust_remote_code=trust_remote_code)
    if probe_fit is not None:
        check_probe_fits(loaded.model, loaded.tokenizer, *probe_fit)
    return HFTreeEngine(loaded.model, loaded.tokenizer, batch_size=batch_size), describe(loaded)


@app.command()
def probe(
    model: str = typer.Option("builtin", help="'builtin', a hub id, a local HF directory or a .gguf file."),
    data: str = typer.Option("builtin", help="'builtin', an EntityQuestions directory or a .jsonl file."),
    out: Path = typer.Option(..., help="Run directory (re-run with the same one to resume)."),
    preset: str = typer.Option("paper", help="paper (10 sets × (1+16)) or quick (4 × (1+8))."),
    seed: int = typer.Option(0, help="Fixes exemplar sets and samples."),
    split: str = typer.Option("test", help="Split(s) to probe, comma-separated, or 'all'."),
    relations: str | None = typer.Option(None, help="Only these relations, comma-separated."),
    limit: int | None = typer.Option(None, min=1, help="At most this many questions, balanced across relations."),
    batch_size: int = typer.Option(16, min=1, help="Questions per forward batch."),
    chunk_size: int = typer.Option(64, min=1, help="Questions per durable write: a kill loses at most one chunk."),
    dtype: str = typer.Option("float32", help="float32, bfloat16 or float16."),
    trust_remote_code: bool = typer.Option(False, help="Allow model code from the hub (off by default)."),
    set_: list[str] = typer.Option([], "--set", help="Override a probe setting, e.g. --set k_shot=2."),
    estimator: str | None = typer.Option(None, help="sampled (draw N_sample answers) or exact (their probabilities); default: the preset's."),
    engine: str = typer.Option("hf", help=ENGINE_HELP),
    engine_set: list[str] = typer.Option([], "--engine-set", help=ENGINE_SET_HELP),
    shard: str | None = typer.Option(None, help="Probe only shard i/n of the selection (e.g. 0/4), one per process or "
                                                "machine; join the shards with `knowtune probe-merge`."),
) -> None:
    """Probe what a model knows: SliCK categories per question."""
    from knowtune.data import load_qa, select_examples
    from knowtune.probe.config import probe_config
    from knowtune.probe.shards import shard_examples
    from knowtune.probe.slick import run_probe
    from knowtune.report.tables import category_table

    chosen = {"estimator": estimator} if estimator is not None else {}
    cfg = probe_config(preset, {"seed": str(seed), **chosen, **parse_overrides(set_)})
    if cfg.estimator == "exact" and engine != "hf":  # before a vLLM engine takes a minute to load
        raise ConfigError(f"--engine {engine}: the exact estimator scores under teacher forcing through transformers; "
                          "use --engine hf, or --estimator sampled")
    dataset = load_qa(data)
    examples = select_examples(dataset, split, relations, limit)
    if not examples:
        raise ConfigError("no questions selected (check --split, --relations and --limit)")
    part = None
    if shard is not None:
        examples, part = shard_examples(examples, shard)
    eng, model_info = open_engine(engine, engine_set, model, dtype, cfg.seed, trust_remote_code,
                                  probe_fit=(examples, cfg, min(batch_size, chunk_size)), batch_size=batch_size)
    summary = run_probe(eng, dataset, examples, cfg, out, model_info, chunk_size=chunk_size, shard=part)
    console.print(category_table(summary, f"SliCK categories — {model} on {data} ({preset}, seed {seed})"))
    console.print(f"records: {out / 'probe.jsonl'}   summary: {out / 'summary.json'}")


@app.command("probe-merge")
def probe_merge(
    shards: list[Path] = typer.Argument(..., help="The shard run directories (`knowtune probe --shard i/n --out DIR`)."),
    out: Path = typer.Option(..., help="Run directory for the merged config.json, probe.jsonl and summary.json."),
    data: str = typer.Option("builtin", help="The data the shards probed (for per-relation chance rates)."),
) -> None:
    """Join the shards of a data-parallel probe, checking every selected question was probed exactly once."""
    from knowtune.data import load_qa
    from knowtune.probe.shards import merge_probes
    from knowtune.report.tables import category_table

    summary = merge_probes(shards, load_qa(data), out)
    console.print(category_table(summary, f"SliCK categories — {len(shards)} shards merged"))
    console.print(f"records: {out / 'probe.jsonl'}   summary: {out / 'summary.json'}")


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


@app.command()
def evaluate(
    model: str = typer.Option("builtin", help="Model spec (e.g. a run's early_stop/ or convergence/ directory)."),
    records: Path | None = typer.Option(None, help="Probe records (probe.jsonl) of the questions to answer, with categories."),
    edits: str | None = typer.Option(None, help="Edit data: score Reliability / Generality / Locality instead of QA."),
    mc: str | None = typer.Option(None, help="A multiple-choice set ('builtin', MMLU CSVs, hf:cais/mmlu): accuracy on "
                                             "its test split under --scoring, against chance."),
    protocol: str = typer.Option("both", help="Edit metrics: token (EasyEdit teacher-forced), exact (greedy exact match) or both."),
    reference_model: str = typer.Option("builtin", help="Edit metrics: the pre-edit model Locality is measured against."),
    k_shot: int = typer.Option(5, min=0, help="Multiple choice: exemplars per prompt."),
    seed: int = typer.Option(0, help="Multiple choice: fixes the exemplars."),
    scoring: str = typer.Option("letter", help="Multiple choice: letter (option-letter logits, Ren et al.) or cloze "
                                               "(each option's log-probability as the answer of a Q/A prompt)."),
    cloze_norm: str = typer.Option("sum", help="Multiple choice, cloze: sum of the option's token log-probs, or mean."),
    out: Path | None = typer.Option(None, help="Write metrics and predictions to this JSON file (--mc: a directory)."),
    batch_size: int = typer.Option(32, min=1),
    engine: str = typer.Option("hf", help="Engine for the answers QA and the exact edit protocol generate: hf or vllm."),
    engine_set: list[str] = typer.Option([], "--engine-set", help=ENGINE_SET_HELP),
) -> None:
    """Closed-book QA by SliCK category (--records), edit metrics (--edits) or multiple choice (--mc)."""
    if sum(x is not None for x in (records, edits, mc)) != 1:
        raise ConfigError("give exactly one of --records (QA), --edits (edit metrics) and --mc (multiple choice)")
    if engine != "hf" and (mc is not None or (edits is not None and protocol == "token")):
        # these score logits through transformers and generate nothing: another engine would be silently unused
        what = "--mc scores the options' logits" if mc is not None else "--protocol token is teacher-forced"
        raise ConfigError(f"--engine {engine}: {what} through transformers; the engine serves --records and the exact edit protocol")
    from knowtune.files import atomic_write_json, check_output_dir

    if out is not None and mc is None:  # the output file's place, checked before the work
        if out.is_dir():
            raise IsADirectoryError(errno.EISDIR, "is a directory, expected a file", str(out))
        check_output_dir(out.parent)

    if edits is not None:
        from knowtune.evaluate.edit_metrics import PROTOCOLS, evaluate_edited_model

        protocols = list(PROTOCOLS) if protocol == "both" else [protocol]
        if any(p not in PROTOCOLS for p in protocols):
            raise ConfigError(f"unknown edit-metric protocol {protocol!r}; use token, exact or both")
        result = evaluate_edited_model(model, edits, protocols, reference_model, engine, engine_set)
        console.print_json(data=result["scores"])  # before writing: a failed write loses nothing computed
        if out is not None:
            atomic_write_json(out, result)
        return
    if mc is not None:
        if out is None:
            raise ConfigError("--mc needs --out, the directory for predictions.jsonl and summary.json")
        evaluate_mc(model, mc, out, k_shot, seed, scoring, cloze_norm)
        return
    from knowtune.evaluate.qa import evaluate_qa
    from knowtune.probe.slick import read_probe_records
    from knowtune.provenance import check_inputs

    recs = read_probe_records(records)
    eng, model_info = open_engine(engine, engine_set, model, batch_size=batch_size)
    check_inputs(model, model_info["fingerprint"], {"--records": records})
    metrics, preds = evaluate_qa(None, None, recs, batch_size, engine=eng)
    console.print_json(data=metrics)  # before writing: a failed write loses nothing computed
    if out:
        atomic_write_json(out, {"model": model, "records": str(records), "metrics": metrics, "engine": eng.info.to_dict(),
                                "predictions": [{"id": r.id, "prediction": p} for r, p in zip(recs, preds)]})


def mc_scoring(scoring: str, cloze_norm: str):
    """--scoring and --cloze-norm as an MCScoring; a value outside the choices is one line naming the option."""
    from knowtune.probe.config import MCScoring

    if scoring not in ("letter", "cloze"):
        raise ConfigError(f"--scoring: {scoring!r} is not one of letter, cloze")
    if cloze_norm not in ("sum", "mean"):
        raise ConfigError(f"--cloze-norm: {cloze_norm!r} is not one of sum, mean")
    return MCScoring(scoring=scoring, cloze_norm=cloze_norm)


def evaluate_mc(model: str, data: str, out: Path, k_shot: int, seed: int, scoring: str, cloze_norm: str) -> None:
    """Multiple choice under one scoring protocol on `data`'s test split into `out` (predictions.jsonl, summary.json):
    `out` is checked before the work, and the results are printed before they are written."""
    from knowtune.evaluate.multiple_choice import evaluate_mc_test
    from knowtune.files import atomic_write_json, atomic_write_jsonl, check_output_dir
    from knowtune.report.tables import chance_line, mc_table

    protocol = mc_scoring(scoring, cloze_norm)
    check_output_dir(out)
    preds, summary = evaluate_mc_test(model, data, k_shot, seed, protocol)
    console.print(mc_table(summary, f"{model} on {data} (test, {k_shot}-shot, {protocol.label()} scoring)"))
    console.print(chance_line(summary["chance_check"]))
    console.print(f"scoring protocol: {summary['protocol']}")
    atomic_write_jsonl(out / "predictions.jsonl", [p.to_dict() for p in preds])
    atomic_write_json(out / "summary.json", summary)
    console.print(f"predictions: {out / 'predictions.jsonl'}   summary: {out / 'summary.json'}")


@app.command("probe-mc")
def probe_mc(
    model: str = typer.Option("builtin", help="'builtin', a hub id, a local HF directory or a .gguf file."),
    data: str = typer.Option("builtin", help="'builtin', an MMLU CSV file or directory, or hf:cais/mmlu."),
    out: Path = typer.Option(..., help="Directory for predictions.jsonl and summary.json."),
    k_shot: int = typer.Option(5, min=0, help="Exemplars per prompt."),
    seed: int = typer.Option(0, help="Fixes the exemplars."),
    scoring: str = typer.Option("letter", help="letter (option-letter logits, Ren et al.) or cloze (each option's "
                                               "log-probability as the answer of a Q/A prompt)."),
    cloze_norm: str = typer.Option("sum", help="cloze: sum of the option's token log-probs, or mean (length-normalised)."),
) -> None:
    """Multiple-choice probe (letter or cloze scoring) on the test split: accuracy per domain and subject, against chance."""
    evaluate_mc(model, data, out, k_shot, seed, scoring, cloze_norm)


def print_findings(study, results: dict, out: Path) -> None:
    """A study's caveats and its verdicts, finding by finding, and where its report and results are."""
    from knowtune.report.tables import findings_table
    from knowtune.studies.verdicts import Finding

    for line in results.get("caveats", []):
        console.print(f"[yellow]caveat:[/yellow] {line}")
    rows = [(f"{f.extra['set']}: {f.claim}" if "set" in f.extra else f.claim,
             f.verdict + (" (base at chance)" if f.extra.get("base_at_chance") else ""), f.summary, f.this_run, f.paper)
            for f in map(Finding.from_dict, results["findings"])]
    protocol = f", {results['protocol']} scoring" if "protocol" in results else ""  # the self-align study's MC protocol
    console.print(findings_table(rows, f"findings ({study.paper}{protocol})"))
    console.print(f"report: {out / 'report.html'}   results: {out / 'results.json'}")


def study_command(study):
    """`knowtune study <name>` for one registered study."""
    def command(
        out: Path = typer.Option(..., help="Study directory (re-run with the same one to resume)."),
        preset: str = typer.Option("quick", help=f"One of {', '.join(study.presets())}: quick (CPU, minutes), "
                                                  "cpu (≥ 3 seeds, the evidence run), paper (the paper's data and settings, GPU)."),
        set_: list[str] = typer.Option([], "--set", help="Override a config key, e.g. --set seeds=[0,1] --set train.epochs=4."),
    ) -> None:
        from knowtune.train.processes import process_state

        cfg = study.load_config(preset, parse_overrides(set_))
        results = study.run(cfg, out)
        if process_state().is_main_process:  # under `accelerate launch` every process gets here
            print_findings(study, results, out)

    command.__doc__ = f"{study.paper} end to end: {study.summary}"
    return command


@study_app.command("list")
def study_list() -> None:
    """List the studies with their papers and presets."""
    from knowtune.studies.registry import discover

    table = Table(title="studies")
    for col in ("study", "paper", "presets", "what it runs"):
        table.add_column(col)
    for name, study in discover().items():
        table.add_row(name, study.paper, ", ".join(study.presets()), study.summary)
    console.print(table)


def _add_study_commands() -> None:
    from knowtune.studies.registry import discover

    for name, study in discover().items():
        study_app.command(name)(study_command(study))


_add_study_commands()


@data_app.command("list")
def data_list() -> None:
    """List the dataset loaders and what each spec looks like."""
    from knowtune.data import LOADERS

    table = Table(title="datasets")
    table.add_column("name")
    table.add_column("spec")
    for name, (_, spec) in LOADERS.items():
        table.add_row(name, escape(spec))
    console.print(table)


@data_app.command("show")
def data_show(name: str = typer.Argument(..., help="A dataset spec, e.g. builtin.")) -> None:
    """Show a dataset's relations: counts per split, chance rate, template and an example."""
    from knowtune.data import chance_rate, load_qa

    ds = load_qa(name)
    splits = ds.splits()
    table = Table(title=f"{ds.name} — {len(ds.examples)} questions ({ds.source})")
    table.add_column("relation")
    for s in splits:
        table.add_column(s, justify="right")
    table.add_column("chance", justify="right")
    table.add_column("example")
    for rel in ds.relations():
        exs = [e for e in ds.examples if e.relation == rel]
        ex = exs[0]
        table.add_row(
            rel, *[str(sum(e.split == s for e in exs)) for s in splits], f"{chance_rate(exs):.2f}",
            f"{ex.question} → {' | '.join(ex.answers[:3])}",
        )
    console.print(table)


def fail(message: str, code: int) -> NoReturn:
    """Print `message` as one `knowtune: error:` line on stderr and exit with `code`."""
    print("knowtune: error: " + " ".join(message.splitlines()), file=sys.stderr)
    sys.exit(code)


def _kept(argv: list[str]) -> str:
    """What an interrupted resumable command leaves: its --out keeps the finished work."""
    if next((a for a in argv if not a.startswith("-")), "") not in ("probe", "train", "update", "study"):
        return ""
    for i, arg in enumerate(argv):
        out = arg.partition("=")[2] if arg.startswith("--out=") else argv[i + 1] if arg == "--out" and i + 1 < len(argv) else None
        if out:
            return f"; the work finished so far is kept in {out} (run the same command again to resume)"
    return ""


def main() -> None:
    """Entry point: run the app, turning bad input into one line on stderr and a non-zero exit."""
    try:
        # standalone_mode=False: usage errors are raised here instead of printed as a multi-line box
        code = app(standalone_mode=False)
    except KnowtuneError as e:
        if _state["debug"]:
            raise
        fail(str(e), 2)
    except OSError as e:  # a path that cannot be read or written: a file where a directory goes, no permission, disk full
        if _state["debug"]:
            raise
        reason = "exists and is not a directory" if isinstance(e, FileExistsError) else e.strerror
        fail(f"{e.filename}: {reason}" if e.filename and reason else str(e), 1)
    except (KeyboardInterrupt, _Interrupted):
        print(f"knowtune: interrupted{_kept(sys.argv[1:])}", file=sys.stderr)
        sys.exit(130)
    except Exception as e:
        # Click's usage errors (a missing or malformed option): recognised by shape, since newer typer
        # vendors click privately and older typer uses click itself. Anything else is a bug: show it.
        if not (hasattr(e, "format_message") and hasattr(e, "exit_code")):
            raise
        if type(e).__name__ != "NoArgsIsHelpError":  # for that one typer has printed the help already
            ctx = getattr(e, "ctx", None)
            fail(f"{ctx.command_path}: {e.format_message()}" if ctx else e.format_message(), e.exit_code)
        sys.exit(e.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
