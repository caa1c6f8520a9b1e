"""The terminal's view of each stage's result: rich tables of probe categories, curated sets,
multiple-choice accuracy and a study's findings."""

from __future__ import annotations

from rich.table import Table

from knowtune.probe.records import CATEGORIES


def category_table(summary: dict, title: str) -> Table:
    """The SliCK category counts per relation and popularity band, with chance rates."""
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


def sets_table(manifest: dict[str, dict], title: str) -> Table:
    """Each curated set's size and its examples per SliCK category."""
    table = Table(title=title)
    table.add_column("set")
    for c in (*CATEGORIES, "size"):
        table.add_column(c, justify="right")
    for name, m in manifest.items():
        table.add_row(name, *[str(m["categories"].get(c, 0)) for c in CATEGORIES], str(m["size"]))
    return table


def mc_table(summary: dict, title: str) -> Table:
    """Multiple-choice accuracy per domain, per subject and overall."""
    table = Table(title=title)
    for column in ("domain / subject", "n", "accuracy"):
        table.add_column(column, justify="left" if column.startswith("domain") else "right")
    for name, row in list(summary["domains"].items()) + [(f"  {s}", r) for s, r in summary["subjects"].items()]:
        table.add_row(name, str(row["n"]), f"{row['accuracy']:.3f}")
    check = summary["chance_check"]
    table.add_row("[b]all[/b]", str(check["n"]), f"{check['accuracy']:.3f}")
    return table


def chance_line(check: dict) -> str:
    """The test against chance in words: p-value, the letters predicted, the best constant letter."""
    return (f"chance 0.25: one-sided binomial p = {check['p_value']:.3g} "
            f"({'above' if check['above_chance'] else 'NOT above'} chance); predicted letters "
            f"{check['predicted_letters']}; always '{check['best_constant_letter']}' would score "
            f"{check['best_constant_accuracy']:.3f}")


def findings_table(rows: list[tuple[str, str, str, str, str]], title: str) -> Table:
    """A study's findings: (claim, verdict, estimate [low, high], this run, paper) per row."""
    table = Table(title=title)
    for col in ("finding", "verdict", "estimate [95 % interval]", "this run", "paper"):
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    return table
