"""`knowtune study list` and one `knowtune study <name>` per registered study."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from knowtune.cli.app import console, study_app
from knowtune.settings import parse_overrides


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
