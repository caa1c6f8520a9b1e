"""Data-parallel probing: `knowtune probe --shard i/n` on n processes or machines, then `knowtune probe-merge`.

Why shards and not vLLM's data parallelism: vLLM 0.32 refuses `LLM(data_parallel_size>1)` in one
process (it needs its multi-process launcher), and a multi-process vLLM run would be one run directory
written by many processes. A shard is an ordinary probe run: its own config.json (resume guard),
probe.jsonl (appended chunk by chunk) and summary.json, so a killed shard resumes alone, and each
shard runs on any engine (vLLM with tensor parallelism inside a shard). A question's samples depend
only on (seed, id, exemplar set), so with the hf engine the merged records equal an unsharded run's.
The merge checks that the shards are 0..n-1 of one selection, probed with the same settings, model,
data and engine, and that every selected question was probed exactly once.
"""

from __future__ import annotations

import re
from pathlib import Path

from knowtune.data.records import QADataset, QAExample
from knowtune.errors import ConfigError
from knowtune.files import (
    atomic_write_json,
    atomic_write_jsonl,
    check_or_write_manifest,
    read_json,
    stable_int,
)
from knowtune.probe.records import ProbeRecord
from knowtune.probe.slick import load_records, summarize

SAME = ("settings", "model", "data", "engine")  # what every shard of one probe shares


def parse_shard(text: str) -> tuple[int, int]:
    """'i/n' (0 <= i < n) as (i, n)."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m or not 0 <= int(m[1]) < int(m[2]):
        raise ConfigError(f"--shard {text!r}: expected i/n with 0 <= i < n, e.g. 0/4")
    return int(m[1]), int(m[2])


def selection_info(examples: list[QAExample]) -> dict:
    """Count and order-free fingerprint of the selected questions: what the shards must cover together."""
    return {"count": len(examples), "ids_fingerprint": stable_int(*sorted(e.id for e in examples))}


def shard_examples(examples: list[QAExample], text: str) -> tuple[list[QAExample], dict]:
    """Shard i of n of the selection (every n-th question from the i-th, so relations spread evenly),
    and the record of it that goes into the shard's manifest."""
    i, n = parse_shard(text)
    return examples[i::n], {"index": i, "of": n, "selection": selection_info(examples)}


def merge_probes(shard_dirs: list[Path], data: QADataset, out: Path) -> dict:
    """Join complete shard runs into one probe run directory at `out` (config.json, probe.jsonl, summary.json)."""
    if not shard_dirs:
        raise ConfigError("probe-merge: give the shard run directories to merge")
    configs = []
    for d in shard_dirs:
        cfg = read_json(d / "config.json")
        if not isinstance(cfg, dict) or "shard" not in cfg:
            raise ConfigError(f"{d / 'config.json'}: not a sharded probe run (probed without --shard)")
        if not (d / "summary.json").exists():
            raise ConfigError(f"{d}: shard {cfg['shard']['index']}/{cfg['shard']['of']} has not finished (no summary.json); "
                              "re-run its probe command to resume it")
        configs.append(cfg)
    first = configs[0]
    for d, cfg in zip(shard_dirs, configs):
        for key in SAME:
            if cfg.get(key) != first.get(key):
                raise ConfigError(f"{d}: its {key} differ from those of {shard_dirs[0]}; shards of one probe share them")
        if {k: v for k, v in cfg["shard"].items() if k != "index"} != {k: v for k, v in first["shard"].items() if k != "index"}:
            raise ConfigError(f"{d}: a shard of another selection or shard count than {shard_dirs[0]}")
    n = first["shard"]["of"]
    indices = sorted(cfg["shard"]["index"] for cfg in configs)
    if indices != list(range(n)):
        missing = sorted(set(range(n)) - set(indices))
        twice = sorted({i for i in indices if indices.count(i) > 1})
        raise ConfigError(f"probe-merge: shards must be 0..{n - 1} once each (missing {missing or 'none'}, repeated {twice or 'none'})")
    if data.fingerprint() != first["data"]["fingerprint"]:
        raise ConfigError(f"--data {data.name}: not the data the shards probed (fingerprint {data.fingerprint()} vs "
                          f"{first['data']['fingerprint']})")
    records: list[ProbeRecord] = []
    seen: dict[str, Path] = {}
    for d in shard_dirs:
        for r in load_records(d / "probe.jsonl"):
            if r.id in seen:
                raise ConfigError(f"{d / 'probe.jsonl'}, record {r.id}: probed in two shards (also in {seen[r.id]})")
            seen[r.id] = d
            records.append(r)
    selection = first["shard"]["selection"]
    got = {"count": len(records), "ids_fingerprint": stable_int(*sorted(seen))}
    if got != selection:
        raise ConfigError(f"probe-merge: the shards hold {got['count']} questions, the selection {selection['count']} "
                          "(or other ids): a shard is incomplete or from another selection")
    manifest = {**{k: first[k] for k in SAME}, "questions": selection, "shards": [str(d) for d in shard_dirs],
                "versions": first["versions"]}
    check_or_write_manifest(out / "config.json", manifest, "a probe", compare=(*SAME, "questions"))
    atomic_write_jsonl(out / "probe.jsonl", [r.to_dict() for r in records])
    summary = summarize(records, data)
    summary.update({k: first[k] for k in SAME})
    atomic_write_json(out / "summary.json", summary)
    return summary
