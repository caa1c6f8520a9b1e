"""Where an output came from: the model and data fingerprints that a probe, a curated set or a
fine-tuned model was made with, so that a later stage can warn when it is given something else
(records probed with one model used to train or judge another say nothing about the second)."""

from __future__ import annotations

import sys
from pathlib import Path

from knowtune.errors import DataError, where
from knowtune.files import read_json

META = "knowtune_meta.json"  # written into every model directory knowtune saves


def _fingerprints(obj: object, path: Path, field: str) -> dict:
    """`obj` (the `field` of sidecar `path`) as {'model': str | None, 'data': str | None}, or a DataError
    naming file and field: a sidecar is written by knowtune, but may have been edited or replaced since."""
    if not isinstance(obj, dict):
        raise DataError(f"{where(path, field=field)}: expected a JSON object, got {type(obj).__name__}")
    for key in ("model", "data"):
        if obj.get(key) is not None and not isinstance(obj[key], str):
            raise DataError(f"{where(path, field=f'{field}.{key}')}: expected a fingerprint string, got {type(obj[key]).__name__}")
    return {k: v for k, v in obj.items() if k in ("model", "data", "model_spec")}


def provenance_of(path: str | Path) -> dict | None:
    """{'model': fingerprint, 'data': fingerprint, 'source': file} for a knowtune output, or None.

    A probe.jsonl is described by the config.json beside it, a curated set by the manifest.json
    beside it, and a saved model directory by its knowtune_meta.json."""
    path = Path(path)
    if path.is_dir():
        meta = path / META
        if not meta.exists():
            return None
        obj = read_json(meta)
        if not isinstance(obj, dict):
            raise DataError(f"{meta}: expected a JSON object, got {type(obj).__name__}")
        return {**_fingerprints(obj.get("provenance", {}), meta, "provenance"), "source": str(meta)}
    for name in ("manifest.json", "config.json"):
        sidecar = path.parent / name
        if not sidecar.exists():
            continue
        obj = read_json(sidecar)
        if not isinstance(obj, dict):
            continue
        if "provenance" in obj:  # a curated set's manifest
            return {**_fingerprints(obj["provenance"], sidecar, "provenance"), "source": str(sidecar)}
        if isinstance(obj.get("model"), dict) and isinstance(obj.get("data"), dict):  # a probe's config
            found = {"model": obj["model"].get("fingerprint"), "data": obj["data"].get("fingerprint")}
            return {**_fingerprints(found, sidecar, "model/data.fingerprint"), "source": str(sidecar)}
    return None


def lineage(model_spec: str, fingerprint: str) -> set[str]:
    """The fingerprints a model answers to: its own and, for a knowtune fine-tune, its base model's."""
    prov = provenance_of(model_spec) if Path(model_spec).is_dir() else None
    return {fingerprint} | ({prov["model"]} if prov and prov.get("model") else set())


def warn(message: str) -> None:
    """Print a one-line warning to stderr."""
    print(f"knowtune: warning: {message}", file=sys.stderr)


def check_inputs(model_spec: str, fingerprint: str, inputs: dict[str, Path | None]) -> list[str]:
    """Warn (and return the warnings) for inputs made with another model or with different data
    than the other inputs."""
    known = lineage(model_spec, fingerprint)
    found = {name: provenance_of(path) for name, path in inputs.items() if path is not None}
    out = []
    for name, prov in found.items():
        if prov and prov.get("model") and prov["model"] not in known:
            out.append(f"{name} ({inputs[name]}) was made with model {prov['model']} (see {prov['source']}), "
                       f"but this run uses {model_spec} (model {fingerprint})")
    data = {name: prov["data"] for name, prov in found.items() if prov and prov.get("data")}
    if len(set(data.values())) > 1:
        out.append("inputs come from different data: " + ", ".join(f"{n} from data {fp}" for n, fp in data.items()))
    for message in out:
        warn(message)
    return out
