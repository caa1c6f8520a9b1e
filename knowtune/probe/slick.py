"""The SliCK knowledge probe (Gekhman et al. 2024): categories from greedy and sampled answers.

A probe run directory holds `config.json` (settings and fingerprints, written first),
`probe.jsonl` (one record per question, appended and fsynced chunk by chunk) and
`summary.json` (written last). Re-running with the same directory resumes where it stopped.
"""

from __future__ import annotations

import sys
from collections import Counter, defaultdict
from pathlib import Path

from tqdm import tqdm

from knowtune.data.formats import exemplar_block, exemplar_sets, question_block
from knowtune.data.records import QADataset, QAExample, chance_rate
from knowtune.data.validate import check_unique_ids, require_probe_record
from knowtune.engine import Engine
from knowtune.errors import ConfigError
from knowtune.files import (
    JsonlAppender,
    atomic_write_json,
    check_or_write_manifest,
    iter_jsonl,
    remove_stale_temp,
    stable_int,
    versions,
)
from knowtune.matching import is_correct
from knowtune.memory import check_fits, probe_estimate
from knowtune.probe.config import ProbeConfig
from knowtune.probe.records import CATEGORIES, ProbeRecord

CHUNK_SIZE = 64  # questions per durable write: a kill loses at most this much work


def slick_category(p_greedy: float, p_sample: float) -> str:
    """HighlyKnown: P(T=0)=1 · MaybeKnown: 0<P(T=0)<1 · WeaklyKnown: P(T=0)=0, P(T>0)>0 · else Unknown."""
    if p_greedy == 1.0:
        return "HighlyKnown"
    if p_greedy > 0.0:
        return "MaybeKnown"
    if p_sample > 0.0:
        return "WeaklyKnown"
    return "Unknown"


def question_seed(seed: int, example_id: str, set_index: int) -> int:
    """The random stream of one question under one exemplar set: from the seed and the id alone,
    so a record does not depend on batch size, question order or interruptions."""
    return stable_int("sample", seed, example_id, set_index)


def probe_examples(
    engine: Engine, data: QADataset, examples: list[QAExample], cfg: ProbeConfig
) -> list[ProbeRecord]:
    """Probe questions of one relation under each exemplar set; return one record per question."""
    if cfg.estimator == "exact":
        from knowtune.probe.exact import probe_examples_exact

        return probe_examples_exact(engine, data, examples, cfg)
    relation = examples[0].relation
    params = cfg.sampling()
    greedy = defaultdict(list)
    sample_correct = defaultdict(list)
    sampled = defaultdict(list)
    sets = exemplar_sets(data, relation, cfg.k_shot, cfg.n_exemplar_sets, cfg.seed)
    prefixes = ["".join(exemplar_block(e) for e in exemplars) for exemplars in sets]
    prompts = [(prefix, question_block(e)) for prefix in prefixes for e in examples]
    seeds = [question_seed(cfg.seed, e.id, s) for s in range(len(sets)) for e in examples]
    outs = engine.complete_prompts(prompts, seeds, params)  # every exemplar set in one call: batches mix the sets
    n = len(examples)
    for s in range(len(sets)):
        for ex, out in zip(examples, outs[s * n : (s + 1) * n]):
            greedy[ex.id].append(out.greedy)
            sample_correct[ex.id].append(sum(c for a, c in out.samples.items() if is_correct(a, ex.answers)))
            sampled[ex.id].append(dict(sorted(out.samples.items(), key=lambda kv: -kv[1])))
    records = []
    for ex in examples:
        g_ok = [is_correct(a, ex.answers) for a in greedy[ex.id]]
        p_greedy = sum(g_ok) / cfg.n_exemplar_sets
        p_sample = sum(sample_correct[ex.id]) / (cfg.n_exemplar_sets * cfg.n_samples) if cfg.n_samples else 0.0
        records.append(ProbeRecord(
            ex.id, ex.relation, ex.subject, ex.question, ex.answers, ex.popularity, ex.split, greedy=greedy[ex.id],
            greedy_correct=g_ok, sample_correct=sample_correct[ex.id], samples=sampled[ex.id], p_greedy=p_greedy,
            p_sample=p_sample, category=slick_category(p_greedy, p_sample)))
    return records


def check_probe_fits(model, tokenizer, examples: list[QAExample], cfg: ProbeConfig, batch: int) -> None:
    """Refuse a probe of `examples` (at least one) that cannot fit, with at most `batch` questions per
    forward (the probe batches one relation at a time); prompts are k_shot + 1 blocks as long as the longest."""
    largest_relation = max(Counter(e.relation for e in examples).values())
    block = max(len(ids) for ids in tokenizer([exemplar_block(e) for e in examples])["input_ids"])
    seq_len = (cfg.k_shot + 1) * block + cfg.max_new_tokens
    check_fits(probe_estimate(model, min(batch, largest_relation), cfg.n_samples, seq_len), model)


def load_records(path: str | Path) -> list[ProbeRecord]:
    """Read probe records, checking the fields later stages rely on."""
    path = Path(path)
    return [ProbeRecord.from_dict(require_probe_record(rec, path, lineno, CATEGORIES)) for lineno, rec in iter_jsonl(path)]


