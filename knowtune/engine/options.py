"""Choosing an engine by name and checking its options: `--engine NAME --engine-set key=value`.

Each engine has a typed options record; an option an engine does not take is refused (a vLLM
option given to the hf engine would otherwise be silently ignored). No torch or vllm import here.
"""

from __future__ import annotations

import importlib.util

from pydantic import BaseModel, ConfigDict, Field

from knowtune.errors import ConfigError
from knowtune.settings import parse_overrides, validated, with_overrides

VLLM_HINT = 'pip install "knowtune[vllm]" (CPU: bash scripts/setup.sh vllm)'


class HFEngineOptions(BaseModel):
    """The hf tree engine takes no engine options: batch size and dtype are the command's own."""

    model_config = ConfigDict(extra="forbid")


class VLLMEngineOptions(BaseModel):
    """vLLM's `LLM(...)` arguments knowtune passes through; the rest keep vLLM's defaults."""

    model_config = ConfigDict(extra="forbid")

    tensor_parallel_size: int = Field(1, ge=1, description="GPUs one model is split across")
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1, description="share of GPU memory (on CPU: of RAM) vLLM "
                                                 "reserves; None: 0.9 on GPU, 0.2 on CPU, whose RAM the machine shares")
    max_model_len: int | None = Field(None, ge=1, description="context length (None: the model's)")
    dtype: str = Field("float32", description="weights and activations: float32, bfloat16, float16 or auto")
    enforce_eager: bool | None = Field(None, description="skip graph capture / compilation (None: on for CPU)")


OPTIONS: dict[str, type[BaseModel]] = {"hf": HFEngineOptions, "vllm": VLLMEngineOptions}


def engine_options(name: str, pairs: list[str], dtype: str | None = None) -> BaseModel:
    """The options of engine `name` from `key=value` pairs (`dtype`: the command's --dtype, a default the
    pairs may override); an unknown engine or vllm without its package is one line listing the engines."""
    from knowtune.engine import ENGINES

    engines = ", ".join(ENGINES)
    if name not in ENGINES:
        raise ConfigError(f"--engine {name!r}: no such engine; choose one of {engines}")
    if name == "vllm" and importlib.util.find_spec("vllm") is None:
        raise ConfigError(f"--engine vllm: the vllm package is not installed ({VLLM_HINT}); engines: {engines}")
    tree = with_overrides({}, parse_overrides(pairs))
    options = OPTIONS[name]
    if "dtype" in options.model_fields and dtype is not None:
        tree.setdefault("dtype", dtype)
    if tree.get("data_parallel_size", 1) != 1:
        # vLLM 0.32 raises for LLM(data_parallel_size>1) in one process; shards keep resume and provenance per run
        raise ConfigError(f"--engine-set data_parallel_size={tree['data_parallel_size']}: vLLM runs data parallel only "
                          "across processes; run one probe per replica with --shard i/n and join them with knowtune probe-merge")
    tree.pop("data_parallel_size", None)
    if name == "hf" and tree:
        raise ConfigError(f"--engine-set {next(iter(tree))}: the hf engine takes no engine options "
                          f"(vllm takes {', '.join(VLLMEngineOptions.model_fields)})")
    return validated(options, tree, f"{name} engine options")
