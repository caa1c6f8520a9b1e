"""The multiple-choice probe of Ren et al. 2024 and their knowledge-consistency measure; this module is the
`letter` scoring protocol and what both protocols share (`cloze`: probe/mc_cloze.py, chosen in `probe_mc`).

Prompt (MMLU style, k-shot, default k=5):
    "The following are multiple choice questions (with answers) about {topic}.\\n\\n"
    + per exemplar "{question}\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer: {letter}\\n\\n"
    + the probed question in the same form, ending with "Answer:".
Exemplars come from the same subject's exemplar pool (MMLU: the dev split), drawn from the seed and
the subject alone, never the probed question itself. The prediction is the argmax over the four
option letters' next-token logits at the answer position; the option probabilities are the softmax
over those four logits.

Which token is "the letter" depends on the tokenizer: most BPE vocabularies have " A" (space and
letter) as one token, others split off the space. Rather than guess, each prompt is tokenised with
" A" … " D" appended: the four encodings must share every token but the last, and that shared stem
is what the model reads; the four last tokens are the letters. This covers a merged " A", a separate
space token, and a colon that merges with the space, and fails loudly for anything else.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from knowtune.data.multiple_choice import LETTERS, MCDataset, MCQuestion
from knowtune.engine import common_prefix_len
from knowtune.errors import ConfigError, KnowtuneError
from knowtune.files import stable_int
from knowtune.probe.config import MCScoring

if TYPE_CHECKING:
    import torch

HEADER = "The following are multiple choice questions (with answers) about {topic}.\n\n"
CHANCE = 1 / len(LETTERS)


def question_block(q: MCQuestion) -> str:
    """The question, its lettered options and the answer cue: `...\\nD. ..\\nAnswer:`."""
    options = "".join(f"\n{letter}. {text}" for letter, text in zip(LETTERS, q.options))
    return f"{q.question}{options}\nAnswer:"


def exemplar_block(q: MCQuestion) -> str:
    """A demonstration: the question block, then ` {letter}\\n\\n`."""
    return f"{question_block(q)} {q.answer_letter}\n\n"


def build_mc_prompt(exemplars: list[MCQuestion], q: MCQuestion, topic: str) -> str:
    """The full k-shot prompt for one question (k = len(exemplars); 0 gives the header and the question)."""
    return HEADER.format(topic=topic) + "".join(exemplar_block(e) for e in exemplars) + question_block(q)


def choose_exemplars(pool: list[MCQuestion], q: MCQuestion, k: int, seed: int) -> list[MCQuestion]:
    """k exemplars from the subject's pool in an order fixed by (seed, subject); the question itself is skipped."""
    rng = np.random.default_rng(stable_int("mc-exemplars", seed, q.subject))
    chosen = [pool[i] for i in rng.permutation(len(pool)) if pool[i].id != q.id][:k]
    if len(chosen) < k:
        raise ConfigError(f"subject {q.subject!r} has {len(chosen)} exemplars for question {q.id}, needs k={k}")
    return chosen


def exemplar_sets(data: MCDataset, questions: list[MCQuestion], k_shot: int, seed: int) -> list[list[MCQuestion]]:
    """Each question's k exemplars from its subject's pool in the dataset's exemplar split (both protocols)."""
    if k_shot and data.exemplar_split is None:
        raise ConfigError(f"dataset {data.name!r} has no exemplar pool for k_shot={k_shot}")
    pools: dict[str, list[MCQuestion]] = defaultdict(list)
    for e in data.split(data.exemplar_split) if k_shot else []:
        pools[e.subject].append(e)
    return [choose_exemplars(pools[q.subject], q, k_shot, seed) if k_shot else [] for q in questions]


def mc_prompts(data: MCDataset, questions: list[MCQuestion], k_shot: int = 5, seed: int = 0) -> list[str]:
    """The k-shot letter prompt of each question, exemplars from the dataset's exemplar split."""
    return [build_mc_prompt(ex, q, data.topic(q.subject))
            for ex, q in zip(exemplar_sets(data, questions, k_shot, seed), questions)]


