"""Agreement of the `exact` SliCK estimator with `sampled` on the same questions, and what exact cannot see.

Probes the questions twice (paper settings, run directories under --out, resumable), then reports:
* HighlyKnown / MaybeKnown / (WeaklyKnown ∪ Unknown) identical per question (both share greedy);
* calibration: sampled correct counts per (question, set) are Binomial(N_sample, p_s) if the exact p_s are
  right, so Σ counts against N_sample·Σ p_s is a z-test; and sampled WeaklyKnown among all-greedy-wrong
  questions is Bernoulli(P(WeaklyKnown)), a second z-test, with a binned table; both can fail;
* mean |E[P(T>0)] − sampled P(T>0)|;
* coverage: the share of correct sampled answers whose text leaves exact's gold-path filter (its blind spot).

    python bench/exact_agreement.py --data builtin --limit 400 --out runs/agree-builtin
    python bench/exact_agreement.py --data /work/shared/data/entityquestions --limit 200 --out runs/agree-eq
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from scipy.stats import norm


def probe_both(args) -> dict[str, dict]:
    import torch

    from knowtune.data import load_qa, select_examples
    from knowtune.engine import HFTreeEngine
    from knowtune.models import describe, load_model
    from knowtune.probe.config import probe_config
    from knowtune.probe.slick import load_records, run_probe

    torch.set_num_threads(args.threads)
    data = load_qa(args.data)
    examples = select_examples(data, args.split, None, args.limit)
    lm = load_model(args.model)
    out = {}
    for est in ("sampled", "exact"):
        cfg = probe_config("paper", {"estimator": est, "seed": str(args.seed)})
        run_probe(HFTreeEngine(lm.model, lm.tokenizer, batch_size=args.batch_size), data, examples, cfg,
                  args.out / est, describe(lm), progress=True)
        out[est] = {r.id: r for r in load_records(args.out / est / "probe.jsonl")}
    return out


def z_test(observed: float, expected: float, variance: float) -> dict:
    """Two-sided normal test of a sum of independent indicators / binomials against its expectation."""
    z = (observed - expected) / math.sqrt(variance) if variance > 0 else 0.0
    return {"observed": observed, "expected": round(expected, 3), "z": round(z, 3), "p_value": float(2 * norm.sf(abs(z)))}


def covered(answer: str, aliases) -> bool:
    """Does every character prefix of this (correct) sampled answer stay on exact's gold path?"""
    from knowtune.engine.exact import gold_keys, on_gold_path

    keys, text = gold_keys(aliases), " " + answer
    return all(on_gold_path(text[:i], keys) for i in range(1, len(text) + 1))


def analyse(recs: dict[str, dict], n_samples: int = 16) -> dict:
    from knowtune.matching import is_correct

    s, e = recs["sampled"], recs["exact"]
    ids = sorted(s.keys() & e.keys())
    merged = lambda c: "WeaklyKnown|Unknown" if c in ("WeaklyKnown", "Unknown") else c
    greedy_same = sum(s[q].greedy == e[q].greedy for q in ids)
    known_same = sum(merged(s[q].category) == merged(e[q].category) for q in ids)
    counts = [(c, p) for q in ids for c, p in zip(s[q].sample_correct, e[q].extra["p_sets"])]
    per_set = z_test(sum(c for c, _ in counts), sum(n_samples * p for _, p in counts),
                     sum(n_samples * p * (1 - p) for _, p in counts))
    wrong = [q for q in ids if s[q].p_greedy == 0.0]
    wk = [(s[q].category == "WeaklyKnown", e[q].extra["p_weakly_known"]) for q in wrong]
    per_question = z_test(sum(x for x, _ in wk), sum(p for _, p in wk), sum(p * (1 - p) for _, p in wk))
    bins = {}
    for lo, hi in ((0, 0.1), (0.1, 0.5), (0.5, 0.9), (0.9, 1.01)):
        inside = [(x, p) for x, p in wk if lo <= p < hi]
        if inside:
            bins[f"[{lo}, {min(hi, 1)})"] = {"questions": len(inside), "mean_p_weakly_known": round(sum(p for _, p in inside) / len(inside), 4),
                                             "sampled_weakly_known_rate": round(sum(x for x, _ in inside) / len(inside), 4)}
    correct = [(a, c, s[q].answers) for q in ids for d in s[q].samples for a, c in d.items() if is_correct(a, s[q].answers)]
    missed = sum(c for a, c, al in correct if not covered(a, al))
    return {
        "questions": len(ids),
        "greedy_identical": f"{greedy_same}/{len(ids)}",
        "known_categories_identical": f"{known_same}/{len(ids)}",
        "calibration_correct_samples_per_set": per_set,
        "calibration_weakly_known": {**per_question, "questions_all_greedy_wrong": len(wrong), "bins": bins},
        "mean_abs_p_sample_difference": round(sum(abs(e[q].p_sample - s[q].p_sample) for q in ids) / len(ids), 5),
        "max_pruned_mass_per_set": max((x for q in ids for x in e[q].extra["p_sets_pruned"]), default=0.0),
        "correct_samples_outside_filter": f"{missed}/{sum(c for _, c, _ in correct)}",
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="builtin")
    p.add_argument("--data", default="builtin")
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, default=400)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    result = {"command": " ".join(["python", "bench/exact_agreement.py", *sys.argv[1:]]), **analyse(probe_both(args))}
    print(json.dumps(result, indent=2))
    (args.out / "agreement.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
