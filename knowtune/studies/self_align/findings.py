"""Aggregate a self-aligning study over seeds and check the paper's claims against this run.

Accuracies are fractions internally and reported in percentage points beside the paper's numbers
(Ren et al. 2024; docs/design.md lists them). Gaps between two sets are paired by seed (same seed, same
test questions) before averaging. The main table is at CONVERGENCE (the last epoch), as the paper
trains for a fixed number of epochs; EARLY_STOP (best dev epoch) is reported beside it. Each finding's
interval and three-valued verdict follow docs/design.md §3 (knowtune/studies/stats.py, verdicts.py).
"""

from __future__ import annotations

from math import sqrt

import numpy as np

from knowtune.evaluate.multiple_choice import binomial_tail
from knowtune.probe.multiple_choice import CHANCE, rank_correlation
from knowtune.studies.stats import (
    BOOTSTRAP,
    at_epoch,
    bootstrap,
    completed_runs,
    difference,
    mean_std,
    wilson,
)
from knowtune.studies.verdicts import (
    CONTRADICTED,
    INCONCLUSIVE,
    REPRODUCED,
    SCHEMA_NOTE,
    SCHEMA_VERSION,
    Check,
    Finding,
    check,
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


def split_findings(runs: dict) -> list[dict]:
    """One finding per claim and test split (Harmonious > Incompatible, Self-aligning > Incompatible, on each of
    HOMO / ID / OOD, as the paper's table): the gap in points, paired by question, with its bootstrap interval over
    seeds then questions from the stored per-question predictions, beside the paper's gap."""
    out = []
    for better, label in (("harmonious", "Harmonious"), ("self_aligning", "Self-aligning")):
        for split in SPLITS:
            c = check(bootstrap(gap_columns(runs, better, "incompatible", split), difference(), shared=True),
                      label=split.upper())
            gap = paired_gap(runs, better, "incompatible", split)
            if gap["mean"] is None:
                text = "n/a (both sets must be trained)"
            else:
                text = (f"{gap['mean'] * 100:+.1f}" + (f" ± {gap['std'] * 100:.1f}" if gap["n"] > 1 else "")
                        + f" points at convergence ({gap['n']} seed{'s' if gap['n'] > 1 else ''})"
                        + ("" if c.ci else "; no per-question predictions stored, so no interval"))
            out.append(Finding(f"{label} > Incompatible on {split.upper()}", f"+{PAPER_GAPS[better][split]:.2f} points",
                               text, c, {"split": split, "compared": [better, "incompatible"]}).to_dict())
    return out


def consistency_columns(runs: dict, base_rows: dict, names: list[str], stage: str = "convergence") -> list[np.ndarray]:
    """Per seed: one row per HOMO / ID / OOD question (the same in every seed), and for each (set, split) cell two
    columns, the question's knowledge consistency (rank correlation of its option probabilities, base vs
    fine-tuned) and its accuracy change (correct after − correct before); NaN outside the question's split and
    where a set has no stored predictions."""
    questions = [(split, i) for split in SPLITS for i in sorted(base_rows.get(split, {}))]
    out = []
    for by in runs.values():
        cols = np.full((len(questions), 2 * len(names) * len(SPLITS)), np.nan)
        for j, name in enumerate(names):
            after = by[name].get("outcomes", {}).get(by[name][f"{stage}_epoch"], {}) if name in by else {}
            for r, (split, qid) in enumerate(questions):
                row, before = after.get(split, {}).get(qid), base_rows[split][qid]
                if row is not None:
                    c = 2 * (j * len(SPLITS) + SPLITS.index(split))
                    cols[r, c:c + 2] = rank_correlation(before["probs"], row["probs"]), float(row["correct"]) - float(before["correct"])
        out.append(cols)
    return out


def cell_correlation(_ids: np.ndarray, means: list[np.ndarray]) -> float:
    """Pearson r over the (set, split) cells between mean consistency and mean accuracy change, each cell's means
    averaged over the drawn seeds that trained its set; NaN with fewer than three cells or a constant side."""
    stacked = np.array(means)
    present = ~np.isnan(stacked)
    with np.errstate(invalid="ignore", divide="ignore"):
        cells = (np.where(present, stacked, 0.0).sum(axis=0) / present.sum(axis=0)).reshape(-1, 2)
    cells = cells[~np.isnan(cells).any(axis=1)]
    if len(cells) < 3 or np.ptp(cells[:, 0]) == 0 or np.ptp(cells[:, 1]) == 0:
        return float("nan")
    return float(np.corrcoef(cells[:, 0], cells[:, 1])[0, 1])


def _consistency_finding(runs: dict, table: dict, consistency: dict, base_rows: dict | None) -> dict:
    """The paper's explanation, as a correlation over (set, split) cells: sets that kept the base model's option
    rankings gained more accuracy. Over cells, not questions: within a set a question whose answer flips right
    must change its ranking, so a per-question correlation would be negative by construction. The interval
    resamples seeds, then questions (the same draw in every cell); it does not cover which sets were trained."""
    claim = "Sets that keep the base model's option rankings (knowledge consistency) score higher"
    paper = "the paper's explanation of its results (the paper gives no number)"
    names = list(table)
    c = check(bootstrap(consistency_columns(runs, base_rows, names), cell_correlation, shared=True) if base_rows else None,
              units="Pearson r")
    per_set = "; ".join(f"{n} {np.mean([consistency[n][s]['rank_correlation']['mean'] for s in SPLITS]):.2f}"
                        for n in names if all(consistency[n][s]["rank_correlation"]["mean"] is not None for s in SPLITS))
    cells = [(consistency[n][s]["rank_correlation"]["mean"], table[n][s]["change"]["mean"]) for n in names for s in SPLITS]
    cells = [cell for cell in cells if None not in cell]
    if len(cells) < 3 or np.ptp([x for x, _ in cells]) == 0 or np.ptp([y for _, y in cells]) == 0:
        return Finding(claim, paper, f"n/a (too few or constant cells); rank correlation per set: {per_set}", c).to_dict()
    r = float(np.corrcoef([x for x, _ in cells], [y for _, y in cells])[0, 1])
    interval = f" [{c.ci[0]:+.2f}, {c.ci[1]:+.2f}]" if c.ci else " (no interval: no per-question predictions stored)"
    return Finding(claim, paper, f"Pearson r = {r:+.2f}{interval} between rank correlation and accuracy change over "
                                 f"{len(cells)} (set, split) cells at convergence; mean rank correlation per set: {per_set}",
                   c).to_dict()


def base_finding(base: dict, protocol: str) -> dict:
    """Whether the base model is above chance under the protocol used, on the training pool (HOMO / ID / OOD beside):
    without that, the sets cannot separate known from unknown. The verdict is the exact binomial test's, not a
    bootstrap's: one sample of independent answers, no seeds."""
    pool = base["pool"]
    n = pool["n"]
    k = round(pool["accuracy"] * n)
    below = binomial_tail(n - k, n, 1 - CHANCE)  # P(X <= k): the one-sided p of being below chance
    verdict = REPRODUCED if pool["above_chance"] else CONTRADICTED if below < 0.05 else INCONCLUSIVE
    rule = ("reproduced if the one-sided exact binomial test of the pool accuracy against 25 % gives p < 0.05, "
            "contradicted if the one-sided test the other way (below 25 %) does, inconclusive otherwise; the estimate "
            "is the accuracy − 25 points, with its 95 % Wilson interval")
    low, high = wilson(k, n)
    c = Check((pool["accuracy"] - CHANCE) * 100, ((low - CHANCE) * 100, (high - CHANCE) * 100), verdict, rule, "pool")
    text = (f"{pool['accuracy'] * 100:.1f} % of {n} pool questions, one-sided binomial p = {pool['p_value']:.3g}; "
            + ", ".join(f"{s.upper()} {base[s]['accuracy'] * 100:.1f} % (p = {base[s]['p_value']:.3g})" for s in SPLITS))
    return Finding(f"The base model is above chance (25 %) under {protocol} scoring",
                   "the paper's premise (its base models know part of the questions; no number for this)", text, c,
                   {"p_value": pool["p_value"], "p_below": below, "base_finding": True}).to_dict()


def findings(runs: dict, table: dict, consistency: dict, base_at_chance: bool = False, base: dict | None = None,
             protocol: str = "letter-logit", base_rows: dict | None = None) -> list[dict]:
    """One finding per claim of the paper and test split, then the consistency claim (with `base_rows`, the base
    model's stored per-question predictions per split, its interval), then (with `base`) whether the base model is
    above chance; with a base model at chance each claim's line says that it is no evidence either way."""
    out = [*split_findings(runs), _consistency_finding(runs, table, consistency, base_rows)]
    for f in out:
        f["base_at_chance"] = base_at_chance
        if base_at_chance:
            f["this_run"] += ("; the base model is at chance on the training pool, so the sets do not separate "
                              "known from unknown and this is no evidence either way")
    if base is not None:
        out.append({**base_finding(base, protocol), "base_at_chance": False})
    return out


def caveats(base: dict, seeds: int) -> list[str]:
    """Plain warnings about what limits this run's evidence: a base model at chance, a letter preference, one seed."""
    out = []
    pool = base["pool"]
    letter = max(pool["predicted_letters"], key=lambda L: pool["predicted_letters"][L])
    share = pool["predicted_letters"][letter] / pool["n"]
    if not pool["above_chance"]:
        out.append(f"The base model is not above chance on the training pool under this scoring protocol: {pool['accuracy'] * 100:.1f} % on "
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


def analyse(cfg, base: dict, set_info: dict, runs: dict, base_rows: dict | None = None) -> dict:
    """Every aggregate the report shows, plus the findings and caveats, as one JSON-ready dict; `base_rows` are the
    base model's stored per-question predictions (part → question id → row), for the consistency claim's interval."""
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
        "protocol": cfg.probe.label(),
        "findings": findings(done, tables["convergence"], consistency["convergence"], not base["pool"]["above_chance"],
                             base, cfg.probe.label(), base_rows),
        "caveats": caveats(base, len(cfg.seeds)),
        "paper": PAPER_GAPS,
        "diverged": {f"seed{s}/{n}": r["diverged"] for s, by in runs.items() for n, r in by.items() if "diverged" in r},
        "runs": {f"seed{s}": {n: {k: v for k, v in r.items() if k != "outcomes"} for n, r in by.items()} for s, by in runs.items()},
    }

