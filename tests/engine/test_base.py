"""Incremental path decoding: equal to the tokenizer's own decode at every step, multi-byte characters included."""

from __future__ import annotations

import random

import pytest
from conftest import bpe_tokenizer

from knowtune.engine.base import PathText, answer_text, byte_pieces

# multi-byte characters (2, 3 and 4 bytes in UTF-8) rare enough in the corpus that BPE splits them across tokens
CORPUS = ["Q: Where is Zürich?\nA: Switzerland\n\n", "Q: What is 東京?\nA: Tokyo\n\n", "Q: Emoji?\nA: 🙂 ok\n\n",
          "Q: What is the capital of Brazil?\nA: Brasília\n\n"] * 10


def walk(texts: PathText, path: list[int]) -> list[str]:
    """The text of every prefix of `path`, grown one token at a time as the exact scorer does."""
    raw, out = b"", []
    for i, token in enumerate(path):
        raw = texts.grow(raw, token)
        out.append(texts.text(path[: i + 1], raw))
    return out


def path_bytes(texts: PathText, path: list[int]) -> bytes:
    raw = b""
    for token in path:
        raw = texts.grow(raw, token)
    return raw


def test_incremental_text_equals_decode_on_split_characters():
    tok = bpe_tokenizer(CORPUS, separate_space=False)
    texts = PathText(tok)
    assert texts.pieces is not None  # a byte-level BPE: the fast path is the one tested
    for word in ("東京", "🙂", "Zürich?\n", " Brasília"):
        ids = tok(word)["input_ids"]
        steps = walk(texts, ids)
        assert steps == [tok.decode(ids[: i + 1], skip_special_tokens=True) for i in range(len(ids))]
        assert steps[-1] == word
    assert any("\ufffd" in t for t in walk(texts, tok("東京")["input_ids"]))  # a character split across tokens
    rng = random.Random(0)
    ids = list(range(len(tok)))  # every id, the special tokens (skipped by decode) included
    for _ in range(300):
        path = [rng.choice(ids) for _ in range(rng.randint(1, 8))]
        steps = walk(texts, path)
        assert steps == [tok.decode(path[: i + 1], skip_special_tokens=True) for i in range(len(path))]
        assert texts.answer(path, path_bytes(texts, path)) == answer_text(tok, path)


def test_added_token_decodes_as_the_tokenizer_does():
    tok = bpe_tokenizer(CORPUS, separate_space=False)
    tok.add_tokens(["<sep>", "ünï"])
    texts = PathText(tok)
    sep, uni = tok.convert_tokens_to_ids(["<sep>", "ünï"])  # 'ünï' maps to bytes that are not UTF-8, as in tokenizers
    for path in ([sep], [uni, sep], tok("Zür")["input_ids"] + [uni], [tok.eos_token_id, uni]):
        assert walk(texts, path)[-1] == tok.decode(path, skip_special_tokens=True)


def test_other_decoders_fall_back_to_full_decode():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "paris": 1, "is": 2, "big": 3}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]")
    texts = PathText(tok)
    assert byte_pieces(tok) is None
    assert walk(texts, [1, 2, 3]) == ["paris", "paris is", "paris is big"]


@pytest.mark.slow
def test_real_tokenizer_takes_the_fast_path_and_agrees():
    """SmolLM2's tokenizer: special tokens beyond the named ones are skipped too, so the byte pieces apply."""
    from knowtune.models import load_model

    tok = load_model("builtin").tokenizer
    texts = PathText(tok)
    assert texts.pieces is not None
    rng = random.Random(1)
    for _ in range(2000):
        path = [rng.randrange(len(tok)) for _ in range(rng.randint(1, 6))]
        assert walk(texts, path)[-1] == tok.decode(path, skip_special_tokens=True)
    ids = tok("Zürich 東京 🙂")["input_ids"]
    assert walk(texts, ids) == [tok.decode(ids[: i + 1], skip_special_tokens=True) for i in range(len(ids))]
