"""The `cloze` scoring protocol of the multiple-choice probe: each option scored by its likelihood as the
answer, as lm-evaluation-harness scores small models and MMLU's continuation variant.

Prompt (the closed-book QA format of data/formats.py, k-shot, exemplars from the question's subject pool:
a builtin relation's exemplar split, MMLU's dev questions of the subject):
    per exemplar "Q: {question}\\nA: {gold option}\\n\\n", then "Q: {question}\\nA:".
Option i's score is the summed log-probability of the continuation " {option}\\n" (the option's tokens and
the newline that ends an answer in this format), or with `cloze_norm: mean` its mean per token; the option
probabilities are the softmax over the four scores.

Tokenisers differ in where the space before the option goes (merged into its first token, a token of its
own, glued to the colon), so the continuation is never tokenised alone: prompt + continuation is tokenised
once and the continuation's tokens are those that reach past the prompt's last character (by offsets).
"""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

from knowtune.data.formats import qa_demo, qa_prompt
from knowtune.data.multiple_choice import MCDataset, MCQuestion
from knowtune.engine import common_prefix_len
from knowtune.errors import KnowtuneError
from knowtune.probe.multiple_choice import (
    check_length,
    exemplar_sets,
    forward_tails,
    prefix_batches,
)

CLOZE_NORMS = ("sum", "mean")


def cloze_prompt(exemplars: list[MCQuestion], q: MCQuestion) -> str:
    """The k-shot QA prompt for one question: exemplars answered with their gold option, then `Q: …\\nA:`."""
    return "".join(qa_demo(e.question, e.options[e.answer]) for e in exemplars) + qa_prompt(q.question)


def cloze_prompts(data: MCDataset, questions: list[MCQuestion], k_shot: int = 5, seed: int = 0) -> list[str]:
    """The cloze prompt of each question; the exemplars are the ones the letter protocol would show."""
    return [cloze_prompt(ex, q) for ex, q in zip(exemplar_sets(data, questions, k_shot, seed), questions)]


def continuation(option: str) -> str:
    """What an option adds to the prompt when it is the answer: a space, the option, the newline."""
    return f" {option}\n"


def continuation_inputs(tokenizer, prompts: list[str], options: list[tuple[str, ...]]) -> tuple[list[list[int]], list[int]]:
    """Per (question, option) row, question-major: the ids of prompt + continuation, cut after the
    continuation's last token, and how many of its last ids are the continuation (see the module docstring)."""
    texts = [p + continuation(o) for p, opts in zip(prompts, options) for o in opts]
    bounds = [len(p) for p, opts in zip(prompts, options) for _ in opts]
    try:
        enc = tokenizer(texts, return_offsets_mapping=True)
    except (NotImplementedError, ValueError, TypeError):  # slow (Python) tokenizers give no offsets
        raise KnowtuneError("cloze scoring needs a fast tokenizer (one that returns character offsets); "
                            "use --scoring letter with this model") from None
    seqs, lengths = [], []
    for ids, offsets, bound, text in zip(enc["input_ids"], enc["offset_mapping"], bounds, texts):
        inside = [t for t, (_, end) in enumerate(offsets) if end > bound]  # tokens holding continuation text
        if not inside or inside[0] == 0 or inside != list(range(inside[0], inside[-1] + 1)):
            raise KnowtuneError(f"cannot score the option in {text[-40:]!r} with this tokenizer: its continuation "
                                "tokens do not follow the prompt's tokens")
        seqs.append(ids[: inside[-1] + 1])
        lengths.append(len(inside))
    return seqs, lengths


def _contexts(seqs: list[list[int]], lengths: list[int], width: int) -> list[list[int]]:
    """Per question, the tokens all its option rows share before any row's continuation starts."""
    out = []
    for i in range(0, len(seqs), width):
        rows = range(i, i + width)
        n = min(len(seqs[r]) - lengths[r] for r in rows)
        out.append(seqs[i][: min([n, *(common_prefix_len(seqs[i], seqs[r]) for r in rows)])])
    return out


