"""The `knowtune` command: one sub-command per stage of the data flow."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from knowtune.errors import ConfigError, KnowtuneError

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help="Knowledge-aware fine-tuning of language models."
)
data_app = typer.Typer(no_args_is_help=True, help="List and inspect QA datasets.")
app.add_typer(data_app, name="data")
console = Console()
_state = {"debug": False}


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors.")) -> None:
    _state["debug"] = debug


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    """Parse `key=value` command-line overrides (values are validated by the config model)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {pair!r} is not key=value")
        out[key.strip()] = value.strip()
    return out


def validation_message(e: ValidationError, what: str) -> str:
    """One line from a pydantic error: the key path and what is wrong with it."""
    err = e.errors()[0]
    key = ".".join(str(p) for p in err["loc"]) or "(root)"
    return f"{what}: key '{key}': {err['msg']}"


def category_table(summary: dict, title: str) -> Table:
    """The SliCK category counts per relation, with chance rates, as a rich table."""
    from knowtune.probe.slick import CATEGORIES

    table = Table(title=title)
    table.add_column("relation")
    for c in CATEGORIES:
        table.add_column(c, justify="right")
    table.add_column("chance", justify="right")
    for rel, row in summary["per_relation"].items():
        chance = row.get("chance_rate")
        table.add_row(rel, *[str(row[c]) for c in CATEGORIES], "" if chance is None else f"{chance:.2f}")
    for name, row in summary.get("per_popularity", {}).items():
        table.add_row(f"[dim]pop. {name}[/dim]", *[str(row[c]) for c in CATEGORIES], "")
    n = summary["n"]
    table.add_row("[b]all[/b]", *[f"{summary['categories'][c]} ({summary['categories'][c] / n:.0%})" for c in CATEGORIES], "")
    return table


def select_examples(data, split: str, relations: Optional[str], limit: Optional[int]):
    """The questions to probe: a split (or 'all' non-exemplar splits), optional relations and a
    limit that takes a relation-balanced, seed-independent subset (stable hash of each id)."""
    from knowtune.probe.prompts import stable_int

    splits = [s for s in data.splits() if s != data.exemplar_split] if split == "all" else split.split(",")
    for s in splits:
        if s not in data.splits():
            raise ConfigError(f"dataset {data.name!r} has no split {s!r} (has: {', '.join(data.splits())})")
        if s == data.exemplar_split:
            raise ConfigError(f"split {s!r} is the exemplar pool; probing it would show questions their own answers")
    chosen = [e for e in data.examples if e.split in splits]
    if relations:
        wanted = [r.strip() for r in relations.split(",")]
        for r in wanted:
            if r not in data.relations():
                raise ConfigError(f"unknown relation {r!r} in {data.name!r} (has: {', '.join(data.relations())})")
        chosen = [e for e in chosen if e.relation in wanted]
    if limit is not None:
        by_rel: dict[str, list] = {}
        for e in sorted(chosen, key=lambda e: stable_int("limit", e.id)):
            by_rel.setdefault(e.relation, []).append(e)
        picked, queues = [], [by_rel[r] for r in sorted(by_rel)]
        while len(picked) < limit and any(queues):
            for q in queues:
                if q and len(picked) < limit:
                    picked.append(q.pop(0))
        keep = {e.id for e in picked}
        chosen = [e for e in chosen if e.id in keep]
    return chosen


@app.command()
def probe(
    model: str = typer.Option("builtin", help="'builtin', a hub id, a local HF directory or a .gguf file."),
    data: str = typer.Option("builtin", help="'builtin', an EntityQuestions directory or a .jsonl file."),
    out: Path = typer.Option(..., help="Run directory (re-run with the same one to resume)."),
    preset: str = typer.Option("paper", help="paper (10 sets × (1+16)) or quick (4 × (1+8))."),
    seed: int = typer.Option(0, help="Fixes exemplar sets and samples."),
    split: str = typer.Option("test", help="Split(s) to probe, comma-separated, or 'all'."),
    relations: Optional[str] = typer.Option(None, help="Only these relations, comma-separated."),
    limit: Optional[int] = typer.Option(None, min=1, help="At most this many questions, balanced across relations."),
    batch_size: int = typer.Option(16, min=1, help="Questions per forward batch."),
    dtype: str = typer.Option("float32", help="float32, bfloat16 or float16."),
    trust_remote_code: bool = typer.Option(False, help="Allow model code from the hub (off by default)."),
    set_: list[str] = typer.Option([], "--set", help="Override a probe setting, e.g. --set k_shot=2."),
) -> None:
    """Probe what a model knows: SliCK categories per question."""
    from knowtune.data import load_qa
    from knowtune.models import describe, load_model
    from knowtune.probe.config import probe_config
    from knowtune.probe.engine import HFTreeEngine
    from knowtune.probe.slick import run_probe

    try:
        cfg = probe_config(preset, seed=seed, **parse_overrides(set_))
    except ValidationError as e:
        raise ConfigError(validation_message(e, "probe settings")) from None
    dataset = load_qa(data)
    examples = select_examples(dataset, split, relations, limit)
    if not examples:
        raise ConfigError("no questions selected (check --split, --relations and --limit)")
    loaded = load_model(model, dtype=dtype, trust_remote_code=trust_remote_code)
    engine = HFTreeEngine(loaded.model, loaded.tokenizer, batch_size=batch_size)
    summary = run_probe(engine, dataset, examples, cfg, out, describe(loaded))
    console.print(category_table(summary, f"SliCK categories — {model} on {data} ({preset}, seed {seed})"))
    console.print(f"records: {out / 'probe.jsonl'}   summary: {out / 'summary.json'}")


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


def main() -> None:
    """Entry point: run the app, turning knowtune errors into one line and a non-zero exit."""
    try:
        app()
    except KnowtuneError as e:
        if _state["debug"]:
            raise
        print(f"knowtune: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("knowtune: interrupted", file=sys.stderr)
        sys.exit(130)
