"""Sampling engines behind one interface (`Engine`), found by name in `ENGINES`.

The interface and its records import no torch; an engine's module is imported when it is first used,
so reading settings (the CLI's help, a study's config) stays fast, and vllm (an optional extra) is
imported only when `--engine vllm` asks for it.
"""

from __future__ import annotations

import importlib

from knowtune.engine.base import (
    Completion,
    Engine,
    EngineInfo,
    EngineStats,
    SamplingParams,
    answer_text,
    common_prefix_len,
    newline_stop_ids,
)
from knowtune.engine.options import engine_options

# name → module:class
ENGINES = {"hf": "knowtune.engine.hf_tree:HFTreeEngine", "vllm": "knowtune.engine.vllm_engine:VLLMEngine"}


def engine_class(name: str) -> type:
    """The engine class registered as `name`."""
    module, _, cls = ENGINES[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def vllm_engine(spec: str, options, seed: int = 0, trust_remote_code: bool = False) -> tuple[Engine, dict]:
    """A vLLM engine on the model `spec` names (resolved as `load_model` resolves it, so 'builtin' and a
    .gguf load their cached safetensors directory), and the model's summary for run manifests."""
    from knowtune.models import describe_source, resolve

    source, _, fp = resolve(spec)
    engine = engine_class("vllm")(source, options, seed=seed, trust_remote_code=trust_remote_code)
    return engine, describe_source(spec, source, fp, options.dtype)


def __getattr__(name: str):  # `from knowtune.engine import HFTreeEngine` imports torch only then
    if name == "HFTreeEngine":
        return engine_class("hf")
    raise AttributeError(name)


__all__ = ["ENGINES", "Completion", "Engine", "EngineInfo", "EngineStats", "HFTreeEngine", "SamplingParams", "answer_text",
           "common_prefix_len", "engine_class", "engine_options", "newline_stop_ids", "vllm_engine"]
