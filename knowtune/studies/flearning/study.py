"""The F-Learning study (Ni et al. 2024) end to end, per edit set: learning rates chosen on the
first seed's dev edits (when `lr_grid` names rates; lr.py), then per seed: edits → the
base model's knowledge of K_old → pre-edit references → forgetting deltas (one per family) → every
method and baseline over the λ sweep → scores on dev and test edits; then analysis → report.

Every stage writes into the study directory and is skipped when its output is complete, so a killed
study resumes where it stopped (a run counts as complete once its `scores.json` exists). The probe
behind the builtin edits is cached by (model, data, settings, questions) fingerprint under
$KNOWTUNE_CACHE/probes, as in the SliCK study.

Builtin edits are zero-shot QA prompts; an instruct model answers those in sentences ("The answer
is Egypt."), so on them it does not show the facts the probe found it knows, and fine-tuning on
short answers changes every answer's format, which Locality would count as damage. `context_shots`
therefore puts k exemplars of each prompt's own relation (the probe's `Q: …\\nA: …` blocks) before
every edit, rephrase and locality prompt.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

from rich.console import Console

from knowtune.data import load_qa, select_examples
from knowtune.data.edit_records import resolve_edits, write_edit_records
from knowtune.data.edits import EditExample, builtin_counterfacts
from knowtune.data.formats import exemplar_block, exemplar_sets, question_block
from knowtune.data.records import QADataset
from knowtune.data.select import check_relations, round_robin
from knowtune.errors import ConfigError
from knowtune.evaluate.edit_metrics import (
    EditScores,
    PreEditReference,
    edit_scores,
    pre_edit_reference,
)
from knowtune.files import (
    atomic_write_json,
    check_or_write_manifest,
    fingerprint,
    read_json,
    stable_int,
)
from knowtune.models import LoadedModel, load_model
from knowtune.probe.slick import summarize
from knowtune.studies.common import cached_probe, check_study
from knowtune.studies.flearning.config import FLearningStudyConfig
from knowtune.studies.flearning.findings import analyse, run_name
from knowtune.studies.flearning.lr import choose_learning_rates
from knowtune.studies.flearning.report import write_report
from knowtune.train.sft_trainer import TrainingDiverged
from knowtune.update.arithmetic import StateDict
from knowtune.update.flearning import forget_delta, forget_then_learn, knowledge_of
from knowtune.update.flearning_config import METHODS

console = Console(stderr=True)
Builtin = tuple[QADataset, list[str]]  # the facts behind builtin edits, and the ids the model knows
METRICS = ("reliability", "generality", "locality")


def known_facts(cfg: FLearningStudyConfig, data: QADataset, lm: LoadedModel) -> tuple[list[str], dict]:
    """Probe the relations' questions (cached) and return the ids in `cfg.known` categories and the summary."""
    examples = select_examples(data, "all", ",".join(cfg.relations), cfg.probe_pool)
    records = list(cached_probe(lm, data, examples, cfg.probe, cfg.batch_size).values())
    return [r.id for r in records if r.category in cfg.known], summarize(records, data)


def pick(items: list[tuple[str, str | None]], n: int | None, seed: int) -> list[str]:
    """Up to n ids of (id, relation) items, in a seeded order that takes the relations in turn."""
    queues: dict[str | None, list[str]] = {}
    for item_id, rel in sorted(items, key=lambda it: stable_int("edits", seed, it[0])):
        queues.setdefault(rel, []).append(item_id)
    return round_robin([queues[r] for r in sorted(queues, key=str)], n)


def with_context(edits: list[EditExample], data: QADataset, shots: int, seed: int) -> list[EditExample]:
    """Prefix every prompt with `shots` exemplars of its own relation, never its own question."""
    relation_of = {question_block(e): e.relation for e in data.examples}
    pools: dict[str, list] = {}

    def add(prompt: str, rel: str) -> str:
        # One spare exemplar, in case the prompt asks an exemplar's own question (a locality fact may).
        pool = pools.setdefault(rel, exemplar_sets(data, rel, shots + 1, 1, seed)[0])
        return "".join(exemplar_block(x) for x in [x for x in pool if question_block(x) != prompt][:shots]) + prompt

    return [dataclasses.replace(
        e, prompt=add(e.prompt, e.relation), rephrase_prompts=tuple(add(p, e.relation) for p in e.rephrase_prompts),
        locality_prompts=tuple(add(p, relation_of[p]) for p in e.locality_prompts)) for e in edits]


