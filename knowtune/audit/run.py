"""`knowtune audit`: the SliCK probe over a user's SFT rows, with few-shot exemplars held out from the
user's own set (per relation when the rows have one) or taken from an exemplar file.

Held-out exemplars are audited too, by cross-fitting: pool A (per relation) gives the exemplars for
every other row, and pool A's rows are then probed with exemplars from a second pool B drawn from
those other rows — no question is ever shown with its own answer.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from knowtune.audit.report import write_report
from knowtune.data.records import QADataset, QAExample
from knowtune.data.sft_rows import SFTRow, SFTRowSet
from knowtune.engine import Engine
from knowtune.errors import ConfigError
from knowtune.files import (
    atomic_write_json,
    atomic_write_jsonl,
    check_or_write_manifest,
    fingerprint,
    stable_int,
    versions,
)
from knowtune.matching import is_correct
from knowtune.probe.config import ProbeConfig
from knowtune.probe.records import CATEGORIES, ProbeRecord
from knowtune.probe.slick import load_records, run_probe

POOL_SIZE = 16  # held-out exemplars per relation (at most half of the relation's rows)
# Gekhman et al. 2024, in-distribution linear model for PaLM 2 on EntityQuestions: test accuracy (%) =
# β0 + β_kn·(Known fitted / |D|) + β_unk·(Unknown fitted / |D|).
PAPER_LINEAR_MODEL = {"beta_0": 36.9, "beta_known": 7.3, "beta_unknown": -8.3, "r2": 0.86,
                      "model": "PaLM 2", "data": "EntityQuestions", "source": "Gekhman et al. 2024"}


@dataclass
class AuditPlan:
    """The probe passes of an audit: (name, dataset with its exemplar pool, questions), plus rows that
    cannot be audited for want of exemplars."""

    passes: list[tuple[str, QADataset, list[QAExample]]]
    exemplars: str  # where the exemplars come from, in words
    skipped: dict[int, str] = field(default_factory=dict)  # row index → reason


def _example(row: SFTRow, split: str) -> QAExample:
    return QAExample(row.id, row.relation or "all", row.question, row.question, row.answers, split=split)


def plan_audit(rows: SFTRowSet, cfg: ProbeConfig, exemplars: SFTRowSet | None = None, pool_size: int = POOL_SIZE) -> AuditPlan:
    """Which rows are probed with which exemplars; refuses, before any model is loaded, a set with
    no auditable row or an exemplar file that lacks a relation's exemplars."""
    auditable = rows.auditable()
    if not auditable:
        counts = ", ".join(f"{n} {why}" for why, n in rows.not_auditable_counts().items())
        raise ConfigError(f"{rows.source}: none of the {len(rows.rows)} rows is auditable ({counts})")
    if exemplars is not None:
        pool = [_example(r, "exemplar") for r in exemplars.auditable()]
        have = Counter(e.relation for e in pool)
        for rel in sorted({r.relation or "all" for r in auditable}):
            if have[rel] < cfg.k_shot:
                raise ConfigError(f"{exemplars.source}: relation {rel!r} has {have[rel]} usable exemplars, needs at least "
                                  f"k_shot={cfg.k_shot} (exemplar rows need the same relation field as the audited rows)")
        data = QADataset("audit", pool + [_example(r, "test") for r in auditable], "exemplar", source=rows.source)
        return AuditPlan([("main", data, [e for e in data.examples if e.split == "test"])], f"the file {exemplars.source}")
    by_rel: dict[str, list[SFTRow]] = defaultdict(list)
    for r in auditable:
        by_rel[r.relation or "all"].append(r)
    main_pool, main_q, held_pool, held_q, skipped = [], [], [], [], {}
    for rel, rel_rows in sorted(by_rel.items()):
        ranked = sorted(rel_rows, key=lambda r: stable_int("audit-pool", cfg.seed, r.id))
        n = min(pool_size, len(ranked) // 2)
        if n < cfg.k_shot:
            for r in rel_rows:
                skipped[r.index] = (f"too few rows for held-out exemplars: relation {rel!r} has {len(rel_rows)} "
                                    f"rows, needs at least {2 * cfg.k_shot} (or give --exemplars)")
            continue
        main_pool += ranked[:n]
        main_q += ranked[n:]
        held_pool += ranked[n : 2 * n]
        held_q += ranked[:n]
    passes = []
    for name, pool, questions in (("main", main_pool, main_q), ("held-out", held_pool, held_q)):
        if questions:
            data = QADataset("audit", [_example(r, "exemplar") for r in pool] + [_example(r, "test") for r in questions],
                             "exemplar", source=rows.source)
            passes.append((name, data, [e for e in data.examples if e.split == "test"]))
    if not passes:
        raise ConfigError(f"{rows.source}: no relation has the {2 * cfg.k_shot} rows held-out exemplars need; give --exemplars FILE")
    where = "per relation" if any(r.relation for r in auditable) else "from the whole set"
    return AuditPlan(passes, f"held out from the set itself, {where} (up to {pool_size} per relation, cross-fitted)", skipped)


def greedy_answer(rec: ProbeRecord) -> str:
    """The model's answer: its most frequent greedy answer over the exemplar sets (the first on ties)."""
    return Counter(rec.greedy or [""]).most_common(1)[0][0]


def audit_row(row: SFTRow, rec: ProbeRecord) -> dict:
    """One line of audit.jsonl; it is also a probe record (`knowtune evaluate --records` reads it)."""
    answer = greedy_answer(rec)
    return {"id": row.id, "row": row.index, "relation": rec.relation, "question": rec.question, "answers": list(rec.answers),
            "greedy": rec.greedy, "greedy_correct": rec.greedy_correct, "p_greedy": rec.p_greedy, "p_sample": rec.p_sample, "category": rec.category,
            "greedy_answer": answer, "answer_correct": is_correct(answer, rec.answers),
            "confident_wrong": bool(rec.greedy) and len(set(rec.greedy)) == 1 and not any(rec.greedy_correct or [])
            and bool(answer)}


def summarize_audit(rows: SFTRowSet, audited: list[dict], not_auditable: list[dict]) -> dict:
    """Counts and Unknown shares overall and per relation, and the paper's linear model read at this share."""
    cats = Counter(a["category"] for a in audited)
    n = len(audited)
    per_rel: dict[str, Counter] = defaultdict(Counter)
    for a in audited:
        per_rel[a["relation"]][a["category"]] += 1
    share = cats["Unknown"] / n if n else 0.0
    lm = PAPER_LINEAR_MODEL
    return {
        "rows": len(rows.rows), "audited": n, "not_auditable": len(not_auditable),
        "not_auditable_reasons": dict(Counter(r["reason"].split(":")[0] for r in not_auditable).most_common()),
        "categories": {c: cats.get(c, 0) for c in CATEGORIES}, "unknown_share": share,
        "per_relation": {rel: {**{k: c.get(k, 0) for k in CATEGORIES}, "unknown_share": c["Unknown"] / sum(c.values())}
                         for rel, c in sorted(per_rel.items())},
        "confident_wrong": sum(a["confident_wrong"] for a in audited),
        "paper_linear_model": {**lm, "note": "the paper's numbers for PaLM 2, not a prediction for this model",
                               "accuracy_if_all_fitted": lm["beta_0"] + lm["beta_known"] * (1 - share) + lm["beta_unknown"] * share,
                               "accuracy_if_all_known_fitted": lm["beta_0"] + lm["beta_known"]},
    }


def run_audit(engine: Engine, rows: SFTRowSet, plan: AuditPlan, cfg: ProbeConfig, out: str | Path, model_info: dict,
              progress: bool = True) -> dict:
    """Probe every auditable row as planned; write audit.jsonl, not_auditable.jsonl, summary.json and
    report.html into `out` (the probe passes under out/probe/ resume a killed audit)."""
    out = Path(out)
    check_or_write_manifest(out / "audit_config.json", {
        "settings": cfg.model_dump(), "model": model_info, "source": rows.source, "exemplars": plan.exemplars,
        "rows_fingerprint": fingerprint([[r.id, r.question, list(r.answers), r.relation] for r in rows.rows]),
        "versions": versions()}, "an audit", compare=("settings", "model", "rows_fingerprint", "exemplars"))
    records: dict[str, ProbeRecord] = {}
    for name, data, questions in plan.passes:
        run_probe(engine, data, questions, cfg, out / "probe" / name, model_info, progress=progress)
        records.update({r.id: r for r in load_records(out / "probe" / name / "probe.jsonl")})
    audited, not_auditable = [], []
    for row in rows.rows:
        if row.auditable and row.index not in plan.skipped:
            audited.append(audit_row(row, records[row.id]))
        else:
            not_auditable.append({"id": row.id, "row": row.index, "shape": row.shape, "reason": row.reason or plan.skipped[row.index]})
    summary = summarize_audit(rows, audited, not_auditable)
    summary.update({"source": rows.source, "exemplars": plan.exemplars, "settings": cfg.model_dump(), "model": model_info})
    atomic_write_jsonl(out / "audit.jsonl", audited)
    atomic_write_jsonl(out / "not_auditable.jsonl", not_auditable)
    write_report(summary, audited, not_auditable, out / "report.html")
    atomic_write_json(out / "summary.json", summary)  # written last: the audit is complete once it exists
    return summary
