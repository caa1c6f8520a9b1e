"""The F-Learning study's HTML report: the claims, the base model's knowledge of K_old, the
paper-style table (method × R/G/L × protocol, with λ), the λ choice on dev edits, R/G/L against λ,
and the forgetting step's own numbers."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from knowtune.probe.records import CATEGORIES  # noqa: E402
from knowtune.report.html import Page  # noqa: E402
from knowtune.studies.flearning.findings import METRICS, PAPER  # noqa: E402
from knowtune.studies.stats import fmt  # noqa: E402
from knowtune.studies.verdicts import findings_section  # noqa: E402
from knowtune.update.flearning_config import METHODS  # noqa: E402

COLORS = {"ft": "#555555", "lora": "#999999", "flearning-ft": "#b2182b", "flearning-lora": "#2166ac", "lora-ft": "#1b7837"}


def _lambda_plot(agg: dict, protocol: str, title: str):
    """R, G and L on the test edits against λ; baselines (no forgetting) as dashed lines."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), sharey=True)
    for ax, metric in zip(axes, METRICS, strict=True):
        for mid, by_lam in agg["curves"].items():
            pts = [(float(lam), s[protocol][metric]) for lam, s in by_lam.items()
                   if protocol in s and s[protocol][metric]["mean"] is not None]
            if pts:
                ax.errorbar([x for x, _ in pts], [v["mean"] * 100 for _, v in pts], yerr=[v["std"] * 100 for _, v in pts],
                            fmt="-o", capsize=3, color=COLORS[mid], label=METHODS[mid].label)
        for row in agg["table"]:
            stat = row["test"].get(protocol, {}).get(metric, {})
            if not METHODS[row["method"]].uses_lambda and stat.get("mean") is not None:
                ax.axhline(stat["mean"] * 100, ls="--", color=COLORS[row["method"]], label=f"{row['label']} (no forgetting)")
        ax.set_title(metric.capitalize())
        ax.set_xlabel("λ")
        lams = [float(x) for x in next(iter(agg["curves"].values()), {})]
        if lams and min(lams) > 0:  # sweeps span decades (0.1 … 3)
            ax.set_xscale("log")
            ax.set_xticks(lams, [f"{x:g}" for x in lams])
            ax.minorticks_off()
    axes[0].set_ylabel(f"test edits, {protocol} protocol (%)")
    axes[-1].legend(fontsize=7)
    fig.suptitle(title, y=1.04)
    return fig


def _knowledge_rows(agg: dict) -> list[list[str]]:
    names = {"old": "K_old (true answers)", "new": "K_new (edit targets)"}
    return [[names[w], fmt(k["exact_match"]), fmt(k["token_accuracy"])] for w, k in agg["knowledge"].items()]


def _main_table(page: Page, agg: dict, protocols: list[str]) -> None:
    header = ["method", "λ"] + [f"{m[0].upper()} ({p})" for p in protocols for m in METRICS]
    rows = []
    for row in agg["table"]:
        cells = [fmt(row["test"].get(p, {}).get(m, {})) for p in protocols for m in METRICS]
        rows.append([row["label"], "—" if row["lam"] is None else f"{row['lam']:g}", *cells])
    page.table(header, rows)


def _lr_section(page: Page, choice: dict, floor: float) -> None:
    page.heading("Choosing the learning rates on the dev edits (first seed, before any F-Learning run)", 3)
    rows = []
    for family, c in choice.items():
        for r in c["grid"]:
            dev = r.get("dev")
            cells = ["diverged"] * 3 if dev is None else ["n/a" if dev[m] is None else f"{dev[m] * 100:.1f}" for m in METRICS]
            fit = " → ".join(f"{f * 100:.0f}" for f in r.get("fit_k_new", []))
            rows.append([family, METHODS[c["baseline"]].label, f"{r['lr']:g}", *cells, fit, "yes" if r["lr"] == c["chosen"] else ""])
    page.table(["family", "baseline", "learning rate", "R (token)", "G (token)", "L (token)", "fit on K_new per epoch (%)",
                "chosen"], rows)
    page.text(f"Rule, fixed before the sweep: among the rates whose dev Locality reaches {floor * 100:g} %, the best mean of "
              "dev Reliability and Generality; if none reaches it, the rate with the highest Locality; ties go to the "
              "smaller rate. Only the plain baselines are trained here, so the choice cannot favour F-Learning.")


