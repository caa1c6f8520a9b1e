"""The sampling-engine interface: one greedy answer and N samples per prompt that shares a prefix.

Probe, evaluation and training all decode through an `Engine`; `ENGINES` names the implementations.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class SamplingParams:
    """Decoding settings for one probe: N samples at temperature T with top-k, plus one greedy."""

    n_samples: int = 16
    temperature: float = 0.5
    top_k: int = 40
    max_new_tokens: int = 24


@dataclass
class Completion:
    """A prompt's greedy answer and its sampled answers with their counts (summing to n_samples)."""

    greedy: str
    samples: dict[str, int]


@dataclass
class EngineStats:
    """Work counters: `tree_forwards` rows actually run in decoding, versus `sample_tokens`, the
    decode forwards that N+1 independent generations of the same answers would have needed."""

    prompts: int = 0
    prefill_tokens: int = 0
    tree_forwards: int = 0
    sample_tokens: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def avoided_share(self) -> float:
        """Share of per-sample token forwards that tree sampling avoided."""
        return 1.0 - self.tree_forwards / self.sample_tokens if self.sample_tokens else 0.0


@dataclass(frozen=True)
class EngineInfo:
    """Which engine ran, its version, its options, and whether a rerun gives the same samples
    (vLLM's per-request seeds are not supported on CPU, so there the samples vary run to run)."""

    name: str
    version: str
    reproducible: bool
    options: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The JSON object run manifests and summaries record under "engine"."""
        return {"name": self.name, "version": self.version, "reproducible": self.reproducible, "options": self.options}


class Engine(Protocol):
    """What the probe needs from a backend: complete prompts that share a prefix."""

    stats: EngineStats
    info: EngineInfo

    def complete(
        self, prefix: str, suffixes: list[str], seeds: list[int], params: SamplingParams
    ) -> list[Completion]:
        """Greedy + n_samples answers for each prompt `prefix + suffix`, using its seed."""
        ...

    def complete_prompts(
        self, prompts: list[tuple[str, str]], seeds: list[int], params: SamplingParams
    ) -> list[Completion]:
        """Greedy + n_samples answers for each prompt (prefix, suffix) under several prefixes, using its seed."""
        ...


_STOP_IDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def newline_stop_ids(tokenizer) -> frozenset[int]:
    """Every vocab id whose text contains a newline, plus EOS: few-shot answers end with '\\n'.
    Cached per tokenizer: decoding the whole vocabulary takes about a second."""
    if tokenizer not in _STOP_IDS:
        ids = {i for tok, i in tokenizer.get_vocab().items() if "\n" in tokenizer.convert_tokens_to_string([tok])}
        eos = tokenizer.eos_token_id
        ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        _STOP_IDS[tokenizer] = frozenset(ids)
    return _STOP_IDS[tokenizer]


def answer_text(tokenizer, ids: list[int]) -> str:
    """Decode generated ids and keep the first line: the answer as the prompt format defines it."""
    return tokenizer.decode(ids, skip_special_tokens=True).split("\n")[0].strip()


def common_prefix_len(a: list[int], b: list[int]) -> int:
    """Length of the longest common prefix of two id lists."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


_PIECES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def byte_pieces(tokenizer) -> tuple[bytes, ...] | None:
    """Per vocab id, the bytes it adds to `decode(ids, skip_special_tokens=True)` under a byte-level BPE decoder
    (which joins the tokens' bytes and decodes them as UTF-8, replacing what is invalid); None for another decoder.
    Cached per tokenizer."""
    if tokenizer not in _PIECES:
        from tokenizers import decoders
        from transformers.convert_slow_tokenizer import bytes_to_unicode

        backend = getattr(tokenizer, "backend_tokenizer", None)
        pieces = None
        if isinstance(getattr(backend, "decoder", None), decoders.ByteLevel) and not tokenizer.clean_up_tokenization_spaces:
            to_byte = {ord(ch): b for b, ch in bytes_to_unicode().items()}
            byte_chars = {chr(c) for c in to_byte}
            # what decode skips: the tokens the backend marks special (not only transformers' named ones)
            special = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
            # As the ByteLevel decoder does: a token's characters map back to bytes, or, when one of them is not a
            # byte character (an added token), the token's own UTF-8.
            pieces = tuple(
                b"" if i in special or tok is None
                else tok.translate(to_byte).encode("latin-1") if byte_chars.issuperset(tok) else tok.encode()
                for i, tok in enumerate(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))))
            # added tokens are the ones a tokenizer may treat apart: refuse the shortcut if one decodes otherwise
            if any(tokenizer.decode([i], skip_special_tokens=True) != pieces[i].decode(errors="replace")
                   for i in tokenizer.added_tokens_decoder if i < len(pieces)):
                pieces = None
        _PIECES[tokenizer] = pieces
    return _PIECES[tokenizer]


class PathText:
    """`tokenizer.decode(path, skip_special_tokens=True)` for token paths that grow one token at a time: a path
    carries its bytes, so a child's text costs one UTF-8 decode of a few dozen bytes instead of a tokenizer call
    (hand-written: tokenizers has no incremental decode from Python). Any decoder other than byte-level BPE's
    falls back to decoding the whole path."""

    def __init__(self, tokenizer):
        self.tok, self.pieces = tokenizer, byte_pieces(tokenizer)

    def grow(self, raw: bytes, token: int) -> bytes:
        """The bytes of a path after appending `token` to a path whose bytes are `raw`."""
        if self.pieces is None:
            return b""
        return raw + (self.pieces[token] if token < len(self.pieces) else b"")  # decode skips an id it lacks

    def text(self, path: list[int], raw: bytes) -> str:
        """The decoded text of `path`, whose bytes are `raw`."""
        if self.pieces is None:
            return self.tok.decode(path, skip_special_tokens=True)
        return raw.decode("utf-8", errors="replace")

    def answer(self, path: list[int], raw: bytes) -> str:
        """`answer_text` of `path`."""
        return self.text(path, raw).split("\n")[0].strip()
