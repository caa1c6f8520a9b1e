"""The `exact` SliCK estimator: categories from greedy answers and exact sample probabilities.

P(T=0) comes from the greedy answers, as in the sampled estimator. For P(T>0), p_s, the exact
probability that one sample under exemplar set s is a gold answer, replaces the N_sample draws
(knowtune.engine.exact). Then E[P(T>0)] = mean_s p_s and, when every greedy answer is wrong,
P(WeaklyKnown) = 1 − Π_s (1 − p_s)^N_sample: the chance that sampled SliCK would see at least one
correct sample. A record keeps p_s per set (and per set the mass of paths too unlikely to expand,
by which p_s may be low: the `min_path_prob` floor), that probability, the category it makes more likely
(`category_expected`) and, as `category`, one seeded draw from it, so the categories of a run are
distributed exactly as sampled SliCK's (the curation and the studies read `category`).
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from knowtune.data.formats import exemplar_block, exemplar_sets, question_block
from knowtune.data.records import QADataset, QAExample
from knowtune.errors import ConfigError
from knowtune.files import stable_int
from knowtune.matching import is_correct
from knowtune.probe.config import ProbeConfig
from knowtune.probe.records import ProbeRecord


def weakly_known_probability(p_sets: list[float], n_samples: int) -> float:
    """1 − Π_s (1 − p_s)^n_samples, computed in log space so tiny p_s are not lost to rounding."""
    if any(p >= 1.0 for p in p_sets) and n_samples:
        return 1.0
    return 0.0 - math.expm1(n_samples * sum(math.log1p(-p) for p in p_sets))  # 0.0 - : never -0.0


def exact_categories(p_greedy: float, p_wk: float, seed: int, example_id: str) -> tuple[str, str]:
    """(expected, drawn) SliCK category: HighlyKnown / MaybeKnown from greedy as in sampled SliCK; otherwise
    WeaklyKnown when it is the likelier (expected) or when a seeded uniform falls below P(WeaklyKnown) (drawn)."""
    if p_greedy == 1.0:
        return "HighlyKnown", "HighlyKnown"
    if p_greedy > 0.0:
        return "MaybeKnown", "MaybeKnown"
    u = np.random.default_rng(stable_int("exact-category", seed, example_id)).random()
    name = lambda wk: "WeaklyKnown" if wk else "Unknown"
    return name(p_wk >= 0.5), name(u < p_wk)


def probe_examples_exact(engine, data: QADataset, examples: list[QAExample], cfg: ProbeConfig) -> list[ProbeRecord]:
    """Probe questions of one relation under each exemplar set with the exact estimator."""
    from knowtune.engine.exact import ExactScorer
    from knowtune.engine.hf_tree import HFTreeEngine

    if not isinstance(engine, HFTreeEngine):
        raise ConfigError("estimator: 'exact' needs the hf engine (it scores under teacher forcing)")
    scorer = ExactScorer(engine, cfg.min_path_prob)
    params = cfg.sampling()
    greedy, p_sets, pruned = defaultdict(list), defaultdict(list), defaultdict(list)
    relation = examples[0].relation
    for exemplars in exemplar_sets(data, relation, cfg.k_shot, cfg.n_exemplar_sets, cfg.seed):
        prefix = "".join(exemplar_block(e) for e in exemplars)
        outs = scorer.score(prefix, [question_block(e) for e in examples], [e.answers for e in examples], params)
        for ex, out in zip(examples, outs):
            greedy[ex.id].append(out.greedy)
            # 4 significant digits: float32 logits differ in their last bits with the batch's shape, and a
            # record must not depend on batching or on where a killed run resumed
            p_sets[ex.id].append(float(f"{out.p_gold:.4g}"))
            pruned[ex.id].append(float(f"{out.pruned:.4g}"))
    records = []
    for ex in examples:
        g_ok = [is_correct(a, ex.answers) for a in greedy[ex.id]]
        p_greedy = sum(g_ok) / cfg.n_exemplar_sets
        p_wk = weakly_known_probability(p_sets[ex.id], cfg.n_samples)
        upper = [min(p + x, 1.0) for p, x in zip(p_sets[ex.id], pruned[ex.id])]
        expected, drawn = exact_categories(p_greedy, p_wk, cfg.seed, ex.id)
        records.append(ProbeRecord(
            ex.id, ex.relation, ex.subject, ex.question, ex.answers, ex.popularity, ex.split, greedy=greedy[ex.id],
            greedy_correct=g_ok, p_greedy=p_greedy, p_sample=sum(p_sets[ex.id]) / len(p_sets[ex.id]), category=drawn,
            extra={"estimator": "exact", "p_sets": p_sets[ex.id], "p_weakly_known": p_wk,
                   "category_expected": expected, "p_sets_pruned": pruned[ex.id],
                   "p_weakly_known_upper": weakly_known_probability(upper, cfg.n_samples)}))
    return records
