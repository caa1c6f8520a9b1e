"""Sampling engines behind one interface (`Engine`), found by name in `ENGINES`.

The interface and its records import no torch; an engine's module is imported when it is first used,
so reading settings (the CLI's help, a study's config) stays fast.
"""

from __future__ import annotations

import importlib

from knowtune.engine.base import (
    Completion,
    Engine,
    EngineStats,
    SamplingParams,
    answer_text,
    common_prefix_len,
    newline_stop_ids,
)

ENGINES = {"hf": "knowtune.engine.hf_tree:HFTreeEngine"}  # name → module:class


def engine_class(name: str) -> type:
    """The engine class registered as `name`."""
    module, _, cls = ENGINES[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def __getattr__(name: str):  # `from knowtune.engine import HFTreeEngine` imports torch only then
    if name == "HFTreeEngine":
        return engine_class("hf")
    raise AttributeError(name)


__all__ = ["ENGINES", "Completion", "Engine", "EngineStats", "HFTreeEngine", "SamplingParams", "answer_text",
           "common_prefix_len", "engine_class", "newline_stop_ids"]
