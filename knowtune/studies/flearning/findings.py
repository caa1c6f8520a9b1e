"""Aggregate an F-Learning study over seeds, choose λ on the dev edits, and check the paper's claims.

λ choice (per method, one λ for all seeds): the λ whose dev edits score best under the token
protocol, averaged over seeds, by `select`: mean of Reliability and Generality ('rg') or of R, G
and L ('rgl'); ties go to the smaller λ. Every table and claim then uses the test edits at that λ.
Scores are fractions internally and points (× 100) in the findings' text, as in the paper.
"""

from __future__ import annotations

import numpy as np

from knowtune.studies.flearning.config import FLearningStudyConfig
from knowtune.studies.stats import BOOTSTRAP, bootstrap, difference, mean_std
from knowtune.studies.verdicts import (
    SCHEMA_NOTE,
    SCHEMA_VERSION,
    Check,
    Finding,
    check,
    combine,
    fmt_check,
)
from knowtune.update.flearning_config import METHODS

METRICS = ("reliability", "generality", "locality")
SHORT = {"reliability": "R", "generality": "G", "locality": "L"}
PAPER = {
    "setting": "LLaMA2-7B, lr 5e-5, 3 epochs, token protocol (EasyEdit)",
    "flearning_ft_minus_ft_zsre": {"reliability": 2.71, "generality": 4.84, "locality": -0.43},
    "lora_ft_minus_flearning_ft_counterfact": {"reliability": 9.20, "generality": 6.11},
    "lambdas": {"table1": [0.3, 0.7, 0.1, 1.5], "table2": [0.3, 3, 0.1, 3]},
}


def _run(per_seed: dict, seed, name: str) -> dict | None:
    run = per_seed[seed]["runs"].get(name)
    return None if run is None or "diverged" in run else run


def _lam_key(lam: float | None) -> str:
    return "-" if lam is None else f"{lam:g}"


def run_name(method_id: str, lam: float | None) -> str:
    """The name (and directory) of one run: the method id, and λ for methods that forget."""
    return method_id if lam is None else f"{method_id}_lam{lam:g}"


def _criterion(part: dict, select: str) -> float | None:
    keys = ("reliability", "generality") if select == "rg" else METRICS
    vals = [part[k] for k in keys]
    return None if any(v is None for v in vals) else float(np.mean(vals))


def _stats(per_seed: dict, name: str, part: str) -> dict:
    """protocol → metric → mean ± std over seeds of one run's scores on `part`."""
    protocols = {p for s in per_seed for r in [_run(per_seed, s, name)] if r for p in r["scores"]}
    return {p: {m: mean_std([r["scores"][p][part][m] for s in per_seed for r in [_run(per_seed, s, name)] if r])
                for m in METRICS} for p in sorted(protocols)}


def choose_lambdas(cfg: FLearningStudyConfig, per_seed: dict) -> dict:
    """Per method that forgets: the dev criterion at every λ and the chosen λ."""
    out = {}
    for mid in cfg.methods:
        if not METHODS[mid].uses_lambda:
            continue
        crit = {}
        for lam in cfg.lambdas:
            crit[_lam_key(lam)] = mean_std([_criterion(r["scores"]["token"]["dev"], cfg.select)
                                            for s in per_seed for r in [_run(per_seed, s, run_name(mid, lam))] if r])
        scored = [(c["mean"], -lam, lam) for lam, c in zip(cfg.lambdas, crit.values(), strict=True) if c["mean"] is not None]
        out[mid] = {"criterion": crit, "chosen": max(scored)[2] if scored else None}
    return out


def analyse_set(cfg: FLearningStudyConfig, per_seed: dict) -> dict:
    """The paper-style table, λ curves, K_old knowledge and claims of one edit set."""
    lambdas = choose_lambdas(cfg, per_seed)
    table, curves = [], {}
    for mid in cfg.methods:
        method = METHODS[mid]
        lam = lambdas[mid]["chosen"] if method.uses_lambda else None
        table.append({"method": mid, "label": method.label, "lam": lam, "test": _stats(per_seed, run_name(mid, lam), "test"),
                      "dev": _stats(per_seed, run_name(mid, lam), "dev")})
        if method.uses_lambda:
            curves[mid] = {_lam_key(x): _stats(per_seed, run_name(mid, x), "test") for x in cfg.lambdas}
    knowledge = {w: {k: mean_std([per_seed[s]["knowledge"][w][k] for s in per_seed]) for k in ("exact_match", "token_accuracy")}
                 for w in ("old", "new")}
    sizes = {part: mean_std([per_seed[s]["sizes"][part] for s in per_seed]) for part in ("dev", "test")}
    by_method = {row["method"]: row for row in table}
    return {"lambda_selection": lambdas, "table": table, "curves": curves, "knowledge": knowledge, "sizes": sizes,
            "findings": findings(cfg, by_method, per_seed)}


