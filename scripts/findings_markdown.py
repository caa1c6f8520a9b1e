"""Print a study's findings from its results.json as README table rows:
finding | paper | verdict | estimate [95 % interval] (± detectable) | this run.

    python scripts/findings_markdown.py runs/new_knowledge/results.json
"""

from __future__ import annotations

import json
import sys

from knowtune.studies.verdicts import Finding


def main(path: str) -> None:
    """Print the markdown table of the findings in `path`."""
    with open(path, encoding="utf-8") as fh:
        results = json.load(fh)
    print("| finding | paper | verdict | estimate [95 % interval] (± detectable) | this run |")
    print("| --- | --- | --- | --- | --- |")
    for f in map(Finding.from_dict, results["findings"]):
        claim = f"{f.extra['set']}: {f.claim}" if "set" in f.extra else f.claim
        verdict = f.verdict + "".join(f" / {p}: {v}" for p, v in f.extra.get("verdict_by_protocol", {}).items() if p != "token")
        cells = (claim, f.paper, verdict, f.summary, f.this_run)
        print("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1])
