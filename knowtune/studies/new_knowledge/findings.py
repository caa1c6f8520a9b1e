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
from knowtune.studies.stats import (
    BOOTSTRAP,
    Interval,
    at_epoch,
    bootstrap,
    completed_runs,
    difference,
    fmt,
    mean_over_seeds,
    mean_std,
    slope,
)
from knowtune.studies.verdicts import (
    SCHEMA_NOTE,
    SCHEMA_VERSION,
    Finding,
    check,
    combine,
    fmt_check,
)

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


def _stage_epoch(run: dict, stage: str | int) -> int:
    return stage if isinstance(stage, int) else run[f"{stage}_epoch"]


def columns(runs: dict, spec: list[tuple[str, str | int, str]], part: str = "test") -> list[np.ndarray]:
    """Per seed that has every run of `spec` with stored per-question outputs, a (questions × columns)
    array: column j holds, for run spec[j][0] at stage (or epoch) spec[j][1], field spec[j][2] of each
    test question ('correct' or 'answered'), rows in one question order shared by the runs and seeds."""
    out, order = [], None
    for by in runs.values() if spec else []:
        rows = []
        for name, stage, key in spec:
            run = by.get(name)
            answers = run and run.get("outcomes", {}).get(_stage_epoch(run, stage), {}).get(part)
            if not answers:
                break
            rows.append((answers, key))
        else:
            order = order or sorted(set.intersection(*(set(a) for a, _ in rows)))
            out.append(np.array([[float(not a[q]["abstained"]) if key == "answered" else float(a[q][key])
                                  for a, key in rows] for q in order]).reshape(len(order), len(spec)))
    return out


def _points(by_name: dict, part: str) -> list[tuple[str, int, float, float]]:
    """(run, epoch, N_kn/|D|, N_unk/|D|) of every epoch of every run but D_IDK: the linear model's covariates."""
    return [(name, m["epoch"], *fitted_fractions(m, r["size"])) for name, r in by_name.items() if name != "D_IDK"
            for m in r["metrics"] if m.get(f"{part}_accuracy") is not None]


def linear_model_intervals(runs: dict) -> dict[str, Interval | None]:
    """β_kn and β_unk of the pooled linear model, with intervals: the test questions are resampled (the
    accuracies), the fitted fractions of each (run, epoch) stay as they were (the regressors)."""
    seeds = [by for by in runs.values() if all(r.get("outcomes") for n, r in by.items() if n != "D_IDK")]
    covariates = [_points(by, "test") for by in seeds]
    data = [columns({0: by}, [(n, e, "correct") for n, e, _, _ in pts]) for by, pts in zip(seeds, covariates)]
    if not all(data) or len({len(d[0]) for d in data}) > 1:
        return {"beta_kn": None, "beta_unk": None}
    x = [np.array([[1.0, kn, unk] for _, _, kn, unk in pts]) for pts in covariates]

    def beta(k: int):
        def statistic(ids: np.ndarray, means: list[np.ndarray]) -> float:
            design = np.vstack([x[i] for i in ids])
            if len(design) < 3 or np.linalg.matrix_rank(design) < 3:
                return float("nan")
            return float(np.linalg.lstsq(design, np.concatenate(means) * 100, rcond=None)[0][k])
        return statistic

    return {name: bootstrap([d[0] for d in data], beta(k), shared=True) for name, k in (("beta_kn", 1), ("beta_unk", 2))}


def _fit_gap_data(runs: dict, name: str = "D_50") -> list[np.ndarray]:
    """Per seed, one row per training example of `name`: per epoch [Known·fitted, Known, Unknown·fitted, Unknown]."""
    out = []
    for by in runs.values():
        run = by.get(name)
        fits = run and [run.get("outcomes", {}).get(m["epoch"], {}).get("fit") for m in run["metrics"]]
        if not fits or not all(fits):
            continue
        ids = sorted(fits[0])
        rows = []
        for i in ids:
            row = []
            for fit in fits:
                known, unknown, ok = fit[i]["group"] in KNOWN, fit[i]["group"] == "Unknown", float(fit[i]["fitted"])
                row += [known * ok, float(known), unknown * ok, float(unknown)]
            rows.append(row)
        out.append(np.array(rows))
    return out