def answer_inputs(tokenizer, prompts: list[str]) -> tuple[list[list[int]], list[list[int]]]:
    """For each prompt ending in "Answer:", the ids the model reads and the four letter ids to score
    at its last position (see the module docstring)."""
    enc = tokenizer([p + " " + letter for p in prompts for letter in LETTERS])["input_ids"]
    stems, letters = [], []
    for i, prompt in enumerate(prompts):
        four = enc[4 * i : 4 * i + 4]
        stem = four[0][:-1]
        if not stem or any(f[:-1] != stem for f in four) or len({f[-1] for f in four}) != 4:
            raise KnowtuneError(
                f"cannot score the option letters with this tokenizer: '{prompt[-20:]} A' … 'D' do not end in "
                "one distinct token per letter after a common stem"
            )
        stems.append(stem)
        letters.append([f[-1] for f in four])
    return stems, letters


def _shared_prefix(model, seqs: list[list[int]], keep: int, store: dict) -> tuple[int, object]:
    """How many leading tokens every row reads from a cache, and that KV cache (batch 1, a copy to extend).
    `store` holds the last prefix run, across batches, as the SliCK engine keeps its prefix: a batch whose
    rows all begin with it reuses it. Otherwise the rows' common prefix is run; when it agrees with the last
    one on at least half its length, only that agreed part (a subject's k-shot exemplars, as a rule: the
    question tokens after them differ) is run and kept, so a subject's exemplars run about once, not once
    per batch. The rows' tokens past the cached prefix go through the batched forward either way."""
    import torch

    from knowtune.engine.kv_cache import forward_cached

    limit = min(map(len, seqs)) - keep  # every row keeps `keep` tokens to read logits at
    shared = max(0, min([limit, *(common_prefix_len(seqs[0], s) for s in seqs[1:])]))  # one row: all it can cache
    key = next(iter(store), None)
    if key is not None and len(key) <= limit and 2 * len(key) >= shared and all(tuple(s[: len(key)]) == key for s in seqs):
        return len(key), copy.deepcopy(store[key])
    if not shared:
        return 0, None
    agreed = common_prefix_len(list(key), seqs[0][:shared]) if key is not None else 0
    key = tuple(seqs[0][: agreed if 2 * agreed >= shared else shared])
    device = next(model.parameters()).device
    store.clear()
    store[key] = forward_cached(model, None, input_ids=torch.tensor([key], device=device), use_cache=True, logits_to_keep=1)[1]
    return len(key), copy.deepcopy(store[key])


def forward_tails(model, seqs: list[list[int]], pad: int, keep: int = 1, prefixes: dict | None = None,
                  want_cache: bool = False) -> tuple[torch.Tensor, object, torch.Tensor]:
    """Logits at the last `keep` positions of each id sequence, shape (rows, keep, vocab), with the KV cache
    and attention mask of the whole rows when `want_cache` (to run more tokens behind them). The rows' common
    token prefix (the k-shot exemplars, when the rows share a subject) is run once, or taken from `prefixes`
    (a dict the caller keeps across batches, see `_shared_prefix`), and its KV cache repeated for every row;
    the rest is left-padded between prefix and tail with explicit position ids, so every row ends in the
    last column and sees the positions of an unpadded forward."""
    import torch

    from knowtune.engine.kv_cache import forward_cached

    device = next(model.parameters()).device
    shared, cache = _shared_prefix(model, seqs, keep, {} if prefixes is None else prefixes)
    if cache is not None:
        cache.batch_repeat_interleave(len(seqs))
    tails = [s[shared:] for s in seqs]
    width = max(map(len, tails))
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), shared + width), dtype=torch.long)
    mask[:, :shared] = 1
    for b, tail in enumerate(tails):
        ids[b, width - len(tail) :] = torch.tensor(tail)
        mask[b, shared + width - len(tail) :] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)[:, shared:]
    out, cache = forward_cached(model, cache, input_ids=ids.to(device), attention_mask=mask.to(device),
                                position_ids=pos.to(device), use_cache=want_cache or cache is not None, logits_to_keep=keep)
    return out.logits[:, -keep:, :], cache if want_cache else None, mask


