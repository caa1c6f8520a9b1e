"""The KV cache goes to the forward under the name the installed transformers uses, and comes back."""

from __future__ import annotations

import inspect
import warnings

import torch
from conftest import make_tiny_model
from transformers import DynamicCache
from transformers.models.llama.modeling_llama import LlamaForCausalLM

from knowtune.engine.kv_cache import CACHE_ARG, forward_cached


def test_the_name_is_the_installed_forwards():
    assert CACHE_ARG in inspect.signature(LlamaForCausalLM.forward).parameters


def test_a_cached_continuation_equals_the_full_forward(tiny_tokenizer):
    model = make_tiny_model(tiny_tokenizer, seed=3)
    ids = torch.tensor([[5, 9, 14, 3, 7]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the old name would warn on recent transformers
        _, cache = forward_cached(model, DynamicCache(config=model.config), input_ids=ids[:, :3], use_cache=True)
        out, cache = forward_cached(model, cache, input_ids=ids[:, 3:], use_cache=True)
    assert cache.get_seq_length() == 5
    torch.testing.assert_close(out.logits, model(input_ids=ids).logits[:, 3:], atol=1e-5, rtol=0)