def study_edits(cfg: FLearningStudyConfig, spec: str, seed: int, builtin: Builtin | None) -> list[EditExample]:
    """One seed's edits, `cfg.dev_size` of them marked split 'dev' (for λ) and the rest 'test'."""
    if spec == "builtin":
        data, known = builtin
        facts = {e.id: e for e in data.examples}
        order = pick([(i, facts[i].relation) for i in known], cfg.n_edits, seed)
        edits = builtin_counterfacts(order, seed, cfg.n_locality, data).examples
        if cfg.context_shots:
            edits = with_context(edits, data, cfg.context_shots, seed)
    else:
        ds = resolve_edits(spec)
        order = pick([(e.id, e.relation) for e in ds.examples], cfg.n_edits, seed)
        chosen = set(order)
        edits = [e for e in ds.examples if e.id in chosen]
    if len(order) <= cfg.dev_size:
        raise ConfigError(f"{spec}: only {len(order)} edits for dev_size {cfg.dev_size}; "
                          "probe more questions (probe_pool) or lower dev_size")
    if cfg.n_edits is not None and len(order) < cfg.n_edits:
        console.print(f"[yellow]{spec}: {len(order)} edits available, fewer than n_edits {cfg.n_edits}[/yellow]")
    dev = set(order[: cfg.dev_size])
    return [dataclasses.replace(e, split="dev" if e.id in dev else "test") for e in edits]


def split_scores(scores: EditScores, edits: list[EditExample]) -> dict:
    """R/G/L on the dev and the test edits (means over the edits that have such prompts)."""
    split = {e.id: e.split for e in edits}
    out = {}
    for part in ("dev", "test"):
        rows = [r for r in scores.per_edit if split[r["id"]] == part]
        out[part] = {"n": len(rows)}
        for m in METRICS:
            vals = [r[m] for r in rows if r[m] is not None]
            out[part][m] = sum(vals) / len(vals) if vals else None
    return out


def _score_run(cfg, method, lam, edits, delta, refs, tok, run_dir: Path, progress: bool) -> dict:
    started = time.time()
    if (run_dir / "result.json").exists() and not (run_dir / "convergence").exists():
        shutil.rmtree(run_dir)  # trained before but never scored, and no weights kept: train again
    model = load_model(cfg.model).model  # every run starts from the base weights
    try:
        res = forget_then_learn(model, tok, edits, method, lam, delta, cfg, run_dir, progress)
    except TrainingDiverged as e:
        console.print(f"[red]{e}[/red]")
        return {"method": method.id, "lam": lam, "diverged": str(e)}
    trained = res.model if res.model is not None else load_model(str(res.convergence_dir)).model
    row = {"method": method.id, "lam": lam, "fit_k_new": [m["fit"] for m in res.metrics],
           "train_loss": [m["train_loss"] for m in res.metrics], "scores": {}, "per_edit": {}}
    for protocol, ref in refs.items():
        s = edit_scores(trained, tok, edits, ref, batch_size=cfg.eval_batch_size)
        row["scores"][protocol] = split_scores(s, edits)
        row["per_edit"][protocol] = s.per_edit
    row["seconds"] = round(time.time() - started, 1)
    return row


def _cached(path: Path, compute):
    if path.exists():
        return read_json(path)
    value = compute()
    atomic_write_json(path, value)
    return value


