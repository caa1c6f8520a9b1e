"""The self-aligning study's HTML report: caveats, findings against the paper, the paper-style table
(set × HOMO / ID / OOD, accuracy and change from the base model), knowledge consistency, the base
model against chance, the sets' labels, and accuracy per epoch."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from knowtune.report.html import Page  # noqa: E402
from knowtune.studies.self_align.findings import PAPER_GAPS, SPLITS, set_names  # noqa: E402
from knowtune.studies.stats import fmt, mean_std  # noqa: E402
from knowtune.studies.verdicts import findings_section  # noqa: E402


def _cell(stat: dict) -> str:
    """'accuracy (change)' in percent, with ± std over seeds when there are several."""
    acc, change = stat["accuracy"], stat["change"]
    if acc["mean"] is None:
        return "n/a"
    return f"{fmt(acc)} ({change['mean'] * 100:+.1f})"


def _accuracy_rows(results: dict, stage: str) -> list[list[str]]:
    base = results["base"]
    rows = [["base model", *[f"{base[s]['accuracy'] * 100:.1f}" for s in SPLITS]]]
    rows += [[name, *[_cell(by[s]) for s in SPLITS]] for name, by in results["table"][stage].items()]
    for name, gaps in PAPER_GAPS.items():
        rows.append([f"paper: {name} − incompatible", *[f"+{gaps[s]:.2f}" for s in SPLITS]])
    return rows


def _epoch_plot(runs: dict, base: dict):
    """Accuracy on each test split after every epoch, mean over seeds, one line per set."""
    fig, axes = plt.subplots(1, len(SPLITS), figsize=(12, 3.4), sharey=True)
    for ax, split in zip(axes, SPLITS, strict=True):
        for name in set_names(runs):
            by_epoch: dict[int, list[float]] = defaultdict(list)
            for by in runs.values():
                for m in by.get(name, {}).get("metrics", []):
                    if "eval" in m:
                        by_epoch[m["epoch"]].append(m["eval"][split]["accuracy"] * 100)
            if by_epoch:
                epochs = sorted(by_epoch)
                ax.plot(epochs, [sum(by_epoch[e]) / len(by_epoch[e]) for e in epochs], marker="o", label=name)
        ax.axhline(base[split]["accuracy"] * 100, color="black", ls="--", lw=1, label="base model")
        ax.axhline(25, color="grey", ls=":", lw=1, label="chance")
        ax.set_title(split.upper())
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_ylabel("accuracy (%)")
    axes[-1].legend(fontsize=8)
    return fig


def _fit_rows(runs: dict) -> list[list[str]]:
    """Training fit (share of training labels the model reproduces) and loss per set at each epoch."""
    rows = []
    for name in set_names(runs):
        fit: dict[int, list[float]] = defaultdict(list)
        loss: dict[int, list[float]] = defaultdict(list)
        for by in runs.values():
            for m in by.get(name, {}).get("metrics", []):
                fit[m["epoch"]].append(m["fit"])
                if m.get("train_loss") is not None:
                    loss[m["epoch"]].append(m["train_loss"])
        rows.append([name, " · ".join(f"{e}: {fmt(mean_std(fit[e]))} / {fmt(mean_std(loss[e]), 1.0, 3)}" for e in sorted(fit))])
    return rows


def write_report(results: dict, path: str | Path) -> None:
    """Render results.json of a self-aligning study as a self-contained HTML page."""
    cfg, base, train = results["config"], results["base"], results["config"]["train"]
    protocol = results["protocol"]
    page = Page(f"knowtune — learning or self-aligning? Knowledge consistency of instruction tuning ({protocol} scoring)")
    page.text(f"Model {cfg['model']} · data {cfg['data']} · training source {', '.join(cfg['train_subjects'])} · "
              f"questions: pool {base['pool']['n']}, " + ", ".join(f"{s.upper()} {base[s]['n']}" for s in SPLITS)
              + (f", dev {base['dev']['n']}" if "dev" in base else "") + f" · seeds {cfg['seeds']} · "
              f"{train['method']} fine-tuning, {train['epochs']} epochs, lr {train['learning_rate']}, "
              f"batch {train['batch_size']} · "
              f"{cfg['k_shot']}-shot {protocol} probe for the base model, the training format and every evaluation "
              "(never mixed with the other protocol). Accuracies in %, "
              "mean ± std over seeds; changes in points from the base model.")
    if results["caveats"]:
        page.heading("Read this first")
        for line in results["caveats"]:
            page.text(line)

    page.heading(f"Does this run reproduce the paper? ({protocol} scoring)")
    findings_section(page, results["findings"], "paper (Ren et al. 2024)",
                     note=lambda f: " (base model at chance: no evidence)" if f["base_at_chance"] else "",
                     muted=lambda f: f["base_at_chance"])
    page.text("Gaps are paired by question and resampled by a bootstrap over seeds, then test questions "
              f"({results['bootstrap']['replicates']} replicates, seed {results['bootstrap']['seed']}); so is the "
              "correlation of the consistency claim, over (set, split) cells. The base model's row is decided by the "
              "exact binomial test its rule names.")
    if results["diverged"]:
        page.text("Runs that diverged (NaN loss) and are left out: "
                  + "; ".join(f"{k}: {v}" for k, v in results["diverged"].items()))

    page.heading(f"Accuracy by training set and test split (paper's table), at convergence, {protocol} scoring")
    page.table(["training set", *[s.upper() for s in SPLITS]], _accuracy_rows(results, "convergence"))
    page.text("HOMO: held-out questions of the training source; ID: the other subjects of its domain; OOD: every "
              "other domain. The paper's rows give its gaps over Incompatible in points (LLaMA-2, MMLU / domain data).")
    page.heading("The same at EARLY_STOP (best dev epoch)", level=3)
    page.table(["training set", *[s.upper() for s in SPLITS]], _accuracy_rows(results, "early_stop"))

    page.heading("Knowledge consistency with the base model, at convergence")
    rows = [[name, *[f"{fmt(by[s]['rank_correlation'], 1.0, 2)} / {fmt(by[s]['kl_divergence'], 1.0, 3)} / "
                     f"{fmt(by[s]['same_prediction'])}" for s in SPLITS]]
            for name, by in results["consistency"]["convergence"].items()]
    page.table(["training set", *[s.upper() for s in SPLITS]], rows)
    page.text("Each cell: rank correlation of the four option probabilities before vs after fine-tuning (Ren et al.'s "
              "measure; 1 = same ranking) / KL(before ‖ after) / % of questions whose predicted option is unchanged.")

    page.heading(f"The base model against chance ({protocol} scoring)")
    rows = []
    for part, b in base.items():
        rows.append([part, b["n"], f"{b['accuracy'] * 100:.1f}", f"{b['p_value']:.3g}", "yes" if b["above_chance"] else "no",
                     " ".join(f"{k}:{v}" for k, v in b["predicted_letters"].items()),
                     f"{b['best_constant_letter']} {b['best_constant_accuracy'] * 100:.1f}"])
    page.table(["questions", "n", "accuracy", "p vs 25 %", "above chance", "predicted letters", "always one letter"], rows)

    page.heading("Training sets")
    rows = []
    for seed, sets in results["sets"].items():
        for name, info in sets.items():
            rows.append([seed, name, info["size"], " ".join(f"{k}:{v}" for k, v in info["label_letters"].items()),
                         info["gold_labels"], " ".join(f"{k}:{v}" for k, v in info["label_source"].items())])
    page.table(["seed", "set", "size", "label letters", "gold labels", "label source"], rows)

    page.heading("Accuracy after every epoch")
    page.figure(_epoch_plot(results["runs"], base), "mean over seeds; dashed: the base model; dotted: chance")
    page.heading("Training fit / loss per epoch", level=3)
    page.table(["training set", "epoch: fit % / loss"], _fit_rows(results["runs"]))
    page.write(path)
