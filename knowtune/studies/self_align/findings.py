"""Aggregate a self-aligning study over seeds and check the paper's claims against this run.

Accuracies are fractions internally and reported in percentage points beside the paper's numbers
(Ren et al. 2024; docs/design.md lists them). Gaps between two sets are paired by seed (same seed, same
test questions) before averaging. The main table is at CONVERGENCE (the last epoch), as the paper
trains for a fixed number of epochs; EARLY_STOP (best dev epoch) is reported beside it.
"""

from __future__ import annotations

from math import sqrt

import numpy as np

from knowtune.studies.stats import (
    BOOTSTRAP,
    at_epoch,
    bootstrap,
    completed_runs,
    difference,
    mean_std,
)
from knowtune.studies.verdicts import (
    SCHEMA_NOTE,
    SCHEMA_VERSION,
    Finding,
    check,
    combine,
)

SPLITS = ("homo", "id", "ood")
STAGES = ("convergence", "early_stop")
PAPER_GAPS = {  # accuracy gain over Incompatible, in points, HOMO / ID / OOD
    "harmonious": {"homo": 11.27, "id": 14.58, "ood": 14.57},
    "self_aligning": {"homo": 5.25, "id": 9.78, "ood": 6.97},
}
CONSISTENCY_METRICS = ("rank_correlation", "kl_divergence", "same_prediction")


def set_names(runs: dict) -> list[str]:
    """Every trained set, in training order."""
    names: list[str] = []
    for by in runs.values():
        names += [n for n in by if n not in names]
    return names


def _over_seeds(runs: dict, name: str, stage: str, split: str, *keys: str) -> dict:
    """Mean ± std over seeds of metrics row["eval"][split][keys...] at one stage of one set."""
    values = []
    for by in runs.values():
        if name in by:
            value = at_epoch(by[name], stage)["eval"][split]
            for key in keys:
                value = value[key]
            values.append(value)
    return mean_std(values)


def accuracy_table(runs: dict, stage: str) -> dict:
    """Per set and test split: accuracy and change from the base model (mean ± std over seeds)."""
    return {name: {split: {k: _over_seeds(runs, name, stage, split, k) for k in ("accuracy", "change")}
                   for split in SPLITS} for name in set_names(runs)}


def consistency_table(runs: dict, stage: str) -> dict:
    """Per set and test split: the knowledge consistency of the fine-tuned model with the base model."""
    return {name: {split: {k: _over_seeds(runs, name, stage, split, "consistency", k) for k in CONSISTENCY_METRICS}
                   for split in SPLITS} for name in set_names(runs)}


def paired_gap(runs: dict, better: str, worse: str, split: str, stage: str = "convergence") -> dict:
    """Accuracy of `better` minus `worse` on one split, per seed where both trained, then mean ± std."""
    gaps = [at_epoch(by[better], stage)["eval"][split]["accuracy"] - at_epoch(by[worse], stage)["eval"][split]["accuracy"]
            for by in runs.values() if better in by and worse in by]
    return mean_std(gaps)


def gap_columns(runs: dict, better: str, worse: str, split: str, stage: str = "convergence") -> list[np.ndarray]:
    """Per seed where both trained with stored predictions: one row per test question of `split`,
    columns [better correct, worse correct] (the same questions in every seed and set)."""
    out = []
    for by in runs.values():
        preds = [by[n].get("outcomes", {}).get(by[n][f"{stage}_epoch"], {}).get(split) if n in by else None for n in (better, worse)]
        if all(preds):
            ids = sorted(preds[0])
            out.append(np.array([[float(p[i]["correct"]) for p in preds] for i in ids]))
    return out


def _gap_finding(runs: dict, better: str, label: str) -> dict:
    paper = PAPER_GAPS[better]
    claim = f"{label} data beats Incompatible data on HOMO, ID and OOD"
    paper_text = " / ".join(f"+{paper[s]:.2f} {s.upper()}" for s in SPLITS) + " points"
    checks = {s: check(bootstrap(gap_columns(runs, better, "incompatible", s), difference(), shared=True), label=s.upper())
              for s in SPLITS}
    both = combine(list(checks.values()))
    gaps = {split: paired_gap(runs, better, "incompatible", split) for split in SPLITS}
    if any(g["mean"] is None for g in gaps.values()):
        this_run = "n/a (both sets must be trained)"
    else:
        this_run = ", ".join(f"{s.upper()} {g['mean'] * 100:+.1f}" + (f" ± {g['std'] * 100:.1f}" if g["n"] > 1 else "")
                             + (f" [{checks[s].ci[0]:+.1f}, {checks[s].ci[1]:+.1f}]" if checks[s].ci else " [no interval]")
                             for s, g in gaps.items())
        this_run += f" points at convergence ({gaps['homo']['n']} seed{'s' if gaps['homo']['n'] > 1 else ''})"
    return Finding(claim, paper_text, this_run, both, {"verdict_by_split": {s: c.verdict for s, c in checks.items()}}).to_dict()