def run_seed(cfg: FLearningStudyConfig, spec: str, seed: int, seed_dir: Path, lm: LoadedModel, builtin: Builtin | None,
             progress: bool) -> dict:
    """Every method and λ on one seed's edits; returns the runs, the knowledge of K_old and the deltas' info."""
    edits = study_edits(cfg, spec, seed, builtin)
    # Completed runs are reused, so they must belong to these edits and settings; λ values, methods
    # and seeds may be added to a study by running it again.
    manifest = {"edits": fingerprint([e.to_dict() for e in edits]), "model": lm.fingerprint, "full": cfg.full.model_dump(),
                "lora": cfg.lora.model_dump(), "protocols": sorted(cfg.protocols), "max_new_tokens": cfg.max_new_tokens}
    check_or_write_manifest(seed_dir / "manifest.json", manifest, "runs")
    write_edit_records(seed_dir / "edits.jsonl", edits)
    tok = lm.tokenizer
    knowledge = _cached(seed_dir / "knowledge.json", lambda: {
        w: knowledge_of(lm.model, tok, edits, w, cfg.max_new_tokens, cfg.eval_batch_size) for w in ("old", "new")})
    refs = {}
    for p in cfg.protocols:
        path = seed_dir / f"reference_{p}.json"
        if not path.exists():
            pre_edit_reference(lm.model, tok, edits, p, batch_size=cfg.eval_batch_size, max_new_tokens=cfg.max_new_tokens).save(path)
        refs[p] = PreEditReference.load(path)
    methods = [METHODS[m] for m in cfg.methods]
    plan = [(m, lam) for m in methods for lam in (cfg.lambdas if m.uses_lambda else [None])]
    deltas: dict[str, StateDict] = {}
    runs, forget_info = {}, {}
    for i, (method, lam) in enumerate(plan, start=1):
        name = run_name(method.id, lam)
        run_dir = seed_dir / "runs" / name
        if (run_dir / "scores.json").exists():
            runs[name] = read_json(run_dir / "scores.json")
            continue
        console.print(f"[{i}/{len(plan)}] {spec} seed {seed}: {method.label}" + ("" if lam is None else f" λ={lam:g}"))
        family = method.forget
        if family is not None and family not in deltas:
            console.print(f"  forgetting K_old with {family} fine-tuning (once per family)")
            deltas[family] = forget_delta(load_model(cfg.model).model, tok, edits, cfg.sft(family),
                                          seed_dir / "forget" / family, progress)
        runs[name] = _score_run(cfg, method, lam, edits, deltas.get(family), refs, tok, run_dir, progress)
        atomic_write_json(run_dir / "scores.json", runs[name])
    for family in ("full", "lora"):
        if (seed_dir / "forget" / family / "delta.json").exists():
            forget_info[family] = read_json(seed_dir / "forget" / family / "delta.json")
    sizes = {part: sum(e.split == part for e in edits) for part in ("dev", "test")}
    return {"runs": runs, "test_ids": [e.id for e in edits if e.split == "test"], "knowledge": {w: {k: v for k, v in kn.items() if k != "per_edit"} for w, kn in knowledge.items()},
            "forget": forget_info, "sizes": sizes}


def _set_key(spec: str, taken: set[str]) -> str:
    base = "builtin" if spec == "builtin" else Path(spec.partition(":")[2] if ":" in spec else spec).stem
    key, n = base, 2
    while key in taken:
        key, n = f"{base}-{n}", n + 1
    return key


def run_study(cfg: FLearningStudyConfig, out: str | Path, progress: bool = True) -> dict:
    """Run (or resume) the whole study into `out`; returns the results written to results.json."""
    out = Path(out)
    started = time.time()
    for spec in cfg.edits:
        if spec != "builtin":
            resolve_edits(spec)  # a bad edit file fails here, before any training
    lm = load_model(cfg.model)
    # λ values, methods and seeds may be added by running again; each seed's manifest guards its runs.
    check_study(out, cfg, lm, None, extendable=("seeds", "lambdas", "methods"))
    sets: dict[str, dict] = {}
    for spec in cfg.edits:
        key = _set_key(spec, set(sets))
        builtin, probe_summary = None, None
        if spec == "builtin":
            data = load_qa(cfg.data)
            check_relations(data, cfg.relations)
            known, probe_summary = known_facts(cfg, data, lm)
            builtin = (data, known)
            atomic_write_json(out / key / "probe_summary.json", probe_summary)
        set_cfg, lr_choice = cfg, None
        if cfg.lr_grid:
            lr_choice = choose_learning_rates(cfg, study_edits(cfg, spec, cfg.seeds[0], builtin), lm, out / key / "lr_sweep",
                                              progress)
            set_cfg = cfg.model_copy(update={f: cfg.sft(f).model_copy(update={"learning_rate": c["chosen"]})
                                             for f, c in lr_choice.items()})
        per_seed = {seed: run_seed(set_cfg, spec, seed, out / key / f"seed{seed}", lm, builtin, progress) for seed in cfg.seeds}
        sets[key] = {"spec": spec, "per_seed": per_seed, "probe_summary": probe_summary, "lr_choice": lr_choice,
                     "learning_rates": {f: set_cfg.sft(f).learning_rate for f in ("full", "lora")}}
    results = analyse(cfg, sets)
    results["wall_seconds_this_invocation"] = round(time.time() - started, 1)
    atomic_write_json(out / "results.json", results)
    write_report(results, out / "report.html")
    return results
