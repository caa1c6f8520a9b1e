"""Probe throughput on two engines: knowtune's hf tree engine vs vLLM, same questions and settings, in one run.

Both sides probe the same questions with the same exemplar sets and the same probe settings through
`probe_examples`, each in its own spawned process (its own peak RSS and model load, which is timed
apart from probing). Run it in the vllm environment (`bash scripts/setup.sh vllm`, or `pip install
"knowtune[vllm]"` on a GPU machine):

    .venv-vllm/bin/python bench/engines.py                             # CPU: 20 builtin questions, paper settings
    .venv-vllm/bin/python bench/engines.py --questions 4 --sets 2      # a smoke run
    python bench/engines.py --model Qwen/Qwen2.5-7B --dtype bfloat16 --questions 2000 --batch-size 64 \\
        --engine-set gpu_memory_utilization=0.85 --out bench/results/engines-7b.json   # a GPU (see bench/gpu_7b.sh)
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

from common import run_in_process  # noqa: E402  (bench/ is on sys.path when run as a script)

RESULTS = Path(__file__).parent / "results" / "engines.json"


def _probe(args, queue):
    """Load one engine, then probe every question relation by relation; put timings and answers."""
    import torch

    from knowtune.data import load_qa, select_examples
    from knowtune.engine import HFTreeEngine, engine_options, vllm_engine
    from knowtune.models import load_model
    from knowtune.probe.config import probe_config
    from knowtune.probe.slick import probe_examples

    torch.set_num_threads(args.threads)
    data = load_qa(args.data)
    examples = select_examples(data, args.split, None, args.questions)
    cfg = probe_config(args.preset, {"n_exemplar_sets": str(args.sets), "seed": str(args.seed)} if args.sets else {"seed": str(args.seed)})
    start = time.perf_counter()
    if args.engine == "vllm":
        engine, _ = vllm_engine(args.model, engine_options("vllm", args.engine_set, args.dtype), cfg.seed)
    else:
        lm = load_model(args.model, dtype=args.dtype, device="cuda" if torch.cuda.is_available() else None)
        engine = HFTreeEngine(lm.model, lm.tokenizer, batch_size=args.batch_size)
    load_seconds = time.perf_counter() - start
    start = time.perf_counter()
    records = []
    for rel in sorted({e.relation for e in examples}):
        records += probe_examples(engine, data, [e for e in examples if e.relation == rel], cfg)
    queue.put({
        "engine": engine.info.to_dict(), "load_seconds": load_seconds, "seconds": time.perf_counter() - start,
        "questions": len(records), "prompts": engine.stats.prompts, "decode_token_forwards": engine.stats.tree_forwards,
        "greedy": {r.id: r.greedy for r in records}, "categories": {r.id: r.category for r in records},
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    })
    if args.engine == "vllm":
        engine.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="builtin")
    p.add_argument("--data", default="builtin")
    p.add_argument("--split", default="test")
    p.add_argument("--questions", type=int, default=20)
    p.add_argument("--preset", default="paper")
    p.add_argument("--sets", type=int, default=None, help="exemplar sets (default: the preset's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--batch-size", type=int, default=20, help="hf engine: questions per forward")
    p.add_argument("--engine-set", action="append", default=[], help="a vllm engine option, key=value")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    sides = {}
    for engine in ("hf", "vllm"):
        args.engine = engine
        sides[engine] = run_in_process(_probe, args)
        print(f"{engine}: load {sides[engine]['load_seconds']:.1f} s, probe {sides[engine]['seconds']:.1f} s "
              f"for {sides[engine]['questions']} questions", flush=True)
    hf, vl = sides["hf"], sides["vllm"]
    ids = sorted(hf["greedy"])
    result = {
        "conditions": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "engine"},
        "hf": {k: v for k, v in hf.items() if k not in ("greedy", "categories")},
        "vllm": {k: v for k, v in vl.items() if k not in ("greedy", "categories")},
        "speedup_vllm_over_hf": hf["seconds"] / vl["seconds"],
        "greedy_identical": f"{sum(hf['greedy'][i] == vl['greedy'][i] for i in ids)} / {len(ids)} questions",
        "categories_agree": f"{sum(hf['categories'][i] == vl['categories'][i] for i in ids)} / {len(ids)} questions",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("speedup_vllm_over_hf", "greedy_identical", "categories_agree")}, indent=2))


if __name__ == "__main__":  # spawned processes (ours and vLLM's workers) import this module again
    main()
