"""Exact SliCK sampling probabilities without drawing samples (the `exact` estimator).

For each prompt, p = the probability that ONE sample (temperature T, top-k, stop at a newline or
after max_new_tokens) is a gold answer under `matching.is_correct`. It is computed under teacher
forcing by walking the tree of continuations that can still become a gold answer: a node's children
are the tokens of its top-k support (probability softmax(logits/T) over the top-k, zero outside), a
finished child adds its path probability to p when its answer matches, and an unfinished child is
kept only while its text can still lead to an alias (`on_gold_path`). This sums over every
tokenisation of every surface form the filter admits, not just the canonical one. The greedy path
rides along in the same batched tree, so one pass gives P(T=0)'s greedy answer and p.

What it cannot see: a correct answer whose text leaves `on_gold_path` on the way. The filter
compares the text so far with the aliases modulo case, punctuation, whitespace and articles (the
normalisation, applied to prefixes), so that happens only where the normalisation is not prefix-wise:
NFKC composing a character across a token boundary (a base letter, then a combining accent in the
next token) or a lower-case mapping that changes length. bench/exact_agreement.py measures the share
of sampled correct answers the filter would have cut. Hand-written: no library computes the probability of
a set of strings under a sampler with stopping; HF's `compute_transition_scores` scores one sequence.
"""

from __future__ import annotations

import functools
import unicodedata
from dataclasses import dataclass

import torch

from knowtune.engine.base import PathText, SamplingParams, answer_text
from knowtune.engine.hf_tree import HFTreeEngine
from knowtune.matching import ARTICLES, normalize_answer, strip_punctuation


def surface_key(text: str) -> str:
    """NFKC, lower-case, no punctuation, no whitespace: `normalize_answer` before article removal,
    without its spaces. A character-wise map, so a text's prefix maps to a prefix of its key."""
    return "".join(strip_punctuation(unicodedata.normalize("NFKC", text).lower()).split())


