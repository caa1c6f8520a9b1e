"""Wall time of `knowtune audit` on N builtin training questions written as Alpaca rows (with their
relation, so exemplars are held out per relation and cross-fitted), at the quick preset, from a
converted-model cache (the first GGUF conversion is not counted). Run it alone on the machine.

    python bench/audit.py                  # 1,000 rows, quick preset
    python bench/audit.py --rows 40        # a smoke run
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "audit.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--preset", default="quick")
    args = parser.parse_args()
    from knowtune.data import load_qa, select_examples
    from knowtune.models import load_model

    load_model("builtin")  # converts and caches the GGUF once, outside the timing
    ds = load_qa("builtin")
    rows = [{"id": e.id, "relation": e.relation, "instruction": e.question, "input": "", "output": e.answers[0]}
            for e in select_examples(ds, "train", None, args.rows)]
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "sft.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "knowtune", "audit", "--data", str(data), "--out", str(Path(tmp) / "audit"),
                        "--preset", args.preset], check=True)
        seconds = time.perf_counter() - start
        summary = json.loads((Path(tmp) / "audit" / "summary.json").read_text())
    result = {"rows": len(rows), "audited": summary["audited"], "preset": args.preset, "seconds": round(seconds, 1),
              "seconds_per_row": round(seconds / len(rows), 3), "categories": summary["categories"]}
    print(f"| rows | audited | preset | wall time | per row |\n| ---: | ---: | --- | ---: | ---: |\n"
          f"| {result['rows']} | {result['audited']} | {args.preset} | {seconds / 60:.1f} min | {result['seconds_per_row']} s |")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