def check_length(model, seqs: list[list[int]]) -> None:
    """Refuse prompts longer than the model's context before any forward."""
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit and seqs and max(map(len, seqs)) > limit:
        raise ConfigError(f"a prompt has {max(map(len, seqs))} tokens, more than the model's {limit}; use fewer shots")


def prefix_batches(stems: list[list[int]], batch_size: int) -> list[list[int]]:
    """Row indices in token order, cut into batches of at most `batch_size` that do not straddle two k-shot
    prefixes. In token order each prefix's rows are contiguous; a row opens a new prefix when it shares
    less than half as many tokens with the row before it as with the row after it (the first question of
    the next subject shares a few header words with the previous subject and its exemplars with the next row)."""
    order = sorted(range(len(stems)), key=lambda i: stems[i])
    shared_before = [0] + [common_prefix_len(stems[a], stems[b]) for a, b in pairwise(order)]
    batches: list[list[int]] = []
    for pos, i in enumerate(order):
        opens_prefix = pos + 1 < len(order) and 2 * shared_before[pos] < shared_before[pos + 1]
        if not batches or len(batches[-1]) == batch_size or opens_prefix:
            batches.append([])
        batches[-1].append(i)
    return batches


def letter_logits(model, tokenizer, prompts: list[str], batch_size: int = 8, progress: bool = False) -> np.ndarray:
    """The four option letters' next-token logits after each prompt, shape (len(prompts), 4).
    Prompts sharing a k-shot prefix share batches (and its KV cache); see `prefix_batches`."""
    import torch  # here, not at the top: the set names and records of this module are read without torch

    stems, letter_ids = answer_inputs(tokenizer, prompts)
    check_length(model, stems)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out = np.zeros((len(prompts), len(LETTERS)))
    prefixes: dict = {}
    with torch.inference_mode():
        for rows in tqdm(prefix_batches(stems, batch_size), desc="mc probe", disable=not progress):
            logits = forward_tails(model, [stems[i] for i in rows], pad, 1, prefixes)[0][:, -1, :].double()
            picked = logits.gather(1, torch.tensor([letter_ids[i] for i in rows], device=logits.device))
            out[rows] = picked.cpu().numpy()
    return out


@dataclass(frozen=True)
class MCPrediction:
    """The probe's answer to one question: the predicted option, and the softmax over the four letter logits."""

    question: MCQuestion
    pred: int
    probs: tuple[float, float, float, float]

    @property
    def correct(self) -> bool:
        """Whether the predicted option is the gold one."""
        return self.pred == self.question.answer

    @property
    def pred_letter(self) -> str:
        """The predicted option's letter."""
        return LETTERS[self.pred]

    @property
    def pred_prob(self) -> float:
        """The probability of the predicted option."""
        return self.probs[self.pred]

    def to_dict(self) -> dict:
        """A JSON-ready record: the question's fields and the prediction."""
        return {**self.question.to_dict(), "pred": self.pred, "pred_letter": self.pred_letter,
                "probs": list(self.probs), "pred_prob": self.pred_prob, "correct": self.correct}

    @classmethod
    def from_dict(cls, d: dict) -> "MCPrediction":
        """The inverse of `to_dict`."""
        return cls(MCQuestion.from_dict(d), int(d["pred"]), tuple(float(p) for p in d["probs"]))


def predictions_from_logits(questions: list[MCQuestion], logits: np.ndarray) -> list[MCPrediction]:
    """Turn (n, 4) option scores (letter logits or cloze scores) into predictions: argmax and the softmax over the four."""
    z = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    return [MCPrediction(q, int(np.argmax(l)), tuple(float(x) for x in p)) for q, l, p in zip(questions, logits, probs)]