def _set_section(page: Page, key: str, agg: dict, cfg: dict) -> None:
    page.heading(f"Edit set: {key} ({agg['spec']})")
    page.text(f"Edits per seed: {agg['sizes']['dev']['mean']:g} dev (to choose λ) + {agg['sizes']['test']['mean']:g} test, "
              "all learned together as one fine-tuning set. Scores in %, test edits, mean ± std over seeds.")
    page.heading("What the base model knows before forgetting", 3)
    page.table(["facts, on the edit prompts", "exact match (greedy, any alias)", "token accuracy (teacher-forced)"],
               _knowledge_rows(agg))
    if agg.get("probe_summary"):
        ps = agg["probe_summary"]
        page.text(f"The edited facts were drawn from the facts a SliCK probe ({cfg['probe']['n_exemplar_sets']} exemplar sets, "
                  f"{cfg['probe']['k_shot']}-shot) found {' or '.join(cfg['known'])}; with {cfg['context_shots']} exemplar(s) "
                  "of the same relation before every prompt.")
        page.table(["relation", *CATEGORIES, "chance"],
                   [[r, *[v[c] for c in CATEGORIES], v.get("chance_rate")] for r, v in ps["per_relation"].items()])
    if agg.get("lr_choice"):
        _lr_section(page, agg["lr_choice"], cfg["locality_floor"])
    page.heading("Paper-style table (test edits, λ chosen on dev edits)", 3)
    _main_table(page, agg, cfg["protocols"])
    page.heading("Choosing λ on the dev edits", 3)
    crit = "mean of R and G" if cfg["select"] == "rg" else "mean of R, G and L"
    rows = [[METHODS[mid].label, *[fmt(c) for c in sel["criterion"].values()], "—" if sel["chosen"] is None else f"{sel['chosen']:g}"]
            for mid, sel in agg["lambda_selection"].items()]
    if rows:
        page.table(["method", *[f"λ = {lam:g}" for lam in cfg["lambdas"]], "chosen"], rows)
        page.text(f"Criterion: {crit} on the dev edits, token protocol, averaged over seeds; ties go to the smaller λ.")
    for protocol in cfg["protocols"]:
        if agg["curves"]:
            page.figure(_lambda_plot(agg, protocol, f"{key}: R / G / L against λ ({protocol} protocol)"))
    page.heading("The forgetting step and training", 3)
    rows = []
    for seed, fam in agg["forget"].items():
        for family, info in fam.items():
            rows.append([f"seed {seed}", family, f"{info['norm']:.3f}", info["tensors"],
                         " → ".join(f"{f * 100:.0f}" for f in info["fit_k_old"])])
    if rows:
        page.table(["seed", "family", "‖Δ_old‖ (L2)", "tensors", "fit on K_old per epoch (%)"], rows)
    rows = [[seed, name, " → ".join(f"{f * 100:.0f}" for f in run.get("fit_k_new", [])), run.get("seconds", "")]
            for seed, by in agg["runs"].items() for name, run in by.items() if "diverged" not in run]
    page.table(["seed", "run", "fit on K_new per epoch (%)", "seconds (train + score)"], rows)
    if agg["diverged"]:
        page.text("Runs that diverged (NaN loss) and are left out: " + "; ".join(f"{k}: {v}" for k, v in agg["diverged"].items()))


def write_report(results: dict, path: str | Path) -> None:
    """Render results.json of an F-Learning study as a self-contained HTML page."""
    cfg = results["config"]
    page = Page("knowtune — F-Learning: forgetting before learning (Ni et al. 2024)")
    full, lora = cfg["full"], cfg["lora"]
    rates = {k: agg["learning_rates"] for k, agg in results["sets"].items()}
    lr = {f: ", ".join(sorted({f"{r[f]:g}" for r in rates.values()})) for f in ("full", "lora")}
    chosen = " (chosen on dev edits)" if cfg.get("lr_grid") else ""
    page.text(f"Model {cfg['model']} · edit sets {', '.join(results['sets'])} · seeds {cfg['seeds']} · λ sweep {cfg['lambdas']} · "
              f"full fine-tuning lr {lr['full']}{chosen}, {full['epochs']} epochs, batch {full['batch_size']} · LoRA r {lora['lora_r']}, "
              f"α {lora['lora_alpha']}, lr {lr['lora']}{chosen}, {lora['epochs']} epochs · forgetting and learning share each "
              f"family's settings. Protocols, never averaged together: token = EasyEdit's teacher-forced token accuracy "
              "(Locality against the pre-edit argmax), exact = greedy exact match (Locality: answer unchanged).")
    page.heading("Claims: does this run reproduce the paper?")
    protocols = cfg["protocols"]
    findings_section(page, results["findings"], f"paper ({PAPER['setting']})", name=lambda f: f"{f['set']}: {f['claim']}",
                     note=lambda f: "" if len(protocols) == 1 else " (token; " + ", ".join(
                         f"{p}: {f['verdict_by_protocol'][p]}" for p in protocols if p != "token") + ")")
    page.text("Verdict, estimate and interval of the token protocol; the other protocol's verdict is beside it. Differences "
              "are paired by edit and resampled by a bootstrap over seeds, then test edits "
              f"({results['bootstrap']['replicates']} replicates, seed {results['bootstrap']['seed']}).")
    for key, agg in results["sets"].items():
        _set_section(page, key, agg, cfg)
    page.write(path)
