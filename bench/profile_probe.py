"""Where a probe's CPU time goes: cProfile (process time) of one estimator on builtin test questions at paper settings.

    python bench/profile_probe.py --estimator exact --questions 4 --sets 3     # ~10 s of CPU
    python bench/profile_probe.py --estimator sampled --questions 4 --sets 3 --no-profile   # timing only

Look for hf_tree.py `_prefill_prefixes` (the exemplar prefixes), `prefill` minus it (the questions), `step`
(decoding: one weight sweep per step) and exact.py `on_gold_path` (the exact scorer's filter).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--estimator", choices=["sampled", "exact"], default="exact")
    p.add_argument("--questions", type=int, default=4)
    p.add_argument("--sets", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-profile", action="store_true")
    args = p.parse_args()

    import torch

    from knowtune.data import load_qa, select_examples
    from knowtune.engine import HFTreeEngine
    from knowtune.models import load_model
    from knowtune.probe.config import probe_config
    from knowtune.probe.slick import probe_examples

    torch.set_num_threads(args.threads)
    data = load_qa("builtin")
    examples = select_examples(data, "test", None, args.questions)
    cfg = probe_config("paper", {"n_exemplar_sets": str(args.sets), "estimator": args.estimator})
    lm = load_model("builtin")
    engine = HFTreeEngine(lm.model, lm.tokenizer, batch_size=args.batch_size)
    profile = None if args.no_profile else cProfile.Profile(time.process_time)
    start = time.process_time()
    if profile:
        profile.enable()
    for rel in sorted({e.relation for e in examples}):
        probe_examples(engine, data, [e for e in examples if e.relation == rel], cfg)
    if profile:
        profile.disable()
    print(f"{args.estimator}: {time.process_time() - start:.2f} s CPU, {engine.stats.tree_forwards} tree rows")
    if profile:
        pstats.Stats(profile).sort_stats("cumulative").print_stats(r"knowtune|linear|scaled_dot|deepcopy|cat\b", 40)


if __name__ == "__main__":
    main()
