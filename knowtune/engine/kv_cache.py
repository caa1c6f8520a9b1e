"""A forward with a KV cache, under whichever name the installed transformers gives the cache.

Recent transformers 5.x (5.24 here) name the forward's KV cache `cache`; `past_key_values` still
works there but warns, and goes in 5.40. vLLM 0.32's CPU build pins transformers < 5.20, which knows
only `past_key_values`, and its environment runs the hf engine beside vLLM to compare them. So the
name is read once from the installed output class instead of capping the range at either end.
"""

from __future__ import annotations

from transformers.modeling_outputs import CausalLMOutputWithPast

CACHE_ARG = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


def forward_cached(model, cache, **inputs):
    """`model(**inputs)` with `cache` (a transformers Cache, or None) passed under the installed name:
    (the output, the cache it returns)."""
    out = model(**inputs, **{CACHE_ARG: cache})
    return out, getattr(out, CACHE_ARG)