def gold_keys(aliases: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Keys of each alias as written and as normalised (articles dropped), each bare or after a leading article."""
    forms = {surface_key(a) for alias in aliases for a in (alias, normalize_answer(alias))}
    return tuple(sorted({art + f for f in forms if f for art in ("", "the", "a", "an")}))


def prefix_keys(text: str) -> set[str]:
    """Keys of a generation's text so far: with its articles, without them, and without a trailing word
    that may yet become an article ('th'). One trailing U+FFFD is an incomplete UTF-8 character (the
    decoder replaces an unfinished tail by one), ignored until its bytes are complete."""
    text = strip_punctuation(unicodedata.normalize("NFKC", text.split("\n")[0].removesuffix("\ufffd")).lower())
    words = ARTICLES.sub(" ", text).split()
    keys = {"".join(text.split()), "".join(words)}
    if words and not text[-1:].isspace() and any(a.startswith(words[-1]) for a in ("the", "an")):
        keys.add("".join(words[:-1]))
    return keys


@functools.lru_cache(maxsize=1 << 16)  # a question's exemplar sets visit mostly the same texts
def on_gold_path(text: str, keys: tuple[str, ...]) -> bool:
    """Can a generation that starts with `text` still end as an answer that normalises to an alias?"""
    return any(g.startswith(k) for k in prefix_keys(text) for g in keys)


@dataclass
class _Node:
    prompt: int
    path: list[int]
    prob: float  # probability of this path under the sampler (0 for a greedy-only node)
    greedy: bool
    raw: bytes = b""  # the path's decoded bytes (`PathText`)


@dataclass
class ExactCompletion:
    """A prompt's greedy answer and the probability that one sample is a gold answer: p_gold, and at most
    `pruned` more (the mass of paths below the floor that were still on a gold path)."""

    greedy: str
    p_gold: float
    pruned: float = 0.0


class ExactScorer:
    """Greedy answers and exact gold probabilities, reusing an `HFTreeEngine`'s prefix cache and batching."""

    def __init__(self, engine: HFTreeEngine, min_path_prob: float = 1e-5):
        # A path less likely than the floor is not expanded and its mass is reported as `pruned`, so p_gold
        # is exact to within it. The floor bounds the tree: without it, a model that wanders through
        # punctuation or whitespace after an alias ("Nuuk.", "Nuuk -") keeps thousands of tiny paths open.
        self.engine, self.min_path_prob = engine, min_path_prob
        # the filter decodes every top-k child of every node: incrementally, from the parent's bytes
        self.texts = PathText(engine.tok)

    def score(
        self, prefix: str, suffixes: list[str], answers: list[tuple[str, ...]], params: SamplingParams
    ) -> list[ExactCompletion]:
        """For each prompt `prefix + suffix` with gold `answers[i]`: greedy answer and p_gold."""
        return self.score_prompts([(prefix, s) for s in suffixes], answers, params)

    @torch.inference_mode()
    def score_prompts(
        self, prompts: list[tuple[str, str]], answers: list[tuple[str, ...]], params: SamplingParams
    ) -> list[ExactCompletion]:
        """For each prompt (prefix, suffix) with gold `answers[i]`: greedy answer and p_gold; prompts under
        different prefixes share batches, as in `HFTreeEngine.complete_prompts`."""
        results: list[ExactCompletion | None] = [None] * len(prompts)
        for cached, idx, rest in self.engine.batches(prompts):
            for i, c in zip(idx, self._run_batch(cached, rest, [answers[i] for i in idx], params)):
                results[i] = c
        return results  # type: ignore[return-value]

    def _run_batch(self, prefixes, suffixes, answers, params) -> list[ExactCompletion]:
        eng, texts = self.engine, self.texts
        keys = [gold_keys(a) for a in answers]
        gold = [{normalize_answer(a) for a in aliases} for aliases in answers]  # is_correct, aliases normalised once
        cache, mask, logits = eng.prefill(prefixes, suffixes)
        nodes = [_Node(b, [], 1.0, True) for b in range(len(suffixes))]
        greedy, p_gold, pruned = [""] * len(suffixes), [0.0] * len(suffixes), [0.0] * len(suffixes)
        while nodes:
            children, parents = [], []
            argmax = logits.argmax(-1).tolist()
            support = eng._sampling_support(logits, params)
            for r, node in enumerate(nodes):
                kids: dict[int, _Node] = {}
                if node.prob > 0.0:
                    for tok_id, q in zip(support[r][0].tolist(), support[r][1].tolist()):
                        path, raw = node.path + [tok_id], texts.grow(node.raw, tok_id)
                        if tok_id in eng.stop_ids or len(path) >= params.max_new_tokens:
                            if normalize_answer(texts.answer(path, raw)) in gold[node.prompt]:
                                p_gold[node.prompt] += node.prob * q
                        elif on_gold_path(texts.text(path, raw), keys[node.prompt]):
                            if node.prob * q >= self.min_path_prob:
                                kids[tok_id] = _Node(node.prompt, path, node.prob * q, False, raw)
                            else:
                                pruned[node.prompt] += node.prob * q
                if node.greedy:
                    path = node.path + [argmax[r]]
                    if argmax[r] in eng.stop_ids or len(path) >= params.max_new_tokens:
                        greedy[node.prompt] = answer_text(eng.tok, path)
                    else:
                        kid = _Node(node.prompt, path, 0.0, False, texts.grow(node.raw, argmax[r]))
                        kids.setdefault(argmax[r], kid).greedy = True
                for kid in kids.values():
                    children.append(kid)
                    parents.append(r)
            if not children:
                break
            eng.stats.tree_forwards += len(children)
            cache, mask, logits = eng.step(cache, mask, parents, [c.path[-1] for c in children])
            nodes = children
        return [ExactCompletion(g, min(p, 1.0), x) for g, p, x in zip(greedy, p_gold, pruned)]