def read_probe_records(path: str | Path) -> list[ProbeRecord]:
    """Probe records as a later stage reads them: an empty file or a repeated id is an error (sets and metrics go by id)."""
    records = load_records(path)
    if not records:
        raise ConfigError(f"{path}: no probe records")
    check_unique_ids([r.id for r in records], path)
    return records


def run_probe(
    engine: Engine,
    data: QADataset,
    examples: list[QAExample],
    cfg: ProbeConfig,
    out: str | Path,
    model_info: dict,
    chunk_size: int = CHUNK_SIZE,
    progress: bool = True,
    shard: dict | None = None,
) -> dict:
    """Probe `examples`, writing records and a summary to `out`; resumes a killed run. `shard` (from
    probe.shards.shard_examples) marks the run as one shard of a larger selection, for probe-merge."""
    out = Path(out)
    if not examples:
        raise ConfigError("no questions to probe (check --split, --relations and --limit)")
    for relation in sorted({e.relation for e in examples}):  # a pool too small for k_shot: refused before writing
        exemplar_sets(data, relation, cfg.k_shot, 1, cfg.seed)
    out.mkdir(parents=True, exist_ok=True)
    manifest = {
        "settings": cfg.model_dump(),
        "model": model_info,
        "data": {"name": data.name, "source": data.source, "fingerprint": data.fingerprint()},
        "questions": {"count": len(examples), "ids_fingerprint": stable_int(*[e.id for e in examples])},
        "engine": engine.info.to_dict(),  # which engine ran, its version and whether a rerun repeats the samples
        **({"shard": shard} if shard else {}),
        "versions": versions(),
    }
    compare = ("settings", "model", "data", "questions", "engine", *(("shard",) if shard else ()))
    check_or_write_manifest(out / "config.json", manifest, "a probe", compare=compare)
    remove_stale_temp(out)
    records_path = out / "probe.jsonl"
    sink = JsonlAppender(records_path)  # opening it cuts a torn last line left by a kill
    done = {r.id for r in load_records(records_path)}
    if done:
        print(f"{out}: resuming, {len(done)} of {len(examples)} questions already probed", file=sys.stderr)
    by_rel: dict[str, list[QAExample]] = defaultdict(list)
    for e in examples:
        if e.id not in done:
            by_rel[e.relation].append(e)
    bar = tqdm(total=len(examples), initial=len(done), desc="probe", unit="q", disable=not progress)
    with sink:
        for rel in sorted(by_rel):
            todo = by_rel[rel]
            for start in range(0, len(todo), chunk_size):
                recs = probe_examples(engine, data, todo[start : start + chunk_size], cfg)
                sink.write_many([r.to_dict() for r in recs])
                bar.update(len(recs))
    bar.close()
    records = load_records(records_path)
    wanted = {e.id for e in examples}
    records = [r for r in records if r.id in wanted]
    summary = summarize(records, data)
    summary.update({"settings": cfg.model_dump(), "model": model_info, "data": manifest["data"], "engine": manifest["engine"]})
    atomic_write_json(out / "summary.json", summary)
    return summary


def popularity_bins(records: list[ProbeRecord]) -> dict[str, str]:
    """Assign each record with a popularity to 'top 30%', 'middle 40%' or 'bottom 30%' by its rank
    within its relation (popularity scales differ across relations)."""
    bins: dict[str, str] = {}
    by_rel: dict[str, list[ProbeRecord]] = defaultdict(list)
    for r in records:
        if r.popularity is not None:
            by_rel[r.relation].append(r)
    for rel_records in by_rel.values():
        ranked = sorted(rel_records, key=lambda r: -r.popularity)
        n = len(ranked)
        for i, r in enumerate(ranked):
            q = i / n
            bins[r.id] = "top 30%" if q < 0.3 else "middle 40%" if q < 0.7 else "bottom 30%"
    return bins


def summarize(records: list[ProbeRecord], data: QADataset | None = None) -> dict:
    """Counts per category overall, per relation (with chance rate) and per popularity bin."""
    overall = Counter(r.category for r in records)
    per_rel: dict[str, Counter] = defaultdict(Counter)
    for r in records:
        per_rel[r.relation][r.category] += 1
    bins = popularity_bins(records)
    per_pop: dict[str, Counter] = defaultdict(Counter)
    for r in records:
        if r.id in bins:
            per_pop[bins[r.id]][r.category] += 1
    chance = {}
    if data is not None:
        for rel in per_rel:
            chance[rel] = round(chance_rate([e for e in data.examples if e.relation == rel]), 4)
    counts = lambda c: {k: c.get(k, 0) for k in CATEGORIES}
    return {
        "n": len(records),
        "categories": counts(overall),
        "greedy_accuracy": sum(r.p_greedy for r in records) / max(len(records), 1),
        "per_relation": {rel: {**counts(c), "chance_rate": chance.get(rel)} for rel, c in sorted(per_rel.items())},
        "per_popularity": {b: counts(per_pop[b]) for b in ("top 30%", "middle 40%", "bottom 30%") if b in per_pop},
    }
