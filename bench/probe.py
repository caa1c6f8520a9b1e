"""Probe throughput: the plain Hugging Face `generate` loop vs knowtune's `sampled` and `exact` estimators, in one run.

All sides probe the same questions with the same exemplar sets and paper settings
(10 sets × (1 greedy + 16 samples at T=0.5, top-40), 4-shot). The baseline runs, per prompt,
`generate(do_sample=False)` then `generate(do_sample=True, num_return_sequences=16)`, both stopping
at a newline. Each side runs in its own process so peak RSS is its own.

    python bench/probe.py                      # 20 builtin test questions, paper settings
    python bench/probe.py --questions 4 --sets 2   # a smoke run
    python bench/probe.py --scale 200          # also knowtune alone on 200 questions (its prefixes amortise)

The HF loop runs each prompt on its own, so its cost per question does not depend on how many questions a
run has; knowtune's falls as more questions share a relation's exemplar-set prefixes. `--scale N` therefore
also times both estimators on the first N test questions (a superset of the compared ones) and reports their
throughput against the baseline's per-question rate: a rate ratio, not a same-questions ratio.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

from common import run_in_process  # noqa: E402  (bench/ is on sys.path when run as a script)

RESULTS = Path(__file__).parent / "results" / "probe.json"


def _setup(args):
    import torch

    from knowtune.data import load_qa, select_examples
    from knowtune.models import load_model
    from knowtune.probe.config import probe_config

    torch.set_num_threads(args.threads)
    data = load_qa("builtin")
    examples = select_examples(data, "test", None, args.questions)
    cfg = probe_config("paper", {"n_exemplar_sets": str(args.sets), "seed": str(args.seed)})
    return data, examples, cfg, load_model(args.model)


def _knowtune(args, queue):
    from knowtune.engine import HFTreeEngine
    from knowtune.probe.slick import probe_examples

    data, examples, cfg, lm = _setup(args)
    cfg = cfg.model_copy(update={"estimator": args.estimator})
    engine = HFTreeEngine(lm.model, lm.tokenizer, batch_size=args.batch_size)
    start = time.perf_counter()
    records = []
    for rel in sorted({e.relation for e in examples}):
        records += probe_examples(engine, data, [e for e in examples if e.relation == rel], cfg)
    seconds = time.perf_counter() - start
    queue.put({
        "seconds": seconds,
        "greedy": {r.id: r.greedy for r in records},
        "categories": {r.id: r.category for r in records},
        "p_sample": {r.id: r.p_sample for r in records},
        "avoided_share": engine.stats.avoided_share,
        "tree_forwards": engine.stats.tree_forwards,
        "sample_tokens": engine.stats.sample_tokens,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    })


def _baseline(args, queue):
    import torch

    from knowtune.data.formats import build_prompt, exemplar_sets
    from knowtune.engine import answer_text
    from knowtune.matching import is_correct
    from knowtune.probe.slick import slick_category

    data, examples, cfg, lm = _setup(args)
    model, tok = lm.model, lm.tokenizer
    common = dict(max_new_tokens=cfg.max_new_tokens, stop_strings=["\n"], tokenizer=tok, pad_token_id=tok.pad_token_id)
    start = time.perf_counter()
    greedy, categories = {}, {}
    for ex in examples:
        sets = exemplar_sets(data, ex.relation, cfg.k_shot, cfg.n_exemplar_sets, cfg.seed)
        g_ok = s_ok = 0
        greedy[ex.id] = []
        for exemplars in sets:
            inputs = tok(build_prompt(exemplars, ex), return_tensors="pt")
            n = inputs["input_ids"].shape[1]
            with torch.inference_mode():
                g = model.generate(**inputs, do_sample=False, **common)
                s = model.generate(**inputs, do_sample=True, temperature=cfg.temperature, top_k=cfg.top_k,
                                   num_return_sequences=cfg.n_samples, **common)
            answer = answer_text(tok, g[0, n:].tolist())
            greedy[ex.id].append(answer)
            g_ok += is_correct(answer, ex.answers)
            s_ok += sum(is_correct(answer_text(tok, row[n:].tolist()), ex.answers) for row in s)
        categories[ex.id] = slick_category(g_ok / len(sets), s_ok / (len(sets) * cfg.n_samples))
    seconds = time.perf_counter() - start
    queue.put({"seconds": seconds, "greedy": greedy, "categories": categories,
               "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="builtin")
    p.add_argument("--questions", type=int, default=20)
    p.add_argument("--sets", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--scale", type=int, default=0, help="also time knowtune alone on this many questions")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()

    sides = {}
    for est in ("sampled", "exact"):
        args.estimator = est
        sides[est] = run_in_process(_knowtune, args)
    base = run_in_process(_baseline, args)
    n = args.questions
    merged = lambda c: "WeaklyKnown|Unknown" if c in ("WeaklyKnown", "Unknown") else c

    def agree(side: dict, ref: dict, key=lambda c: c) -> str:
        same = sum(key(side["categories"][q]) == key(ref["categories"][q]) for q in side["categories"])
        return f"{same}/{n}"

    def greedy_same(side: dict) -> str:
        same = sum(a == b for q in side["greedy"] for a, b in zip(side["greedy"][q], base["greedy"][q]))
        return f"{same}/{sum(len(v) for v in side['greedy'].values())}"

    ratios = {est: round(base["seconds"] / side["seconds"], 2) for est, side in sides.items()}
    result = {
        "command": " ".join(["python", "bench/probe.py", *sys.argv[1:]]),
        "questions": n, "exemplar_sets": args.sets, "n_samples": 16, "temperature": 0.5, "top_k": 40,
        # both estimators keep greedy identical and SliCK's category distribution: the best is the headline
        "speedup": max(ratios.values()), "speedup_sampled": ratios["sampled"], "speedup_exact": ratios["exact"],
        "baseline_s": round(base["seconds"], 2),
        **{f"{est}_s": round(side["seconds"], 2) for est, side in sides.items()},
        "baseline_questions_per_s": round(n / base["seconds"], 4),
        **{f"{est}_questions_per_s": round(n / side["seconds"], 4) for est, side in sides.items()},
        "baseline_peak_rss_gib": round(base["peak_rss_gib"], 2),
        **{f"{est}_peak_rss_gib": round(side["peak_rss_gib"], 2) for est, side in sides.items()},
        "tree_avoided_share": round(sides["sampled"]["avoided_share"], 4),
        **{f"greedy_identical_{est}": greedy_same(side) for est, side in sides.items()},
        "categories_identical_sampled_vs_baseline": agree(sides["sampled"], base),
        "known_categories_identical_exact_vs_sampled": agree(sides["exact"], sides["sampled"], merged),
        "mean_abs_p_sample_exact_vs_sampled": round(sum(abs(sides["exact"]["p_sample"][q] - sides["sampled"]["p_sample"][q])
                                                        for q in sides["exact"]["p_sample"]) / n, 5),
    }
    if args.scale:
        scaled = argparse.Namespace(**{**vars(args), "questions": args.scale})
        result["at_scale"] = {"questions": args.scale}
        for est in ("sampled", "exact"):
            scaled.estimator = est
            side = run_in_process(_knowtune, scaled)
            rate = args.scale / side["seconds"]
            result["at_scale"].update({f"{est}_s": round(side["seconds"], 2), f"{est}_questions_per_s": round(rate, 4),
                                       f"{est}_rate_ratio": round(rate / result["baseline_questions_per_s"], 2),
                                       f"{est}_peak_rss_gib": round(side["peak_rss_gib"], 2)})
        print(f"at {args.scale} questions: " + ", ".join(
            f"{est} {result['at_scale'][est + '_questions_per_s']} q/s = {result['at_scale'][est + '_rate_ratio']}× the HF "
            "loop's per-question rate" for est in ("sampled", "exact")))
    print(f"{'':24}{'HF generate':>14}{'sampled':>14}{'exact':>14}")
    for label, key in (("seconds", "s"), ("questions/s", "questions_per_s"), ("peak RSS (GiB)", "peak_rss_gib")):
        print(f"{label:24}{result['baseline_' + key]:>14}{result['sampled_' + key]:>14}{result['exact_' + key]:>14}")
    print(f"speedup: sampled {ratios['sampled']}×, exact {ratios['exact']}×; greedy identical "
          f"{result['greedy_identical_sampled']} (sampled), {result['greedy_identical_exact']} (exact); "
          f"HighlyKnown/MaybeKnown/(WeaklyKnown∪Unknown) identical exact vs sampled "
          f"{result['known_categories_identical_exact_vs_sampled']}; categories sampled vs HF loop "
          f"{result['categories_identical_sampled_vs_baseline']} (samples differ by construction: other random streams)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
