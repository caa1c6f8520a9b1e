"""Reliability, Generality and Locality of knowledge edits under two protocols (docs/design.md).

Every result carries its protocol; the two are never averaged together.

* **token** (EasyEdit's teacher-forced token accuracy; definitions from zjunlp/EasyEdit,
  `easyeditor/evaluate/evaluate_utils.py::test_prediction_acc` and the locality step of
  `easyeditor/editors/editor.py`): the model reads `prompt + " " + target` once; an edit's score is
  the share of target tokens where the argmax at the previous position equals the target token.
  Locality: the same teacher-forced pass over `locality_prompt + " " + locality_answer`, scoring the
  share of the answer's positions where the post-edit argmax equals the *pre-edit* argmax (stored
  once in a `PreEditReference`). Target tokens are the full text's tokens after its longest common
  token prefix with the prompt's tokens; this equals EasyEdit's `len(tok(prompt))` cut whenever the
  tokenizer does not merge across the boundary, and it never scores prompt tokens when one does.
  EasyEdit also counts right-padding positions when a batch is right-padded; here only real target
  tokens count.
* **exact**: greedy generation, scored with knowtune's normalised exact match against the target;
  Locality: the post-edit greedy answer is unchanged from the pre-edit one. "qa" prompts answer up
  to the first newline (or `max_new_tokens`); "completion" prompts get exactly as many new tokens
  as the target (or locality answer) has, since a completion has no natural stop.

Per edit, generality and locality are the means over its rephrase / locality prompts; a dataset
score is the mean over edits (EasyEdit's summary does the same), over the edits that have such
prompts (`counts`).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from knowtune.data.edits import EditExample, join_target
from knowtune.engine import Engine, HFTreeEngine, SamplingParams, common_prefix_len
from knowtune.errors import DataError, KnowtuneError
from knowtune.files import atomic_write_json, fingerprint, read_json
from knowtune.matching import is_correct

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

PROTOCOLS = ("token", "exact")


@dataclass(frozen=True)
class TargetTokens:
    """Teacher-forced result for one target: the model's argmax before each target token, and the tokens."""

    predicted: list[int]
    labels: list[int]

    @property
    def accuracy(self) -> float:
        """Share of target tokens the argmax reproduces."""
        return float(np.mean(np.equal(self.predicted, self.labels)))


@dataclass
class PreEditReference:
    """The pre-edit model's locality outputs per edit id (argmax token ids for 'token', greedy
    answers for 'exact'), with a fingerprint of the locality prompts they belong to."""

    protocol: str
    outputs: dict[str, list]
    checks: dict[str, str]
    max_new_tokens: int

    def to_dict(self) -> dict:
        """A JSON-ready dict."""
        return {"protocol": self.protocol, "max_new_tokens": self.max_new_tokens,
                "outputs": self.outputs, "checks": self.checks}

    @classmethod
    def from_dict(cls, d: dict, source: object = "pre-edit reference") -> PreEditReference:
        """Rebuild a reference written by `to_dict`, checking its fields."""
        if not isinstance(d, dict) or d.get("protocol") not in PROTOCOLS:
            raise DataError(f"{source}: not a pre-edit reference (protocol must be one of {PROTOCOLS})")
        for key, kind in (("outputs", dict), ("checks", dict), ("max_new_tokens", int)):
            if not isinstance(d.get(key), kind):
                raise DataError(f"{source}, field '{key}': expected {kind.__name__}")
        return cls(d["protocol"], d["outputs"], d["checks"], d["max_new_tokens"])

    def save(self, path: str | Path) -> None:
        """Write the reference as JSON, atomically."""
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> PreEditReference:
        """Read a reference written by `save`."""
        return cls.from_dict(read_json(path), path)


@dataclass
class EditScores:
    """Reliability / Generality / Locality under one protocol (None where no edit had such prompts)."""

    protocol: str
    reliability: float | None
    generality: float | None
    locality: float | None
    counts: dict[str, int]
    per_edit: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The labelled summary (per-edit records are in `per_edit`)."""
        return {"protocol": self.protocol, "reliability": self.reliability, "generality": self.generality,
                "locality": self.locality, "counts": self.counts}


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Score without dropout, and leave the model in the mode it came in (it may be mid-training)."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _encode(tok: PreTrainedTokenizerBase, prompt: str, target: str) -> tuple[list[int], int]:
    """Token ids of `prompt + " " + target` and where the target's tokens start."""
    full = tok(join_target(prompt, target))["input_ids"]
    start = common_prefix_len(tok(prompt)["input_ids"], full)
    if start == 0 or start >= len(full):
        raise KnowtuneError(f"cannot place target {target!r} after prompt {prompt[:60]!r}: "
                            f"{'the prompt has no tokens of its own' if start == 0 else 'the target adds no tokens'}")
    return full, start


