"""Shared fixtures: a tiny randomly initialised Llama with a real BPE tokenizer, built in seconds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(os.environ.get("KNOWTUNE_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def _tiny_tokenizer():
    """A byte-level BPE tokenizer trained in-process on a few lines (no hub, no files)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [
        "Q: What is the capital of France?\nA: Paris\n\n",
        "Q: Which country is Lyon located in?\nA: France\n\n",
        "Q: What is the chemical symbol of gold?\nA: Au\n\n",
        "Q: What is the official language of Brazil?\nA: Portuguese\n\n",
    ] * 20
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<eos>", "<pad>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>")


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return _tiny_tokenizer()


def make_tiny_model(tokenizer, seed: int = 0, sharpness: float = 1.0):
    """A 2-layer Llama with random weights; `sharpness` scales the output layer (peakier distributions)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(sharpness)
    return model


@pytest.fixture(scope="session")
def tiny_model(tiny_tokenizer):
    return make_tiny_model(tiny_tokenizer, sharpness=30.0)