def probe_mc(
    model, tokenizer, data: MCDataset, questions: list[MCQuestion],
    k_shot: int = 5, seed: int = 0, batch_size: int = 8, progress: bool = False, scoring: MCScoring | None = None,
) -> list[MCPrediction]:
    """Run the k-shot multiple-choice probe on `questions` under one scoring protocol (default: letter);
    one prediction per question, in order."""
    scoring = scoring or MCScoring()
    if scoring.scoring == "cloze":
        # imported here: mc_cloze builds on this module
        from knowtune.probe.mc_cloze import cloze_probe_scores

        scores = cloze_probe_scores(model, tokenizer, data, questions, k_shot, seed, batch_size, progress, scoring.cloze_norm)
    else:
        scores = letter_logits(model, tokenizer, mc_prompts(data, questions, k_shot, seed), batch_size, progress)
    return predictions_from_logits(questions, scores)


def mc_summary(preds: Iterable[MCPrediction]) -> dict:
    """Accuracy overall, per domain and per subject, beside the chance rate (0.25)."""
    preds = list(preds)

    def acc(group: list[MCPrediction]) -> dict:
        return {"n": len(group), "accuracy": sum(p.correct for p in group) / len(group) if group else 0.0}

    by_domain: dict[str, list[MCPrediction]] = defaultdict(list)
    by_subject: dict[str, list[MCPrediction]] = defaultdict(list)
    for p in preds:
        by_domain[p.question.domain].append(p)
        by_subject[p.question.subject].append(p)
    return {
        "chance": CHANCE,
        "overall": acc(preds),
        "domains": {d: acc(g) for d, g in sorted(by_domain.items())},
        "subjects": {s: acc(g) for s, g in sorted(by_subject.items())},
        "predicted_letters": {L: sum(p.pred == i for p in preds) for i, L in enumerate(LETTERS)},
    }


def dense_ranks(probs: Iterable[float]) -> np.ndarray:
    """Rank 1 for the most probable option; equal probabilities share a rank and the next rank follows."""
    p = np.asarray(list(probs), dtype=float)
    levels = np.unique(p)[::-1]
    return np.searchsorted(-levels, -p) + 1.0


def rank_correlation(before: Iterable[float], after: Iterable[float]) -> float:
    """Pearson correlation of the two option rankings (dense ranks); 0 when either ranking is constant."""
    a, b = dense_ranks(before), dense_ranks(after)
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def knowledge_consistency(before: list[MCPrediction], after: list[MCPrediction]) -> dict:
    """How far fine-tuning kept the model's knowledge: per question, agreement of the option
    probabilities before (base model, k-shot) and after (fine-tuned model), averaged over questions.

    The headline number, `rank_correlation`, is the measure Ren et al. 2024 use: the Pearson
    correlation between the rankings of the four option probabilities before and after (their code,
    renmengjie7/Self-Aligning eval/analyse/metric.py, ranks with dense ranks, most probable = 1, and
    counts a constant ranking as 0), averaged over questions. On four options that is Spearman's rho
    with dense instead of averaged ties. We match it so that numbers compare with theirs; a ranking
    also asks whether the model still orders the options as it did, not whether its confidence moved.
    Also reported: the mean KL(before || after) of the option distributions (their code computes it
    too) and the share of questions whose predicted option is unchanged."""
    base = {p.question.id: p for p in before}
    missing = [p.question.id for p in after if p.question.id not in base]
    if missing:
        raise KnowtuneError(f"{len(missing)} questions probed after fine-tuning were not probed before "
                            f"(e.g. {missing[0]})")
    if not after:
        raise KnowtuneError("no questions to compare")
    corr, kl, same = [], [], []
    for p in after:
        b = base[p.question.id]
        corr.append(rank_correlation(b.probs, p.probs))
        pb, pa = np.asarray(b.probs), np.clip(np.asarray(p.probs), 1e-12, None)
        kl.append(float(np.sum(np.where(pb > 0, pb * np.log(np.clip(pb, 1e-12, None) / pa), 0.0))))
        same.append(b.pred == p.pred)
    return {"n": len(after), "rank_correlation": float(np.mean(corr)), "kl_divergence": float(np.mean(kl)),
            "same_prediction": float(np.mean(same))}
