"""`knowtune data list` and `knowtune data show`."""

from __future__ import annotations

import typer
from rich.markup import escape
from rich.table import Table

from knowtune.cli.app import console, data_app


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
