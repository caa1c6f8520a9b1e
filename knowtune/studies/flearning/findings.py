"""Aggregate an F-Learning study over seeds, choose λ on the dev edits, and check the paper's claims.

λ choice (per method, one λ for all seeds): the λ whose dev edits score best under the token
protocol, averaged over seeds, by `select`: mean of Reliability and Generality ('rg') or of R, G
and L ('rgl'); ties go to the smaller λ. Every table and claim then uses the test edits at that λ.
Scores are fractions internally and points (× 100) in the findings' text, as in the paper.
"""

from __future__ import annotations

import numpy as np

from knowtune.studies.flearning.config import FLearningStudyConfig
from knowtune.studies.stats import Finding, mean_std
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
            "findings": findings(cfg, by_method)}


def _diff(by_method: dict, a: str, b: str, protocol: str, metric: str) -> float | None:
    """Points by which method a's test mean exceeds method b's."""
    if a not in by_method or b not in by_method:
        return None
    x, y = (by_method[m]["test"].get(protocol, {}).get(metric, {}).get("mean") for m in (a, b))
    return None if x is None or y is None else (x - y) * 100


def _diffs_text(by_method: dict, a: str, b: str, protocols, metrics) -> str:
    parts = []
    for p in protocols:
        ds = [(SHORT[m], _diff(by_method, a, b, p, m)) for m in metrics]
        parts.append(f"{p}: " + ", ".join(f"{k} {d:+.1f}" if d is not None else f"{k} n/a" for k, d in ds))
    lam = by_method.get(a, {}).get("lam")
    return "; ".join(parts) + ("" if lam is None else f" (λ = {lam:g})")


def _finding(claim: str, paper: str, this_run: str, verdicts: dict) -> dict:
    return Finding(claim, paper, this_run, verdicts.get("token"), {"reproduced_by_protocol": verdicts}).to_dict()


def findings(cfg: FLearningStudyConfig, by_method: dict) -> list[dict]:
    """One line per claim: this run's differences in points, the paper's, and whether it holds per protocol."""
    out = []
    paper_ft = PAPER["flearning_ft_minus_ft_zsre"]
    for fl, base in (("flearning-ft", "ft"), ("flearning-lora", "lora")):
        verdicts = {}
        for p in cfg.protocols:
            d = {m: _diff(by_method, fl, base, p, m) for m in METRICS}
            verdicts[p] = None if None in d.values() else (
                d["reliability"] > 0 and d["generality"] > 0 and d["locality"] >= -cfg.locality_tolerance)
        paper = (f"F-Learning-FT − FT on zsRE: R {paper_ft['reliability']:+.2f}, G {paper_ft['generality']:+.2f}, "
                 f"L {paper_ft['locality']:+.2f}" if fl == "flearning-ft" else
                 "F-Learning-LoRA above LoRA on R and G, L about equal (Tables 1–2; λ 0.3 / 0.7 / 0.1 / 1.5 and 0.3 / 3 / 0.1 / 3)")
        out.append(_finding(f"{METHODS[fl].label} beats {METHODS[base].label} on Reliability and Generality, with "
                            f"Locality about equal (within {cfg.locality_tolerance:g} points)",
                            paper, f"{METHODS[fl].label} − {METHODS[base].label}: " +
                            _diffs_text(by_method, fl, base, cfg.protocols, METRICS), verdicts))
    verdicts = {}
    for p in cfg.protocols:
        d = [_diff(by_method, "lora-ft", "flearning-ft", p, m) for m in ("reliability", "generality")]
        verdicts[p] = None if None in d else all(x >= -cfg.close_tolerance for x in d)
    paper_lf = PAPER["lora_ft_minus_flearning_ft_counterfact"]
    out.append(_finding(f"Forgetting with LoRA comes close to forgetting with full fine-tuning: LoRA−FT within "
                        f"{cfg.close_tolerance:g} points of F-Learning-FT (or above) on Reliability and Generality",
                        f"LoRA−FT − F-Learning-FT on CounterFact: R {paper_lf['reliability']:+.2f}, G {paper_lf['generality']:+.2f}",
                        "LoRA−FT − F-Learning-FT: " + _diffs_text(by_method, "lora-ft", "flearning-ft", cfg.protocols,
                                                                   ("reliability", "generality")), verdicts))
    return out


def analyse(cfg: FLearningStudyConfig, sets: dict) -> dict:
    """Every aggregate the report shows, per edit set, plus all findings, as one JSON-ready dict."""
    out = {"config": cfg.model_dump(), "paper": PAPER, "sets": {}, "findings": []}
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