def _fit_gap(_ids, means: list[np.ndarray]) -> float:
    """Known − Unknown fit in points, mean over epochs, then over seeds."""
    # A replicate that drew no Known (or no Unknown) example has no gap: 0/0 gives NaN, which the
    # bootstrap drops (stats.bootstrap), so the division's warning says nothing here.
    with np.errstate(invalid="ignore", divide="ignore"):
        gaps = [np.mean([(m[j] / m[j + 1] - m[j + 2] / m[j + 3]) * 100 for j in range(0, len(m), 4)]) for m in means]
    return float(np.mean(gaps))


def findings(runs: dict, agg: dict) -> list[dict]:
    """One line per paper finding: the claim, the paper's numbers, this run's, and the verdict of its 95 % interval."""
    out = []
    to_fit = {"Known": [], "Unknown": []}
    for by in runs.values():
        if "D_50" in by:
            ms = by["D_50"]["metrics"]
            known = [sum(m["fitted_by_group"].get(g, 0) for g in KNOWN) / max(1, sum(m["group_sizes"].get(g, 0) for g in KNOWN)) for m in ms]
            rows = [{"epoch": m["epoch"], "fit_by_group": {"Known": k, "Unknown": m["fit_by_group"].get("Unknown", 0.0)}}
                    for m, k in zip(ms, known)]
            for g, e in epochs_to_fit(rows, ["Known", "Unknown"]).items():
                to_fit[g].append(e)
    # the training examples differ per seed: each drawn seed gets its own draw of examples
    gap = check(bootstrap(_fit_gap_data(runs), _fit_gap, shared=False))
    out.append(Finding("Unknown examples are fitted more slowly than Known ones (D with 50 % Unknown)",
                       "Fig. 1: most Known fitted by EARLY_STOP, Unknown fitted substantially later",
                       f"Known − Unknown fit, mean over epochs: {fmt_check(gap)} points; epochs to 50 % fit: "
                       f"Known {to_fit['Known']}, Unknown {to_fit['Unknown']} (None = never)", gap).to_dict())

    conv = agg["accuracy_vs_unknown"]["D"]["convergence"]
    es = agg["accuracy_vs_unknown"]["D"]["early_stop"]
    xs = [x for x in UNKNOWN_SHARES if conv[x]["mean"] is not None]
    data = columns(runs, [(f"D_{x}", "convergence", "correct") for x in xs])
    slope_check = check(bootstrap(data, slope([x / 100 for x in xs]), shared=True) if len(xs) >= 2 else None, above=False,
                        units="points per 100 % Unknown")
    out.append(Finding("Test accuracy at convergence falls as the share of Unknown grows",
                       "Fig. 3: monotone decrease; Table 2: D_Unknown 25.8 vs D_HighlyKnown 40.0 at convergence",
                       f"convergence accuracy {', '.join(f'{x}%: {fmt(conv[x])}' for x in xs)}; "
                       f"slope {slope_check.estimate:+.1f} points per 100 % Unknown" if slope_check.estimate is not None else "n/a",
                       slope_check).to_dict())

    spec = [("D_100", "early_stop", "correct"), ("D_100", "convergence", "correct"), ("D_0", "early_stop", "correct"),
            ("D_0", "convergence", "correct")]
    drop = check(bootstrap(columns(runs, spec), mean_over_seeds(lambda m: ((m[0] - m[1]) - (m[2] - m[3])) * 100), shared=True))
    out.append(Finding("Early stopping limits the harm of Unknown examples (the early-stop → convergence drop grows with Unknown)",
                       "Table 2: D_Unknown 37.5 → 25.8 (−11.7) vs D_HighlyKnown 40.5 → 40.0 (−0.5)",
                       "; ".join(f"{x}% Unknown: {fmt(es[x])} → {fmt(conv[x])}" for x in (0, 100))
                       + f"; drop at 100 % − drop at 0 %: {fmt_check(drop)}", drop).to_dict())

    lm = agg["linear_model"]["test"]["pooled"]
    betas = linear_model_intervals(runs)
    both = combine([check(betas["beta_kn"], label="β_kn"), check(betas["beta_unk"], above=False, label="β_unk")])
    seed_lm = agg["linear_model"]["test"]["per_seed"]
    kn, unk = both.parts
    # R² is undefined when every point has the same accuracy (nothing to explain), which a tiny model can give
    r2 = "n/a (accuracy constant)" if lm["r2"] is None else f"{lm['r2']:.2f}"
    out.append(Finding("Accuracy rises with fitted Known and falls with fitted Unknown examples: β_unk < 0 < β_kn",
                       "β0 36.9, β_kn 7.3, β_unk −8.3, R² 0.86 (in-distribution)",
                       (f"pooled β0 {lm['beta0']:.1f}, β_kn {lm['beta_kn']:.1f}, β_unk {lm['beta_unk']:.1f}, R² {r2} "
                        f"({lm['n_points']} points); per seed β_kn {fmt(seed_lm['beta_kn'], 1)}, β_unk {fmt(seed_lm['beta_unk'], 1)}; "
                        f"95 % intervals β_kn {fmt_check(kn)}, β_unk {fmt_check(unk)}")
                       if lm["beta_kn"] is not None else "n/a", both).to_dict())

    known = agg["accuracy_vs_unknown"]["D_Known"]["convergence"]
    diffs = {x: known[x]["mean"] - conv[x]["mean"] for x in (25, 50, 75)
             if known[x]["mean"] is not None and conv[x]["mean"] is not None}
    spec = [(f"{n}_{x}", "convergence", "correct") for x in diffs for n in ("D_Known", "D")]
    gain = check(bootstrap(columns(runs, spec), mean_over_seeds(lambda m: float(np.mean(m[0::2] - m[1::2])) * 100), shared=True)
                 if diffs else None)
    out.append(Finding("Filtering out Unknown examples (D_Known) avoids the loss at convergence",
                       "Fig. 3: D_Known stays flat while D falls with more Unknown",
                       "D_Known − D at convergence: " + ", ".join(f"{x}%: {d * 100:+.1f}" for x, d in diffs.items())
                       + (f"; mean {fmt_check(gain)}" if diffs else ""), gain).to_dict())

    idk = agg["idk"]
    base = next(n for n in idk if n != "D_IDK")
    a, b = idk[base]["early_stop"]["accuracy"], idk["D_IDK"]["early_stop"]["answered_accuracy"]
    share = idk["D_IDK"]["early_stop"]["answered_share"]
    spec = [("D_IDK", "early_stop", "correct"), ("D_IDK", "early_stop", "answered"), (base, "early_stop", "correct")]
    abstain = check(bootstrap(columns(runs, spec), mean_over_seeds(lambda m: (m[0] / m[1] - m[2]) * 100), shared=True))
    out.append(Finding("Relabelling Unknown as “I don't know” raises accuracy on the questions the model answers",
                       "50 % Unknown, early stop: 43.0 on all (D) vs 61.8 on the 58.7 % answered (D_IDK)",
                       f"{base}: {fmt(a)} on all; D_IDK: {fmt(b)} on the {fmt(share)} % answered", abstain).to_dict())

    t2 = agg["table2"]
    mk, hk = t2["D_MaybeKnown"], t2["D_HighlyKnown"]
    stages = [check(bootstrap(columns(runs, [("D_MaybeKnown", w, "correct"), ("D_HighlyKnown", w, "correct")]), difference(),
                              shared=True), label=w) for w in ("early_stop", "convergence")]
    out.append(Finding("Fine-tuning on MaybeKnown beats fine-tuning on HighlyKnown examples only",
                       "Table 2: D_MaybeKnown 43.6 / 43.2 vs D_HighlyKnown 40.5 / 40.0 (early stop / convergence)",
                       "; ".join(f"{w}: D_MaybeKnown {fmt(mk[w]['all'])} vs D_HighlyKnown {fmt(hk[w]['all'])} "
                                 f"(difference {fmt_check(c)})" for w, c in zip(("early_stop", "convergence"), stages)),
                       combine(stages)).to_dict())
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
        "schema_version": SCHEMA_VERSION,
        "schema_note": SCHEMA_NOTE,
        "bootstrap": BOOTSTRAP,
        "config": cfg.model_dump(),
        "sizes": {p: len(r) for p, r in probed.items()},
        "aggregate": agg,
        "findings": findings(done, agg),
        "caveats": [f"{len(missing)} finished runs have no per-question outputs (trained before knowtune stored them): "
                    "findings that need them have no interval and are inconclusive; train into a new directory"]
        if (missing := [n for by in done.values() for n, r in by.items() if not r.get("outcomes")]) else [],
        "diverged": {f"seed{s}/{n}": r["diverged"] for s, by in runs.items() for n, r in by.items() if "diverged" in r},
        "runs": {f"seed{s}": {n: {k: v for k, v in r.items() if k != "outcomes"} for n, r in by.items()} for s, by in runs.items()},
    }
