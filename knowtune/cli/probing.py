"""Probing what a model knows: `knowtune probe` and `knowtune probe-merge`."""

from __future__ import annotations

from pathlib import Path

import typer

from knowtune.cli.app import ENGINE_HELP, ENGINE_SET_HELP, app, console, open_engine
from knowtune.errors import ConfigError
from knowtune.settings import parse_overrides


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
