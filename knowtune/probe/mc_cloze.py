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
from knowtune.errors import KnowtuneError
from knowtune.probe.multiple_choice import (
    check_length,
    exemplar_sets,
    prefix_batches,
    tail_logits,
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


def continuation_logprobs(model, tokenizer, seqs: list[list[int]], lengths: list[int],
                          batch_size: int = 32, progress: bool = False, rows_per_question: int = 4) -> np.ndarray:
    """Per row, the log-probability of each of its last `lengths` ids given everything before it, summed
    and counted: shape (rows, 2) = (sum, number of tokens). Rows are batched `rows_per_question` at a time
    (one question's options together), prompts sharing a k-shot prefix share batches and its KV cache."""
    import torch  # here, not at the top: the prompt builders of this module are read without torch

    check_length(model, seqs)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    n_questions = len(seqs) // rows_per_question
    # a question's rows share its context; batch questions by that context's tokens, as the letter probe does
    contexts = [seqs[rows_per_question * i][: -lengths[rows_per_question * i]] for i in range(n_questions)]
    out = np.zeros((len(seqs), 2))
    with torch.inference_mode():
        for qs in tqdm(prefix_batches(contexts, batch_size), desc="mc cloze", disable=not progress):
            rows = [rows_per_question * i + j for i in qs for j in range(rows_per_question)]
            keep = max(lengths[r] for r in rows) + 1
            logits = tail_logits(model, [seqs[r] for r in rows], pad, keep).float()
            for b, r in enumerate(rows):
                m = lengths[r]
                # logits at column c predict the token at column c + 1: the last m tokens come from the m before
                logp = torch.log_softmax(logits[b, keep - 1 - m : keep - 1], dim=-1)
                target = torch.tensor(seqs[r][-m:], device=logp.device)
                out[r] = (logp.gather(1, target[:, None]).double().sum().item(), m)
    return out


def cloze_scores(model, tokenizer, prompts: list[str], options: list[tuple[str, ...]], norm: str = "sum",
                 batch_size: int = 8, progress: bool = False) -> np.ndarray:
    """Each option's cloze score after its prompt, shape (len(prompts), options per question)."""
    if norm not in CLOZE_NORMS:
        raise KnowtuneError(f"unknown cloze normalisation {norm!r}; use {' or '.join(CLOZE_NORMS)}")
    width = len(options[0]) if options else 0
    seqs, lengths = continuation_inputs(tokenizer, prompts, options)
    logprobs = continuation_logprobs(model, tokenizer, seqs, lengths, batch_size, progress, width)
    scores = logprobs[:, 0] if norm == "sum" else logprobs[:, 0] / logprobs[:, 1]
    return scores.reshape(len(prompts), width)


def cloze_probe_scores(model, tokenizer, data: MCDataset, questions: list[MCQuestion], k_shot: int, seed: int,
                       batch_size: int, progress: bool, norm: str) -> np.ndarray:
    """The cloze scores of the four options of every question, (len(questions), 4)."""
    prompts = cloze_prompts(data, questions, k_shot, seed)
    return cloze_scores(model, tokenizer, prompts, [q.options for q in questions], norm, batch_size, progress)
