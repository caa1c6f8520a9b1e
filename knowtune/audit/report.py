"""report.html of an audit: the share of Unknown overall and per relation, the rows the model answers
wrong with confidence, the rows that could not be audited, and what the paper found such a share does."""

from __future__ import annotations

from pathlib import Path

from knowtune.probe.records import CATEGORIES
from knowtune.report.html import Page

SHOWN = 25  # rows listed per table


def write_report(summary: dict, audited: list[dict], not_auditable: list[dict], path: Path) -> None:
    """Write the audit's HTML page."""
    page = Page(f"Knowledge audit of {summary['source']}")
    n = summary["audited"]
    page.text(f"{summary['rows']} rows: {n} audited, {summary['not_auditable']} not auditable. Model "
              f"{summary['model'].get('spec')}; exemplars {summary['exemplars']}; {summary['settings']['n_exemplar_sets']} "
              f"exemplar sets × (1 greedy + {summary['settings']['n_samples']} samples at T={summary['settings']['temperature']}).")
    page.heading("SliCK categories")
    cats = summary["categories"]
    rows = [["all", *[f"{cats[c]} ({cats[c] / n:.0%})" for c in CATEGORIES], f"{summary['unknown_share']:.1%}"]]
    rows += [[rel, *[r[c] for c in CATEGORIES], f"{r['unknown_share']:.1%}"] for rel, r in summary["per_relation"].items()]
    page.table(["relation", *CATEGORIES, "Unknown share"], rows)
    page.text("Unknown: the model never gave the row's answer, greedy or sampled, under any exemplar set. These are the "
              "examples that teach the model a new fact; filter them (--export filtered) or relabel them "
              "(--export idk).")
    lm = summary["paper_linear_model"]
    page.heading("What the paper found such a share does (PaLM 2, not a prediction for this model)")
    page.text(f"{lm['source']} fitted, for {lm['model']} fine-tuned on {lm['data']}, test accuracy (%) = "
              f"{lm['beta_0']} + {lm['beta_known']} × (Known examples fitted / |D|) {lm['beta_unknown']:+} × "
              f"(Unknown examples fitted / |D|), R² {lm['r2']}. Read at this set's Unknown share "
              f"({summary['unknown_share']:.1%}) with every example fitted (training to convergence), that is "
              f"{lm['accuracy_if_all_fitted']:.1f} against {lm['accuracy_if_all_known_fitted']:.1f} for a set with no "
              "Unknown examples. These are the paper's numbers for PaLM 2 on EntityQuestions, not a prediction for "
              "this model or this data; the paper's advice is to filter Unknown examples or stop early.")
    wrong = [a for a in audited if a["confident_wrong"]]
    page.heading(f"Answered wrong with confidence ({len(wrong)})")
    page.text("The same wrong greedy answer under every exemplar set.")
    page.table(["id", "question", "answer in the set", "model's answer"],
               [[a["id"], a["question"], a["answers"][0], a["greedy_answer"]] for a in wrong[:SHOWN]])
    if not_auditable:
        page.heading(f"Not auditable ({len(not_auditable)})")
        page.table(["reason", "rows"], [[k, v] for k, v in summary["not_auditable_reasons"].items()])
        page.table(["id", "row", "shape", "reason"], [[r["id"], r["row"], r["shape"], r["reason"]] for r in not_auditable[:SHOWN]])
    page.write(path)
