"""The new-knowledge study's HTML report: category distributions, fit curves (Fig. 1), accuracy vs % Unknown
(Fig. 3), the Table 2 analogue, the linear model, the IDK table and the findings."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from knowtune.probe.records import CATEGORIES  # noqa: E402
from knowtune.report.html import Page  # noqa: E402
from knowtune.studies.new_knowledge.findings import PAPER  # noqa: E402
from knowtune.studies.stats import fmt  # noqa: E402
from knowtune.studies.verdicts import findings_section  # noqa: E402

COLORS = {"HighlyKnown": "#1b7837", "MaybeKnown": "#7fbf7b", "WeaklyKnown": "#f1a340", "Unknown": "#b2182b", "Known": "#2166ac"}


def _distribution_plot(summary: dict, key: str, title: str):
    rows = summary[key]
    names = list(rows)
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(names) + 1.2))
    left = [0.0] * len(names)
    for cat in CATEGORIES:
        shares = [rows[n][cat] / max(1, sum(rows[n][c] for c in CATEGORIES)) for n in names]
        ax.barh(names, shares, left=left, color=COLORS[cat], label=cat)
        left = [a + b for a, b in zip(left, shares)]
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of questions")
    ax.set_title(title)
    ax.legend(ncol=4, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.25))
    return fig


def _fit_plot(curves: dict, title: str):
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for group, by_epoch in curves.items():
        epochs = [int(e) for e in by_epoch]
        mean = [v["mean"] for v in by_epoch.values()]
        std = [v["std"] for v in by_epoch.values()]
        ax.plot(epochs, mean, marker="o", color=COLORS.get(group), label=group, lw=2.5 if group in ("Known", "Unknown") else 1)
        ax.fill_between(epochs, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)], color=COLORS.get(group), alpha=0.15)
    ax.set_xlabel("epoch")
    ax.set_ylabel("training fit (share reproduced)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return fig


def _accuracy_plot(acc: dict, title: str):
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, which in zip(axes, ("early_stop", "convergence")):
        for name, style in (("D", "-o"), ("D_Known", "--s")):
            pts = [(int(x), v) for x, v in acc[name][which].items() if v["mean"] is not None]
            if pts:
                xs = [x for x, _ in pts]
                ax.errorbar(xs, [v["mean"] * 100 for _, v in pts], yerr=[v["std"] * 100 for _, v in pts], fmt=style, capsize=3, label=name)
        ax.set_title(f"{title} — {which.replace('_', ' ').upper()}")
        ax.set_xlabel("% Unknown in D")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("test accuracy (%)")
    return fig


def write_report(results: dict, path: str | Path, probe_summary: dict | None = None) -> None:
    """Render results.json of a new-knowledge study as a self-contained HTML page."""
    cfg, agg = results["config"], results["aggregate"]
    page = Page("knowtune — does fine-tuning on new knowledge encourage hallucinations?")
    page.text(f"Model {cfg['model']} · data {cfg['data']} · |D| = {cfg['size']} · seeds {cfg['seeds']} · "
              f"{cfg['train']['method']} fine-tuning, {cfg['train']['epochs']} epochs, lr {cfg['train']['learning_rate']} · "
              f"probe {cfg['probe']['n_exemplar_sets']} × (1 + {cfg['probe']['n_samples']}) · question counts {results['sizes']}. "
              "Figures are mean ± std over seeds; accuracies in %.")

    page.heading("Findings: does this run reproduce the paper?")
    findings_section(page, results["findings"], "paper (PaLM 2, EntityQuestions)")
    page.text("Verdicts from 95 % intervals of a bootstrap that resamples seeds, then test questions (paired across "
              f"training sets; {results['bootstrap']['replicates']} replicates, seed {results['bootstrap']['seed']}); "
              "± is the smallest effect this run could tell from zero.")
    if results.get("diverged"):
        page.text("Runs that diverged (NaN loss) and are left out: " + "; ".join(f"{k}: {v}" for k, v in results["diverged"].items()))

    if probe_summary:
        page.heading("What the model knows before fine-tuning (SliCK categories)")
        for part, summary in probe_summary.items():
            page.figure(_distribution_plot(summary, "per_relation", f"{part}: categories per relation"),
                        f"{part}: chance rates " + ", ".join(f"{r} {v['chance_rate']}" for r, v in summary["per_relation"].items()))
            if summary.get("per_popularity"):
                page.figure(_distribution_plot(summary, "per_popularity", f"{part}: categories by popularity (within relation)"))

    page.heading("Training fit per category (paper Fig. 1)")
    for name, curves in agg["fit_curves"].items():
        if curves:
            page.figure(_fit_plot(curves, f"fit of {name} training examples"), "share of training examples whose greedy answer reproduces the label")

    page.heading("Test accuracy vs % Unknown (paper Fig. 3)")
    page.figure(_accuracy_plot(agg["accuracy_vs_unknown"], "in-distribution"))
    if agg.get("accuracy_vs_unknown_ood"):
        page.figure(_accuracy_plot(agg["accuracy_vs_unknown_ood"], "OOD relations"))

    page.heading("Accuracy per category for single-category training sets (paper Table 2)")
    header = ["training set", "stage", "all", *CATEGORIES, "paper all"]
    rows = []
    for name, row in agg["table2"].items():
        for i, which in enumerate(("early_stop", "convergence")):
            paper = PAPER["table2"][name][i]
            rows.append([name, which.replace("_", " "), fmt(row[which]["all"]), *[fmt(row[which][c]) for c in CATEGORIES], paper])
    page.table(header, rows)

    page.heading("Linear model: Acc = β0 + β_kn·N_kn/|D| + β_unk·N_unk/|D|")
    rows = []
    for part, lm in agg["linear_model"].items():
        p = lm["pooled"]
        if p["beta0"] is not None:
            rows.append([part, f"{p['beta0']:.1f}", f"{p['beta_kn']:.1f}", f"{p['beta_unk']:.1f}", "n/a" if p["r2"] is None else f"{p['r2']:.2f}", p["n_points"]])
    rows.append(["paper (in-distribution)", *[PAPER["linear"][k] for k in ("beta0", "beta_kn", "beta_unk", "r2")], ""])
    page.table(["test set", "β0", "β_kn", "β_unk", "R²", "points"], rows)

    page.heading("Abstaining: D vs D_IDK (Unknown labelled “I don't know”)")
    rows = []
    for name, by in agg["idk"].items():
        for which, m in by.items():
            rows.append([name, which.replace("_", " "), fmt(m["accuracy"]), fmt(m["answered_accuracy"]),
                         fmt(m["answered_share"]), fmt(m["hallucination_rate"])])
    page.table(["training set", "stage", "accuracy (all)", "accuracy (answered)", "answered %", "hallucination %"], rows)
    page.text("Paper, 50 % Unknown: D 43.0 → 38.8 on all questions; D_IDK 61.8 → 61.8 on the 58.7 % → 55.6 % answered.")
    page.write(path)