@torch.inference_mode()
def target_argmax(
    model: torch.nn.Module, tok: PreTrainedTokenizerBase, prompts: Sequence[str], targets: Sequence[str],
    batch_size: int = 16,
) -> list[TargetTokens]:
    """Teacher-forced argmax over each target's tokens, batched with right padding."""
    encoded = [_encode(tok, p, t) for p, t in zip(prompts, targets, strict=True)]
    device = next(model.parameters()).device
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    out: list[TargetTokens | None] = [None] * len(encoded)
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i][0]))  # similar lengths share a batch
    with _eval_mode(model):
        for s in range(0, len(order), batch_size):
            chunk = order[s : s + batch_size]
            width = len(encoded[chunk[0]][0])
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, i in enumerate(chunk):
                seq = encoded[i][0]
                ids[row, : len(seq)] = torch.tensor(seq)
                mask[row, : len(seq)] = 1
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            if logits.shape[:2] != ids.shape:
                raise KnowtuneError(f"the model gave logits of shape {tuple(logits.shape)} for inputs {tuple(ids.shape)}")
            argmax = logits.argmax(-1).cpu()
            for row, i in enumerate(chunk):
                seq, start = encoded[i]
                # position t's logits predict token t+1, so target token k is scored at k-1
                out[i] = TargetTokens(argmax[row, start - 1 : len(seq) - 1].tolist(), seq[start:])
    return out  # type: ignore[return-value]


def greedy_answers(
    model: torch.nn.Module | None, tok: PreTrainedTokenizerBase, prompts: Sequence[str], limits: Sequence[int],
    batch_size: int = 16, engine: Engine | None = None,
) -> list[str]:
    """Greedy answer of each prompt, generating at most `limits[i]` tokens and stopping at a newline;
    through `engine` when given (e.g. vLLM), else through the hf engine on `model`."""
    out = [""] * len(prompts)
    groups: dict[int, list[int]] = {}
    for i, n in enumerate(limits):
        groups.setdefault(n, []).append(i)
    with contextlib.nullcontext() if engine else _eval_mode(model):
        engine = engine or HFTreeEngine(model, tok, batch_size=batch_size)
        for n, idx in sorted(groups.items()):
            # n_samples=0: the engine expands only the greedy path
            params = SamplingParams(n_samples=0, max_new_tokens=n)
            done = engine.complete("", [prompts[i] for i in idx], [0] * len(idx), params)
            for i, c in zip(idx, done):
                out[i] = c.greedy
    return out


def _limit(tok: PreTrainedTokenizerBase, ex: EditExample, prompt: str, target: str, max_new_tokens: int) -> int:
    """How many tokens an exact-protocol answer may have (see the module docstring)."""
    if ex.prompt_style == "qa":
        return max_new_tokens
    full, start = _encode(tok, prompt, target)
    return len(full) - start


def _locality_check(ex: EditExample) -> str:
    return fingerprint([ex.prompt_style, list(ex.locality_prompts), list(ex.locality_answers)])


def _locality_outputs(
    model: torch.nn.Module | None, tok: PreTrainedTokenizerBase, examples: Sequence[EditExample], protocol: str,
    batch_size: int, max_new_tokens: int, engine: Engine | None = None,
) -> list[list]:
    """Per edit, the model's output on each locality prompt under `protocol`."""
    pairs = [(ex, p, a) for ex in examples for p, a in zip(ex.locality_prompts, ex.locality_answers)]
    if protocol == "token":
        tokens = target_argmax(model, tok, [p for _, p, _ in pairs], [a for _, _, a in pairs], batch_size)
        flat: list = [t.predicted for t in tokens]
    else:
        limits = [_limit(tok, ex, p, a, max_new_tokens) for ex, p, a in pairs]
        flat = greedy_answers(model, tok, [p for _, p, _ in pairs], limits, batch_size, engine)
    out, k = [], 0
    for ex in examples:
        out.append(flat[k : k + len(ex.locality_prompts)])
        k += len(ex.locality_prompts)
    return out


def _check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise KnowtuneError(f"unknown edit-metric protocol {protocol!r}; use one of {', '.join(PROTOCOLS)}")


