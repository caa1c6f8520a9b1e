"""Aggregate a new-knowledge study over seeds and check each of the paper's findings against this run.

Accuracies are kept as fractions internally and reported in percentage points beside the paper's
numbers (PaLM 2-M on EntityQuestions, |D| = 6142; docs/design.md lists them).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from knowtune.curate.new_knowledge_sets import UNKNOWN_SHARES
from knowtune.evaluate.analysis import epochs_to_fit, fit_linear_model, fitted_fractions
from knowtune.probe.records import CATEGORIES, KNOWN
from knowtune.studies.stats import Finding, at_epoch, completed_runs, fmt, mean_std

PAPER = {
    "table2": {"D_HighlyKnown": (40.5, 40.0), "D_MaybeKnown": (43.6, 43.2), "D_WeaklyKnown": (39.2, 35.4),
               "D_Unknown": (37.5, 25.8), "D_Natural": (43.5, 41.8)},
    "linear": {"beta0": 36.9, "beta_kn": 7.3, "beta_unk": -8.3, "r2": 0.86},
    "idk": {"all": (43.0, 38.8), "answered": (61.8, 61.8), "answered_share": (58.7, 55.6)},
}
SINGLE = {"D_HighlyKnown": "D_HighlyKnown", "D_MaybeKnown": "D_MaybeKnown", "D_WeaklyKnown": "D_WeaklyKnown",
          "D_Unknown": "D_100", "D_Natural": "D_Natural"}


def _over_seeds(runs: dict, name: str, fn) -> dict:
    return mean_std([fn(by[name]) for by in runs.values() if name in by])


def accuracy_vs_unknown(runs: dict, part: str = "test") -> dict:
    """Fig. 3: accuracy against % Unknown for D and D_Known, at early stop and convergence."""
    out: dict = {}
    for which in ("early_stop", "convergence"):
        for x in UNKNOWN_SHARES:
            out.setdefault("D", {}).setdefault(which, {})[x] = _over_seeds(runs, f"D_{x}", lambda r, w=which: at_epoch(r, w)[f"{part}_accuracy"])
            name = f"D_Known_{x}" if 0 < x < 100 else f"D_{x}" if x == 0 else None
            if name:
                out.setdefault("D_Known", {}).setdefault(which, {})[x] = _over_seeds(runs, name, lambda r, w=which: at_epoch(r, w)[f"{part}_accuracy"])
    return out


def table2(runs: dict) -> dict:
    """Accuracy overall and per category at early stop and convergence for each single-category set."""
    out = {}
    for label, name in SINGLE.items():
        row = {}
        for which in ("early_stop", "convergence"):
            row[which] = {"all": _over_seeds(runs, name, lambda r, w=which: at_epoch(r, w)["test_accuracy"])}
            for cat in CATEGORIES:
                row[which][cat] = _over_seeds(runs, name, lambda r, w=which, c=cat: at_epoch(r, w)["test"]["accuracy_by_category"].get(c))
        out[label] = row
    return out


def linear_models(runs: dict, part: str) -> dict:
    """The linear model over every (seed, run, epoch) point, pooled and per seed (for ± std)."""
    def points(by_name: dict) -> list:
        return [(*fitted_fractions(m, r["size"]), m[f"{part}_accuracy"] * 100)
                for name, r in by_name.items() if name != "D_IDK" for m in r["metrics"] if m.get(f"{part}_accuracy") is not None]

    pooled = fit_linear_model([p for by in runs.values() for p in points(by)])
    per_seed = [fit_linear_model(points(by)) for by in runs.values()]
    return {"pooled": pooled, "per_seed": {k: mean_std([m[k] for m in per_seed]) for k in ("beta0", "beta_kn", "beta_unk", "r2")}}


def fit_curves(runs: dict, name: str) -> dict:
    """Training fit per category per epoch (mean ± std over seeds) of one variant: Fig. 1."""
    curves: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for by in runs.values():
        if name not in by:
            continue
        for m in by[name]["metrics"]:
            for g, f in m["fit_by_group"].items():
                curves[g][m["epoch"]].append(f)
            n_known = sum(m["group_sizes"].get(g, 0) for g in KNOWN)
            if n_known:
                curves["Known"][m["epoch"]].append(sum(m["fitted_by_group"].get(g, 0) for g in KNOWN) / n_known)
    return {g: {e: mean_std(v) for e, v in sorted(by_e.items())} for g, by_e in curves.items()}


def idk_table(runs: dict, base: str) -> dict:
    """D vs D_IDK: accuracy on all questions, on answered questions, and the answered share."""
    out = {}
    for name in (base, "D_IDK"):
        out[name] = {}
        for which in ("early_stop", "convergence"):
            out[name][which] = {
                key: _over_seeds(runs, name, lambda r, w=which, k=key: at_epoch(r, w)["test"][k])
                for key in ("accuracy", "answered_accuracy", "answered_share", "hallucination_rate")
            }
    return out


def _finding(claim: str, paper: str, this_run: str, reproduced: bool | None) -> dict:
    return Finding(claim, paper, this_run, reproduced).to_dict()


def findings(runs: dict, agg: dict) -> list[dict]:
    """One line per paper finding: the claim, the paper's numbers, this run's, and whether it holds."""
    out = []
    gaps, to_fit = [], {"Known": [], "Unknown": []}
    for by in runs.values():
        if "D_50" in by:
            ms = by["D_50"]["metrics"]
            per_epoch = [m["fit_by_group"].get("Unknown", 0.0) for m in ms]
            known = [sum(m["fitted_by_group"].get(g, 0) for g in KNOWN) / max(1, sum(m["group_sizes"].get(g, 0) for g in KNOWN)) for m in ms]
            gaps.append(float(np.mean([k - u for k, u in zip(known, per_epoch)])))
            rows = [{"epoch": m["epoch"], "fit_by_group": {"Known": k, "Unknown": u}} for m, k, u in zip(ms, known, per_epoch)]
            for g, e in epochs_to_fit(rows, ["Known", "Unknown"]).items():
                to_fit[g].append(e)
    gap = mean_std(gaps)
    ok = None if gap["mean"] is None else gap["mean"] > 0
    out.append(_finding("Unknown examples are fitted more slowly than Known ones (D with 50 % Unknown)",
                        "Fig. 1: most Known fitted by EARLY_STOP, Unknown fitted substantially later",
                        f"Known − Unknown fit, mean over epochs: {fmt(gap)} points; epochs to 50 % fit: "
                        f"Known {to_fit['Known']}, Unknown {to_fit['Unknown']} (None = never)", ok))

    conv = agg["accuracy_vs_unknown"]["D"]["convergence"]
    es = agg["accuracy_vs_unknown"]["D"]["early_stop"]
    xs = [x for x in UNKNOWN_SHARES if conv[x]["mean"] is not None]
    slope = float(np.polyfit(xs, [conv[x]["mean"] * 100 for x in xs], 1)[0]) * 100 if len(xs) >= 2 else None
    out.append(_finding("Test accuracy at convergence falls as the share of Unknown grows",
                        "Fig. 3: monotone decrease; Table 2: D_Unknown 25.8 vs D_HighlyKnown 40.0 at convergence",
                        f"convergence accuracy {', '.join(f'{x}%: {fmt(conv[x])}' for x in xs)}; "
                        f"slope {slope:+.1f} points per 100 % Unknown" if slope is not None else "n/a",
                        None if slope is None or None in (conv[0]["mean"], conv[100]["mean"])
                        else slope < 0 and conv[100]["mean"] < conv[0]["mean"]))

    gap_es = {x: (es[x]["mean"] - conv[x]["mean"]) * 100 for x in (0, 100) if es[x]["mean"] is not None and conv[x]["mean"] is not None}
    out.append(_finding("Early stopping limits the harm of Unknown examples (the early-stop → convergence drop grows with Unknown)",
                        "Table 2: D_Unknown 37.5 → 25.8 (−11.7) vs D_HighlyKnown 40.5 → 40.0 (−0.5)",
                        "; ".join(f"{x}% Unknown: {fmt(es[x])} → {fmt(conv[x])}" for x in (0, 100)),
                        (gap_es[100] > gap_es[0]) if len(gap_es) == 2 else None))

    lm = agg["linear_model"]["test"]["pooled"]
    ok = None if lm["beta_kn"] is None else lm["beta_unk"] < 0 < lm["beta_kn"]
    seed_lm = agg["linear_model"]["test"]["per_seed"]
    out.append(_finding("Accuracy rises with fitted Known and falls with fitted Unknown examples: β_unk < 0 < β_kn",
                        "β0 36.9, β_kn 7.3, β_unk −8.3, R² 0.86 (in-distribution)",
                        (f"pooled β0 {lm['beta0']:.1f}, β_kn {lm['beta_kn']:.1f}, β_unk {lm['beta_unk']:.1f}, R² {lm['r2']:.2f} "
                         f"({lm['n_points']} points); per seed β_kn {fmt(seed_lm['beta_kn'], 1)}, β_unk {fmt(seed_lm['beta_unk'], 1)}")
                        if lm["beta_kn"] is not None else "n/a", ok))

    known = agg["accuracy_vs_unknown"]["D_Known"]["convergence"]
    diffs = {x: known[x]["mean"] - conv[x]["mean"] for x in (25, 50, 75)
             if known[x]["mean"] is not None and conv[x]["mean"] is not None}
    out.append(_finding("Filtering out Unknown examples (D_Known) avoids the loss at convergence",
                        "Fig. 3: D_Known stays flat while D falls with more Unknown",
                        "D_Known − D at convergence: " + ", ".join(f"{x}%: {d * 100:+.1f}" for x, d in diffs.items()),
                        None if not diffs else float(np.mean(list(diffs.values()))) > 0))

    idk = agg["idk"]
    base = next(n for n in idk if n != "D_IDK")
    a, b = idk[base]["early_stop"]["accuracy"], idk["D_IDK"]["early_stop"]["answered_accuracy"]
    share = idk["D_IDK"]["early_stop"]["answered_share"]
    out.append(_finding("Relabelling Unknown as “I don't know” raises accuracy on the questions the model answers",
                        "50 % Unknown, early stop: 43.0 on all (D) vs 61.8 on the 58.7 % answered (D_IDK)",
                        f"{base}: {fmt(a)} on all; D_IDK: {fmt(b)} on the {fmt(share)} % answered",
                        None if a["mean"] is None or b["mean"] is None else b["mean"] > a["mean"]))

    t2 = agg["table2"]
    mk, hk = t2["D_MaybeKnown"], t2["D_HighlyKnown"]
    vals = [(w, mk[w]["all"]["mean"], hk[w]["all"]["mean"]) for w in ("early_stop", "convergence")]
    out.append(_finding("Fine-tuning on MaybeKnown beats fine-tuning on HighlyKnown examples only",
                        "Table 2: D_MaybeKnown 43.6 / 43.2 vs D_HighlyKnown 40.5 / 40.0 (early stop / convergence)",
                        "; ".join(f"{w}: D_MaybeKnown {fmt(mk[w]['all'])} vs D_HighlyKnown {fmt(hk[w]['all'])}" for w in ("early_stop", "convergence")),
                        None if any(m is None or h is None for _, m, h in vals) else all(m > h for _, m, h in vals)))
    return out


def analyse(cfg, probed: dict[str, list[dict]], runs: dict) -> dict:
    """Every aggregate the report shows, plus the findings, as one JSON-ready dict."""
    done = completed_runs(runs)
    agg = {
        "accuracy_vs_unknown": accuracy_vs_unknown(done, "test"),
        "accuracy_vs_unknown_ood": accuracy_vs_unknown(done, "ood") if "ood" in probed else None,
        "table2": table2(done),
        "linear_model": {p: linear_models(done, p) for p in ("test", "ood") if p in probed},
        "fit_curves": {n: fit_curves(done, n) for n in ("D_50", "D_Natural")},
        "idk": idk_table(done, f"D_{cfg.idk_unknown_percent}"),
    }
    return {
        "config": cfg.model_dump(),
        "sizes": {p: len(r) for p, r in probed.items()},
        "aggregate": agg,
        "findings": findings(done, agg),
        "diverged": {f"seed{s}/{n}": r["diverged"] for s, by in runs.items() for n, r in by.items() if "diverged" in r},
        "runs": {f"seed{s}": {n: {k: v for k, v in r.items()} for n, r in by.items()} for s, by in runs.items()},
    }
