"""Evaluation: `knowtune evaluate` and `knowtune probe-mc`, which is `evaluate --mc` under its own name."""

from __future__ import annotations

import errno
from pathlib import Path

import typer

from knowtune.cli.app import ENGINE_SET_HELP, app, console, open_engine
from knowtune.errors import ConfigError


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
