"""Steps the studies share: a probe cached by fingerprint, the curated sets written per seed, and the
seed × set loop of training runs, each recorded whether it finishes or diverges."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from knowtune.data.records import QADataset, QAExample
from knowtune.engine import HFTreeEngine
from knowtune.files import (
    atomic_write_json,
    atomic_write_jsonl,
    check_or_write_manifest,
    fingerprint,
    iter_jsonl,
    versions,
)
from knowtune.memory import lora_parameters
from knowtune.models import LoadedModel, cache_dir, describe, load_model
from knowtune.probe.config import ProbeConfig
from knowtune.probe.records import ProbeRecord
from knowtune.probe.slick import CHUNK_SIZE, check_probe_fits, load_records, run_probe
from knowtune.train.examples import SFTExample
from knowtune.train.processes import process_state
from knowtune.train.sft_config import SFTConfig
from knowtune.train.sft_trainer import (
    EvaluateFn,
    TrainingDiverged,
    train_sft,
)

console = Console(stderr=True)


def check_study(out: Path, cfg, lm: LoadedModel, data_fingerprint: str | None, extendable: tuple[str, ...] = ()) -> None:
    """The study-level resume guard, before anything in `out` is reused: the same settings, model and
    data, or a refusal naming the first setting that differs. Settings in `extendable` (e.g. seeds) may
    grow between runs: each variant they add is guarded by its own run's manifest (train_sft)."""
    for sft in (v for v in vars(cfg).values() if isinstance(v, SFTConfig) and v.method == "lora"):
        lora_parameters(lm.model, sft.lora_r, sft.lora_target_modules)  # targets that match no layer: refused before any work
    config = cfg.model_dump()
    manifest = {"config": {k: v for k, v in config.items() if k not in extendable},
                "extendable": {k: v for k, v in config.items() if k in extendable},  # as first run
                "model": describe(lm), "model_fingerprint": lm.fingerprint, "data_fingerprint": data_fingerprint,
                "versions": versions()}
    check_or_write_manifest(out / "study_config.json", manifest, "a study", compare=("config", "model_fingerprint", "data_fingerprint"))


def cached_probe(lm: LoadedModel, data: QADataset, examples: list[QAExample], cfg: ProbeConfig, batch_size: int) -> dict[str, ProbeRecord]:
    """SliCK records by id, probed once per (model, data, settings, questions) under $KNOWTUNE_CACHE/probes."""
    key = fingerprint({"model": lm.fingerprint, "data": data.fingerprint(), "probe": cfg.model_dump(),
                       "ids": sorted(e.id for e in examples)})
    out = cache_dir() / "probes" / key
    # Under `accelerate launch` the main process probes and the others read its records.
    with process_state().main_process_first():
        if not (out / "summary.json").exists():
            check_probe_fits(lm.model, lm.tokenizer, examples, cfg, min(batch_size, CHUNK_SIZE))
            console.print(f"probing {len(examples)} questions → {out}")
            run_probe(HFTreeEngine(lm.model, lm.tokenizer, batch_size=batch_size), data, examples, cfg, out, describe(lm))
    wanted = {e.id for e in examples}
    return {r.id: r for r in load_records(out / "probe.jsonl") if r.id in wanted}


def train_variant(model_spec: str, tokenizer, examples: list[SFTExample], cfg: SFTConfig, run_dir: Path,
                  evaluate: EvaluateFn | None, progress: bool) -> dict:
    """Fine-tune fresh base weights on one training set; a diverged run is recorded, not raised."""
    model = load_model(model_spec).model  # every variant starts from the base weights
    try:
        result = train_sft(model, tokenizer, examples, cfg, run_dir, evaluate, "dev_accuracy", progress)
        return {"metrics": result.metrics, "early_stop_epoch": result.early_stop_epoch,
                "convergence_epoch": result.convergence_epoch, "size": len(examples)}
    except TrainingDiverged as e:
        console.print(f"[red]{e}[/red]")
        metrics = [m for _, m in iter_jsonl(run_dir / "metrics.jsonl")] if (run_dir / "metrics.jsonl").exists() else []
        return {"metrics": metrics, "diverged": str(e), "size": len(examples)}


def load_outcomes(run_dir: Path) -> dict[int, dict[str, dict[str, dict]]]:
    """A run's stored per-question outputs, epoch → part → question id → row: `predictions/epoch<E>.jsonl`
    (rows with a `part`, written by the study's evaluation) and `predictions/fit_epoch<E>.jsonl` (the
    training examples' fit, written by the trainer) as part "fit". Empty for runs without them."""
    out: dict[int, dict[str, dict[str, dict]]] = {}
    folder = run_dir / "predictions"
    for path in sorted(folder.glob("*epoch*.jsonl")) if folder.exists() else []:
        stem = path.stem
        fit = stem.startswith("fit_")
        epoch = int(stem.removeprefix("fit_").removeprefix("epoch"))
        for _, row in iter_jsonl(path):
            out.setdefault(epoch, {}).setdefault("fit" if fit else row["part"], {})[row["id"]] = row
    return out


def write_sets(out: Path, rows: dict[int, dict[str, list[dict]]], info: dict[int, dict[str, dict]]) -> None:
    """Every seed's training sets as out/sets/seed<N>/<set>.jsonl, and each seed's manifest.json of `info`."""
    for seed, by_name in rows.items():
        for name, set_rows in by_name.items():
            atomic_write_jsonl(out / "sets" / f"seed{seed}" / f"{name}.jsonl", set_rows)
        atomic_write_json(out / "sets" / f"seed{seed}" / "manifest.json", info[seed])


def train_sets(model_spec: str, tokenizer, sets: dict[int, dict[str, list[SFTExample]]], cfg: SFTConfig, out: Path,
               evaluator: Callable[[Path], EvaluateFn | None], notes: dict[int, dict[str, str]],
               progress: bool) -> dict[int, dict[str, dict]]:
    """Train every seed's every set from the base weights into out/runs/seed<N>/<set> (finished runs
    are read back, killed ones resume); seed → set → run record."""
    runs: dict[int, dict[str, dict]] = {}
    total, done = sum(len(s) for s in sets.values()), 0
    for seed, by_name in sets.items():
        runs[seed] = {}
        for name, examples in by_name.items():
            done += 1
            run_dir = out / "runs" / f"seed{seed}" / name
            console.print(f"[{done}/{total}] seed {seed} {name}: {notes[seed][name]}")
            runs[seed][name] = train_variant(model_spec, tokenizer, examples, cfg.model_copy(update={"seed": seed}), run_dir,
                                             evaluator(run_dir), progress)
    return runs
