"""Training-set fit in one forward pass: greedy generation reproduces a label exactly when, under
teacher forcing, the argmax at every label position is the label token and then a stop token."""

from __future__ import annotations

import weakref

import torch

from knowtune.engine import newline_stop_ids

_CLEAN: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def clean_stop_ids(tokenizer) -> frozenset[int]:
    """Stop tokens with nothing but whitespace before their newline (and EOS): generating one of
    them ends the answer without adding text to it. Cached per tokenizer."""
    if tokenizer not in _CLEAN:
        _CLEAN[tokenizer] = frozenset(
            i for i in newline_stop_ids(tokenizer)
            if "\n" not in (text := tokenizer.decode([i])) or not text.split("\n")[0].strip()
        )
    return _CLEAN[tokenizer]


def encode_pair(tokenizer, prompt: str, target: str) -> tuple[list[int], int]:
    """Token ids of prompt + target and the index where the target's tokens start (BPE may merge
    across the boundary, so the split is the longest common prefix with the prompt's own ids)."""
    full = tokenizer(prompt + target)["input_ids"]
    head = tokenizer(prompt)["input_ids"]
    n = 0
    while n < min(len(head), len(full) - 1) and head[n] == full[n]:
        n += 1
    return full, n


# A row whose bf16 top-two margin at every target position is at least this is kept, else recomputed in float32.
# A margin m cannot flip when every logit moves by less than m/2, so this certifies float32's fit wherever bf16
# autocast moves no logit by 1.25 or more: bench/bf16_margin.py measured at most 1.15 on the builtin model
# (300 rows). There nearly every row has a margin below it and is recomputed, so `fit_bf16` is slower than
# float32; it pays only for a model whose answers are confident.
BF16_MARGIN = 2.5


@torch.inference_mode()
def teacher_forced_fit(model, tokenizer, pairs: list[tuple[str, str]], batch_size: int = 16, bf16: bool = False) -> list[bool]:
    """For each (prompt, target ending in a newline): does greedy decoding reproduce the target?
    With `bf16`, the forward runs under bfloat16 autocast and near-tie rows are recomputed in float32."""
    stops = torch.tensor(sorted(clean_stop_ids(tokenizer)))
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id or 0
    encoded = [encode_pair(tokenizer, p, t) for p, t in pairs]
    # Batches of similar length waste less compute on padding; results go back in input order.
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
    out: list[bool] = [False] * len(encoded)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        chunk = [encoded[i] for i in rows]
        width = max(len(ids) for ids, _ in chunk)
        n_label = max(len(ids) - s for ids, s in chunk)
        # Left padding puts every sequence's end in the last column, so only the last n_label + 1
        # positions need logits (the vocabulary projection is a large share of the cost).
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for b, (seq, _) in enumerate(chunk):
            ids[b, width - len(seq) :] = torch.tensor(seq)
            mask[b, width - len(seq) :] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        forward = lambda r, low: _logits(model, ids[r], mask[r], pos[r], n_label + 1, device, low)
        logits = forward(slice(None), bf16)
        if bf16:
            top2 = logits.topk(2, dim=-1).values
            margin = (top2[..., 0] - top2[..., 1]).cpu()
            unsure = [b for b, (seq, split) in enumerate(chunk) if margin[b, n_label - (len(seq) - split) : n_label].min() < BF16_MARGIN]
            if unsure:
                logits[unsure] = forward(torch.tensor(unsure), False)
        pred = logits.argmax(-1).cpu()  # pred[:, j] predicts the token after column width - n_label - 1 + j
        for b, (seq, split) in enumerate(chunk):
            label = torch.tensor(seq[split:])
            guess = pred[b, pred.shape[1] - 1 - len(label) : pred.shape[1] - 1]
            ok = bool((guess[:-1] == label[:-1]).all())
            last = int(guess[-1])
            ok = ok and (last == int(label[-1]) or (int(label[-1]) in stops and last in stops))
            out[rows[b]] = ok
    return out


def _logits(model, ids, mask, pos, keep: int, device, bf16: bool) -> torch.Tensor:
    """Float32 logits of the last `keep` positions, the forward under bfloat16 autocast when `bf16`."""
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        out = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=pos.to(device),
                    use_cache=False, logits_to_keep=keep)
    return out.logits.float()