def continuation_logprobs(model, tokenizer, seqs: list[list[int]], lengths: list[int],
                          batch_size: int = 32, progress: bool = False, rows_per_question: int = 4) -> np.ndarray:
    """Per row, the log-probability of each of its last `lengths` ids given everything before it, summed
    and counted: shape (rows, 2) = (sum, number of tokens). Rows come `rows_per_question` per question.
    A batch of questions runs in two forwards: the questions' contexts behind their shared k-shot prefix
    (cached across batches, see `forward_tails`), then each option's tokens behind its question's cached
    context, so neither the exemplars nor a question's own tokens run once per option."""
    import torch  # here, not at the top: the prompt builders of this module are read without torch

    from knowtune.engine.kv_cache import forward_cached

    check_length(model, seqs)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    width = rows_per_question
    contexts = _contexts(seqs, lengths, width)
    out = np.zeros((len(seqs), 2))
    prefixes: dict = {}  # the last k-shot prefix's KV cache, reused by the batches that follow
    with torch.inference_mode():
        for qs in tqdm(prefix_batches(contexts, batch_size), desc="mc cloze", disable=not progress):
            first, cache, mask = forward_tails(model, [contexts[i] for i in qs], pad, 1, prefixes, want_cache=True)
            cache.batch_repeat_interleave(width)
            rows = [width * i + j for i in qs for j in range(width)]
            rests = [seqs[r][len(contexts[r // width]) :] for r in rows]
            wide = max(map(len, rests))
            device = first.device
            # options are right-padded: nothing real comes after the padding, so no real token attends to it
            ids = torch.full((len(rows), wide), pad, dtype=torch.long)
            rest_mask = torch.zeros((len(rows), wide), dtype=torch.long)
            for b, rest in enumerate(rests):
                ids[b, : len(rest)] = torch.tensor(rest)
                rest_mask[b, : len(rest)] = 1
            pos = mask.sum(-1).repeat_interleave(width)[:, None] + torch.arange(wide)[None, :]
            logits = forward_cached(
                model, cache, input_ids=ids.to(device), position_ids=pos.to(device), use_cache=True,
                attention_mask=torch.cat([mask.repeat_interleave(width, 0), rest_mask], 1).to(device),
            )[0].logits.float()
            for b, (r, rest) in enumerate(zip(rows, rests)):
                m = lengths[r]
                # the context's last logits predict the row's first token after it; each row token the next
                predicting = torch.cat([first[b // width, -1:].float(), logits[b, : len(rest) - 1]])[-m:]
                logp = torch.log_softmax(predicting, dim=-1)
                target = torch.tensor(rest[-m:], device=device)
                out[r] = (logp.gather(1, target[:, None]).double().sum().item(), m)
    return out


def cloze_scores(model, tokenizer, prompts: list[str], options: list[tuple[str, ...]], norm: str = "sum",
                 batch_size: int = 8, progress: bool = False) -> np.ndarray:
    """Each option's cloze score after its prompt, shape (len(prompts), options per question)."""
    if norm not in CLOZE_NORMS:
        raise KnowtuneError(f"unknown cloze normalisation {norm!r}; use {' or '.join(CLOZE_NORMS)}")
    if not prompts:
        return np.zeros((0, 4))
    width = len(options[0])
    seqs, lengths = continuation_inputs(tokenizer, prompts, options)
    logprobs = continuation_logprobs(model, tokenizer, seqs, lengths, batch_size, progress, width)
    scores = logprobs[:, 0] if norm == "sum" else logprobs[:, 0] / logprobs[:, 1]
    return scores.reshape(len(prompts), width)


def cloze_probe_scores(model, tokenizer, data: MCDataset, questions: list[MCQuestion], k_shot: int, seed: int,
                       batch_size: int, progress: bool, norm: str) -> np.ndarray:
    """The cloze scores of the four options of every question, (len(questions), 4)."""
    prompts = cloze_prompts(data, questions, k_shot, seed)
    return cloze_scores(model, tokenizer, prompts, [q.options for q in questions], norm, batch_size, progress)