def pre_edit_reference(
    model: torch.nn.Module | None, tok: PreTrainedTokenizerBase, examples: Sequence[EditExample], protocol: str,
    *, batch_size: int = 16, max_new_tokens: int = 24, engine: Engine | None = None,
) -> PreEditReference:
    """The pre-edit model's locality outputs, computed once and kept for every later evaluation
    (the exact protocol generates through `engine` when given)."""
    _check_protocol(protocol)
    outs = _locality_outputs(model, tok, examples, protocol, batch_size, max_new_tokens, engine)
    outputs = {ex.id: o for ex, o in zip(examples, outs)}
    return PreEditReference(protocol, outputs, {ex.id: _locality_check(ex) for ex in examples}, max_new_tokens)


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def edit_scores(
    model: torch.nn.Module | None, tok: PreTrainedTokenizerBase, examples: Sequence[EditExample], reference: PreEditReference,
    *, batch_size: int = 16, engine: Engine | None = None,
) -> EditScores:
    """Reliability, Generality and Locality of the (edited) model under the reference's protocol
    (the exact protocol generates through `engine` when given)."""
    _check_protocol(reference.protocol)
    for ex in examples:
        if ex.id not in reference.outputs:
            raise KnowtuneError(f"the pre-edit reference has no outputs for edit {ex.id}: compute it on the same edits")
        if reference.checks.get(ex.id) != _locality_check(ex):
            raise KnowtuneError(f"edit {ex.id}: its locality prompts differ from those of the pre-edit reference")
    protocol, max_new = reference.protocol, reference.max_new_tokens
    queries = [(ex, p) for ex in examples for p in (ex.prompt, *ex.rephrase_prompts)]
    if protocol == "token":
        tokens = target_argmax(model, tok, [p for _, p in queries], [ex.target_new for ex, _ in queries], batch_size)
        scored = [t.accuracy for t in tokens]
    else:
        limits = [_limit(tok, ex, p, ex.target_new, max_new) for ex, p in queries]
        answers = greedy_answers(model, tok, [p for _, p in queries], limits, batch_size, engine)
        scored = [float(is_correct(a, [ex.target_new])) for a, (ex, _) in zip(answers, queries)]
    post = _locality_outputs(model, tok, examples, protocol, batch_size, max_new, engine)
    per_edit, k = [], 0
    for ex, after in zip(examples, post):
        rel, gen = scored[k], scored[k + 1 : k + 1 + len(ex.rephrase_prompts)]
        k += 1 + len(ex.rephrase_prompts)
        loc = []
        for j, (b, a) in enumerate(zip(reference.outputs[ex.id], after)):
            if protocol == "exact":
                loc.append(float(a == b))
            elif len(a) != len(b):
                raise KnowtuneError(f"edit {ex.id}, locality prompt {j}: {len(a)} answer tokens now, {len(b)} in the "
                                    "reference (a different tokenizer?)")
            else:
                loc.append(float(np.mean(np.equal(a, b))))
        per_edit.append({"id": ex.id, "protocol": protocol, "reliability": rel,
                         "generality": _mean(gen), "locality": _mean(loc)})
    gens = [e["generality"] for e in per_edit if e["generality"] is not None]
    locs = [e["locality"] for e in per_edit if e["locality"] is not None]
    return EditScores(
        protocol, _mean([e["reliability"] for e in per_edit]), _mean(gens), _mean(locs),
        {"edits": len(per_edit), "generality": len(gens), "locality": len(locs)}, per_edit,
    )


def evaluate_edited_model(model_spec: str, edits_spec: str, protocols: list[str], reference_spec: str,
                          engine: str = "hf", engine_set: Sequence[str] = ()) -> dict:
    """R/G/L of `model_spec` on the edits under each protocol, with Locality against `reference_spec`
    (the pre-edit model); the summary and, under `per_edit`, every edit's scores. With `engine` vllm the
    exact protocol generates through vLLM; the token protocol is teacher-forced through transformers."""
    from knowtune.data.edit_records import resolve_edits
    from knowtune.engine import engine_options, vllm_engine
    from knowtune.models import load_model

    for p in protocols:
        _check_protocol(p)
    options = engine_options(engine, list(engine_set))
    ds = resolve_edits(edits_spec)
    on_vllm = ["exact"] if engine == "vllm" and "exact" in protocols else []
    on_hf = [p for p in protocols if p not in on_vllm]

    def run(spec: str, step) -> dict:
        """`step(model, tok, protocol, engine)` per protocol, one model in memory at a time."""
        done = {}
        if on_hf:
            lm = load_model(spec)
            done.update({p: step(lm.model, lm.tokenizer, p, None) for p in on_hf})
            del lm
        if on_vllm:
            eng, _ = vllm_engine(spec, options)
            done["exact"] = step(None, eng.tok, "exact", eng)
            del eng
            gc.collect()  # vLLM frees its engine process and KV cache when collected
        return done

    refs = run(reference_spec, lambda m, tok, p, eng: pre_edit_reference(m, tok, ds.examples, p, engine=eng))
    scores = run(model_spec, lambda m, tok, p, eng: edit_scores(m, tok, ds.examples, refs[p], engine=eng))
    return {"model": model_spec, "reference_model": reference_spec, "edits": edits_spec, "n_edits": len(ds.examples),
            "skipped": ds.skipped, "engine": engine, "scores": {p: scores[p].to_dict() for p in protocols},
            "per_edit": {p: scores[p].per_edit for p in protocols}}