def _consistency_finding(table: dict, consistency: dict) -> dict:
    cells = [(consistency[n][s]["rank_correlation"]["mean"], table[n][s]["change"]["mean"]) for n in table for s in SPLITS]
    cells = [(c, a) for c, a in cells if c is not None and a is not None]
    claim = "Sets that keep the base model's option rankings (knowledge consistency) score higher"
    paper = "the paper's explanation of its results (the paper gives no number)"
    per_set = "; ".join(f"{n} {np.mean([consistency[n][s]['rank_correlation']['mean'] for s in SPLITS]):.2f}"
                        for n in consistency if all(consistency[n][s]["rank_correlation"]["mean"] is not None for s in SPLITS))
    xs, ys = [c for c, _ in cells], [a for _, a in cells]
    # No interval yet: that needs each question's consistency stored per epoch; until then the verdict is inconclusive.
    no_interval = check(None, units="(Pearson r)")
    if len(cells) < 3 or np.std(xs) == 0 or np.std(ys) == 0:
        return Finding(claim, paper, f"n/a (too few or constant cells); rank correlation per set: {per_set}", no_interval).to_dict()
    r = float(np.corrcoef(xs, ys)[0, 1])
    return Finding(claim, paper, f"Pearson r = {r:+.2f} between rank correlation and accuracy change over {len(cells)} "
                                 f"(set, split) cells (no interval yet); mean rank correlation per set: {per_set}",
                   no_interval).to_dict()


def findings(runs: dict, table: dict, consistency: dict, base_at_chance: bool = False) -> list[dict]:
    """One line per claim of the paper: the claim, the paper's numbers, this run's, and whether it holds;
    with a base model at chance each line says that it is no evidence either way."""
    out = [_gap_finding(runs, "harmonious", "Harmonious"), _gap_finding(runs, "self_aligning", "Self-aligning"),
           _consistency_finding(table, consistency)]
    for f in out:
        f["base_at_chance"] = base_at_chance
        if base_at_chance:
            f["this_run"] += ("; the base model is at chance on the training pool, so the sets do not separate "
                              "known from unknown and this is no evidence either way")
    return out


def caveats(base: dict, seeds: int) -> list[str]:
    """Plain warnings about what limits this run's evidence: a base model at chance, a letter preference, one seed."""
    out = []
    pool = base["pool"]
    letter = max(pool["predicted_letters"], key=lambda L: pool["predicted_letters"][L])
    share = pool["predicted_letters"][letter] / pool["n"]
    if not pool["above_chance"]:
        out.append(f"The base model is not above chance on the training pool: {pool['accuracy'] * 100:.1f} % on "
                   f"{pool['n']} questions (chance 25 %, one-sided binomial p = {pool['p_value']:.2f}). Harmonious and "
                   "Incompatible then split questions by luck rather than by what the model knows, so this run "
                   "cannot test the paper's claims; use a model that is above chance here.")
    if share > 0.5:
        out.append(f"The base model answers '{letter}' to {share * 100:.0f} % of the training pool, so the sets' labels "
                   "follow that letter preference (see the label letters per set).")
    for part in SPLITS:
        b = base[part]
        if not b["above_chance"]:
            out.append(f"Base model on {part.upper()}: {b['accuracy'] * 100:.1f} % on {b['n']} questions, not above "
                       f"chance (p = {b['p_value']:.2f}); always answering '{b['best_constant_letter']}' scores "
                       f"{b['best_constant_accuracy'] * 100:.1f} %.")
    if seeds == 1:
        n = min(base[s]["n"] for s in SPLITS)
        out.append(f"One seed: no spread over seeds. On {n} questions one accuracy has a standard error of about "
                   f"{sqrt(0.25 * 0.75 / n) * 100:.1f} points near chance.")
    return out


def analyse(cfg, base: dict, set_info: dict, runs: dict) -> dict:
    """Every aggregate the report shows, plus the findings and caveats, as one JSON-ready dict."""
    done = completed_runs(runs)
    tables = {stage: accuracy_table(done, stage) for stage in STAGES}
    consistency = {stage: consistency_table(done, stage) for stage in STAGES}
    return {
        "schema_version": SCHEMA_VERSION,
        "schema_note": SCHEMA_NOTE,
        "bootstrap": BOOTSTRAP,
        "config": cfg.model_dump(),
        "base": base,
        "sets": {f"seed{s}": info for s, info in set_info.items()},
        "table": tables,
        "consistency": consistency,
        "findings": findings(done, tables["convergence"], consistency["convergence"], not base["pool"]["above_chance"]),
        "caveats": caveats(base, len(cfg.seeds)),
        "paper": PAPER_GAPS,
        "diverged": {f"seed{s}/{n}": r["diverged"] for s, by in runs.items() for n, r in by.items() if "diverged" in r},
        "runs": {f"seed{s}": {n: {k: v for k, v in r.items() if k != "outcomes"} for n, r in by.items()} for s, by in runs.items()},
    }

