"""scripts/findings_markdown.py: one README row per finding, with the paper's number, the verdict, the
interval and this run's numbers, read from a results.json as the studies write it."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

from knowtune.studies.stats import Interval
from knowtune.studies.verdicts import Finding, check

SCRIPT = Path(__file__).parents[1] / "scripts" / "findings_markdown.py"


def test_rows_carry_paper_verdict_interval_and_this_run(tmp_path, monkeypatch, capsys):
    findings = [Finding("A > B on HOMO", "+11.27 points", "+0.0 points | 1 seed", check(Interval(0.0, -9.375, 9.375)),
                        extra={"set": "harmonious"}).to_dict(),
                Finding("Base above chance", "premise", "71.6 %", check(Interval(46.6, 41.4, 51.2))).to_dict(),
                Finding("Closeness", "+9.20", "token -1.5", check(Interval(-8.0, -12.0, -4.0)),
                        extra={"verdict_by_protocol": {"token": "contradicted", "exact": "inconclusive"}}).to_dict()]
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"findings": findings}), encoding="utf-8")
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), str(path)])
    runpy.run_path(str(SCRIPT), run_name="__main__")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| finding | paper | verdict | estimate [95 % interval] (± detectable) | this run |"
    assert lines[2] == "| harmonious: A > B on HOMO | +11.27 points | inconclusive | +0.0 [-9.4, +9.4] (±9.4) | +0.0 points / 1 seed |"
    assert lines[3] == "| Base above chance | premise | reproduced | +46.6 [+41.4, +51.2] (±4.9) | 71.6 % |"
    assert lines[4].startswith("| Closeness | +9.20 | contradicted / exact: inconclusive | -8.0 [-12.0, -4.0]")
    assert len(lines) == 5