def _paired(per_seed: dict, by_method: dict, a: str, b: str, protocol: str, metric: str) -> list[np.ndarray]:
    """Per seed where both ran: one row per test edit, columns [a's score, b's score] (NaN: no such prompt)."""
    out = []
    for s in per_seed:
        runs = [_run(per_seed, s, run_name(m, by_method[m]["lam"])) if m in by_method else None for m in (a, b)]
        if None in runs or any(protocol not in r.get("per_edit", {}) for r in runs):
            continue
        scores = [{e["id"]: e[metric] for e in r["per_edit"][protocol]} for r in runs]
        ids = per_seed[s]["test_ids"]
        out.append(np.array([[np.nan if sc[i] is None else sc[i] for sc in scores] for i in ids], dtype=float))
    return out


def _claim(per_seed: dict, by_method: dict, a: str, b: str, protocol: str, parts: list[tuple[str, float]]) -> Check:
    """Every metric's paired difference a − b on the test edits (edits differ per seed: resampled per seed) above its threshold."""
    return combine([check(bootstrap(_paired(per_seed, by_method, a, b, protocol, m), difference(), shared=False),
                          threshold=t, label=f"{SHORT[m]} ({protocol})") for m, t in parts])


def _diffs_text(by_method: dict, checks: dict, a: str) -> str:
    parts = [f"{p}: " + ", ".join(f"{c.label.split()[0]} {fmt_check(c)}" for c in check_.parts) for p, check_ in checks.items()]
    lam = by_method.get(a, {}).get("lam")
    return "; ".join(parts) + ("" if lam is None else f" (λ = {lam:g})")


def _finding(claim: str, paper: str, this_run: str, checks: dict) -> dict:
    """The token protocol's verdict heads the finding (EasyEdit's, as in the paper); every protocol's is beside it."""
    primary = checks.get("token") or next(iter(checks.values()))
    return Finding(claim, paper, this_run, primary, {"verdict_by_protocol": {p: c.verdict for p, c in checks.items()},
                                                      "by_protocol": {p: c.to_dict() for p, c in checks.items()}}).to_dict()


def findings(cfg: FLearningStudyConfig, by_method: dict, per_seed: dict) -> list[dict]:
    """One line per claim: this run's paired differences in points with their 95 % intervals, the paper's, and
    the verdict per protocol."""
    out = []
    paper_ft = PAPER["flearning_ft_minus_ft_zsre"]
    tol = cfg.locality_tolerance
    for fl, base in (("flearning-ft", "ft"), ("flearning-lora", "lora")):
        checks = {p: _claim(per_seed, by_method, fl, base, p, [("reliability", 0.0), ("generality", 0.0), ("locality", -tol)])
                  for p in cfg.protocols}
        paper = (f"F-Learning-FT − FT on zsRE: R {paper_ft['reliability']:+.2f}, G {paper_ft['generality']:+.2f}, "
                 f"L {paper_ft['locality']:+.2f}" if fl == "flearning-ft" else
                 "F-Learning-LoRA above LoRA on R and G, L about equal (Tables 1–2; λ 0.3 / 0.7 / 0.1 / 1.5 and 0.3 / 3 / 0.1 / 3)")
        out.append(_finding(f"{METHODS[fl].label} beats {METHODS[base].label} on Reliability and Generality, with "
                            f"Locality about equal (no more than {tol:g} points lower)",
                            paper, f"{METHODS[fl].label} − {METHODS[base].label}: " + _diffs_text(by_method, checks, fl), checks))
    close = cfg.close_tolerance
    checks = {p: _claim(per_seed, by_method, "lora-ft", "flearning-ft", p, [("reliability", -close), ("generality", -close)])
              for p in cfg.protocols}
    paper_lf = PAPER["lora_ft_minus_flearning_ft_counterfact"]
    out.append(_finding(f"Forgetting with LoRA comes close to forgetting with full fine-tuning: LoRA−FT within "
                        f"{close:g} points of F-Learning-FT (or above) on Reliability and Generality",
                        f"LoRA−FT − F-Learning-FT on CounterFact: R {paper_lf['reliability']:+.2f}, G {paper_lf['generality']:+.2f}",
                        "LoRA−FT − F-Learning-FT: " + _diffs_text(by_method, checks, "lora-ft"), checks))
    return out


def analyse(cfg: FLearningStudyConfig, sets: dict) -> dict:
    """Every aggregate the report shows, per edit set, plus all findings, as one JSON-ready dict."""
    out = {"schema_version": SCHEMA_VERSION, "schema_note": SCHEMA_NOTE, "bootstrap": BOOTSTRAP, "config": cfg.model_dump(),
           "paper": PAPER, "sets": {}, "findings": []}
    for key, s in sets.items():
        per_seed = s["per_seed"]
        agg = analyse_set(cfg, per_seed)
        agg.update({"spec": s["spec"], "probe_summary": s["probe_summary"], "lr_choice": s["lr_choice"],
                    "learning_rates": s["learning_rates"],
                    "forget": {seed: r["forget"] for seed, r in per_seed.items()},
                    "runs": {f"seed{seed}": {n: {k: v for k, v in run.items() if k != "per_edit"} for n, run in r["runs"].items()}
                             for seed, r in per_seed.items()},
                    "diverged": {f"seed{seed}/{n}": run["diverged"] for seed, r in per_seed.items()
                                 for n, run in r["runs"].items() if "diverged" in run}})
        out["sets"][key] = agg
        out["findings"] += [{**f, "set": key} for f in agg["findings"]]
    return out
