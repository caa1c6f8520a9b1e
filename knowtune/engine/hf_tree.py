"""`HFTreeEngine`: the exact SliCK sampling engine over any Hugging Face causal LM.

It is exact, not approximate:
* the shared few-shot prefix is prefilled once and its KV cache reused for every prompt;
* prompts are batched, and each sequence stops at its first newline (or EOS / max_new_tokens);
* the N i.i.d. samples are drawn as a tree: at a node reached by n samples, the counts of each
  next token are drawn from Multinomial(n, p) (p after temperature and top-k) and the children are
  expanded recursively. This is the same distribution as N independent ancestral samples, but the
  work grows with the number of *distinct* sampled prefixes, not with N. The greedy path rides
  along in the same tree and shares its forwards.
Each node draws from its own random stream, seeded by (prompt seed, token path), so the result of
a prompt does not depend on what else is in the batch or in what order nodes are expanded.
No library offers exact tree sampling over a shared KV cache, hence this hand-written loop.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from importlib.metadata import version

import numpy as np
import torch
from transformers import DynamicCache

from knowtune.engine.base import (
    Completion,
    EngineInfo,
    EngineStats,
    SamplingParams,
    answer_text,
    common_prefix_len,
    newline_stop_ids,
)
from knowtune.engine.kv_cache import forward_cached


@dataclass
class _Node:
    prompt: int  # index of the prompt in the batch
    path: list[int]  # generated ids so far
    count: int  # samples that pass through this node
    greedy: bool  # whether the greedy path passes through it


class HFTreeEngine:
    """Exact tree sampling with a shared prefix KV cache over a Hugging Face causal LM."""

    def __init__(self, model, tokenizer, batch_size: int = 16):
        self.model, self.tok, self.batch_size = model, tokenizer, batch_size
        self.stop_ids = newline_stop_ids(tokenizer)
        self.stats = EngineStats()
        self.info = EngineInfo("hf", version("knowtune"), reproducible=True)  # node streams seeded per prompt
        self._prefix_cache: dict[tuple[int, ...], tuple[object, int]] = {}

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _prefill_prefixes(self, prefixes: list[tuple[int, ...]]) -> None:
        """KV caches of the prefixes not cached yet in this `batches` call, in one right-padded forward
        (a row's padding comes after its tokens, so they never attend to it)."""
        todo = [p for p in dict.fromkeys(prefixes) if p not in self._prefix_cache]
        if not todo:
            return
        n = max(len(p) for p in todo)
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
        ids = torch.full((len(todo), n), pad, dtype=torch.long)
        mask = torch.zeros((len(todo), n), dtype=torch.long)
        for b, p in enumerate(todo):
            ids[b, : len(p)], mask[b, : len(p)] = torch.tensor(p), 1
        pos = torch.arange(n).expand(len(todo), n)
        _, cache = forward_cached(self.model, DynamicCache(config=self.model.config), input_ids=ids.to(self.device),
                                  attention_mask=mask.to(self.device), position_ids=pos.to(self.device),
                                  use_cache=True, logits_to_keep=1)
        self.stats.prefill_tokens += sum(len(p) for p in todo)
        for b, p in enumerate(todo):
            self._prefix_cache[p] = (cache, b)  # its row in the batch's cache

    @torch.inference_mode()
    def complete(
        self, prefix: str, suffixes: list[str], seeds: list[int], params: SamplingParams
    ) -> list[Completion]:
        """Greedy + n_samples answers for each prompt `prefix + suffix`."""
        return self.complete_prompts([(prefix, s) for s in suffixes], seeds, params)

    @torch.inference_mode()
    def complete_prompts(
        self, prompts: list[tuple[str, str]], seeds: list[int], params: SamplingParams
    ) -> list[Completion]:
        """Greedy + n_samples answers for each prompt (prefix, suffix): prompts under different prefixes (a
        probe's exemplar sets) share batches, so each decoding step runs the model once for all of them."""
        results: list[Completion | None] = [None] * len(prompts)
        for cached, idx, rest in self.batches(prompts):
            for i, c in zip(idx, self._run_batch(cached, rest, [seeds[i] for i in idx], params)):
                results[i] = c
        return results  # type: ignore[return-value]

    def batches(self, prompts: list[tuple[str, str]]):
        """Yield (per prompt its cached prefix ids, prompt indices, per prompt its remaining ids): batches of at
        most `batch_size` prompts, similar lengths together; each distinct prefix is prefilled once."""
        self._prefix_cache.clear()  # prompts arrive grouped by prefixes: keep only the current call's
        prefix_ids = {p: self.tok(p)["input_ids"] if p else [] for p in dict.fromkeys(p for p, _ in prompts)}
        ids = [self.tok(p + s)["input_ids"] for p, s in prompts]
        # BPE can merge across the prefix/suffix boundary ('\n\n' alone vs '\n','\n' before 'Q'), so the
        # cached part of each prompt is its longest common token prefix with its prefix's own tokens.
        splits = [min(common_prefix_len(prefix_ids[p], t), len(t) - 1) for (p, _), t in zip(prompts, ids)]
        order = sorted(range(len(ids)), key=lambda i: (len(ids[i]) - splits[i], splits[i], i))
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            yield [ids[i][: splits[i]] for i in idx], idx, [ids[i][splits[i] :] for i in idx]
        self.stats.prompts += len(prompts)

    def _run_batch(self, prefixes: list[list[int]], suffixes: list[list[int]], seeds: list[int], params: SamplingParams) -> list[Completion]:
        """Prefill the suffixes behind the cached prefix, then expand every prompt's sample tree."""
        B = len(suffixes)
        cache, mask, logits = self.prefill(prefixes, suffixes)
        nodes = [_Node(b, [], params.n_samples, True) for b in range(B)]
        greedy: list[str] = [""] * B
        samples: list[dict[str, int]] = [{} for _ in range(B)]
        while nodes:
            children, parents = self._expand(nodes, logits, seeds, params, greedy, samples)
            if not children:
                break
            self.stats.tree_forwards += len(children)
            cache, mask, logits = self.step(cache, mask, parents, [c.path[-1] for c in children])
            nodes = children
        return [Completion(g, s) for g, s in zip(greedy, samples)]

    def prefill(self, prefixes: list[list[int]], suffixes: list[list[int]]):
        """Run each suffix behind its cached prefix, all as one batch: (cache, attention mask, last logits in float32)."""
        dev, B, L = self.device, len(suffixes), max(len(p) for p in prefixes)
        S = max(len(s) for s in suffixes)
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
        # Prefixes are right-padded and suffixes left-padded, both into the gap between them, so every prompt
        # ends at the last column and each prefix keeps the positions its cache was computed at.
        ids = torch.full((B, S), pad, dtype=torch.long)
        mask = torch.zeros((B, L + S), dtype=torch.long)
        for b, (p, s) in enumerate(zip(prefixes, suffixes)):
            mask[b, : len(p)] = 1
            ids[b, S - len(s) :] = torch.tensor(s)
            mask[b, L + S - len(s) :] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)[:, L:]
        cache = DynamicCache(config=self.model.config)
        if L:
            cache = self._batch_prefix_cache(prefixes, L)
        out, cache = forward_cached(self.model, cache, input_ids=ids.to(dev), attention_mask=mask.to(dev),
                                    position_ids=pos.to(dev), use_cache=True, logits_to_keep=1)
        self.stats.prefill_tokens += sum(len(s) for s in suffixes)
        return cache, mask, out.logits[:, -1, :].float()

    def _batch_prefix_cache(self, prefixes: list[list[int]], L: int):
        """One cache whose row b holds prompt b's prefix cache, zero-padded on the right to length L (masked out)."""
        keys = list(dict.fromkeys(tuple(p) for p in prefixes))
        self._prefill_prefixes(keys)
        parts = [(*self._prefix_cache[k], len(k)) for k in keys]  # (cache, row, length)
        rows = torch.tensor([keys.index(tuple(p)) for p in prefixes], device=self.device)
        # a fresh copy to grow, whatever its layer classes; its tensors are replaced below as
        # `batch_repeat_interleave` would (transformers has no cache merge across prompts)
        cache = copy.deepcopy(parts[0][0])
        part = lambda t, b, n: torch.nn.functional.pad(t[b : b + 1, :, :n], (0, 0, 0, L - n))
        for i, layer in enumerate(cache.layers):
            if not layer.is_initialized:
                continue
            layer.keys = torch.cat([part(c.layers[i].keys, b, n) for c, b, n in parts]).index_select(0, rows)
            layer.values = torch.cat([part(c.layers[i].values, b, n) for c, b, n in parts]).index_select(0, rows)
        return cache

    def step(self, cache, mask: torch.Tensor, parents: list[int], tokens: list[int]):
        """One decoding step: row i continues row `parents[i]` of the cache with `tokens[i]`."""
        dev = self.device
        rows = torch.tensor(parents, device=dev)
        if parents != list(range(mask.shape[0])):
            cache.reorder_cache(rows)
        mask = torch.cat([mask[rows.cpu()], torch.ones((len(tokens), 1), dtype=torch.long)], dim=1)
        pos = mask.sum(-1, keepdim=True) - 1
        out, cache = forward_cached(self.model, cache, input_ids=torch.tensor([[t] for t in tokens], device=dev),
                                    attention_mask=mask.to(dev), position_ids=pos.to(dev), use_cache=True, logits_to_keep=1)
        return cache, mask, out.logits[:, -1, :].float()

    def _expand(self, nodes, logits, seeds, params, greedy, samples) -> tuple[list[_Node], list[int]]:
        """Draw each node's children; finished answers go into `greedy` / `samples`."""
        argmax = logits.argmax(-1).tolist()
        kept = self._sampling_support(logits, params) if params.n_samples else None
        children: list[_Node] = []
        parents: list[int] = []
        for r, node in enumerate(nodes):
            counts: dict[int, int] = {}
            if node.count:
                tok_ids, probs = kept[r]
                # Node-specific stream: independent of batch composition and expansion order.
                rng = np.random.default_rng([seeds[node.prompt], len(node.path), *node.path])
                drawn = rng.multinomial(node.count, probs)
                counts = {int(tok_ids[j]): int(c) for j in np.flatnonzero(drawn) for c in [drawn[j]]}
            if node.greedy:
                counts.setdefault(argmax[r], 0)
            for tok_id, c in counts.items():
                path = node.path + [tok_id]
                is_greedy = node.greedy and tok_id == argmax[r]
                if tok_id in self.stop_ids or len(path) >= params.max_new_tokens:
                    text = answer_text(self.tok, path)
                    if c:
                        samples[node.prompt][text] = samples[node.prompt].get(text, 0) + c
                    if is_greedy:
                        greedy[node.prompt] = text
                else:
                    # independent generations would each run this token through the model
                    self.stats.sample_tokens += c + int(is_greedy)
                    children.append(_Node(node.prompt, path, c, is_greedy))
                    parents.append(r)
        return children, parents

    def _sampling_support(self, logits: torch.Tensor, params: SamplingParams) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per row, the token ids and probabilities after temperature and top-k (ties at the k-th
        logit kept, as transformers' TopKLogitsWarper does), in float64 for the multinomial draw."""
        scaled = logits / params.temperature
        if params.top_k and params.top_k < scaled.shape[-1]:
            kth = scaled.topk(params.top_k, dim=-1).values[:, -1:]
            keep = scaled >= kth
        else:
            keep = torch.ones_like(scaled, dtype=torch.bool)
        out = []
        for r in range(scaled.shape[0]):
            idx = keep[r].nonzero().squeeze(-1)
            p = torch.softmax(scaled[r, idx].double(), -1).cpu().numpy()
            out.append((idx.cpu().numpy(), p / p.sum()))
        return out
