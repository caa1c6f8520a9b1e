"""Shared fixtures: a tiny randomly initialised Llama with a real BPE tokenizer, built in seconds."""

from __future__ import annotations

import json
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


def bpe_tokenizer(corpus: list[str], separate_space: bool):
    """Byte-level BPE trained on `corpus` where " A" is one token, or where every space is a token of its own."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=not separate_space)
    isolate_spaces = pre_tokenizers.Split(" ", behavior="isolated")
    tok.pre_tokenizer = pre_tokenizers.Sequence([isolate_spaces, byte_level]) if separate_space else byte_level
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<eos>", "<pad>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>")


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


CAPITALS = [("France", "Paris"), ("Peru", "Lima"), ("Chad", "N'Djamena"), ("Japan", "Tokyo"), ("Kenya", "Nairobi"),
            ("Chile", "Santiago"), ("Spain", "Madrid"), ("Egypt", "Cairo"), ("Italy", "Rome"), ("Cuba", "Havana")]
LANGUAGES = [("Brazil", "Portuguese"), ("France", "French"), ("Japan", "Japanese"), ("Kenya", "Swahili"),
             ("Chile", "Spanish"), ("Egypt", "Arabic"), ("Italy", "Italian"), ("Peru", "Spanish")]


@pytest.fixture(scope="session")
def tiny_workdir(tmp_path_factory) -> Path:
    """For the CLI: a tiny model directory (`model/`), a QA dataset (`qa.jsonl`) and probe-style
    records for training (`train.jsonl`, `dev.jsonl`, `test.jsonl`)."""
    root = tmp_path_factory.mktemp("kill")
    tok = _tiny_tokenizer()
    model = make_tiny_model(tok, seed=3, sharpness=8.0)
    model.save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    rows = []
    for i in range(48):
        country, capital = CAPITALS[i % len(CAPITALS)]
        rows.append({"id": f"cap{i}", "relation": "cap", "question": f"What is the capital of {country} {i}?",
                     "answers": [capital], "split": "exemplar" if i < 8 else "test"})
        country, lang = LANGUAGES[i % len(LANGUAGES)]
        rows.append({"id": f"lang{i}", "relation": "lang", "question": f"What is the official language of {country} {i}?",
                     "answers": [lang], "split": "exemplar" if i < 8 else "test"})
    (root / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cats = ("HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown")
    records = [{**r, "category": cats[i % 4]} for i, r in enumerate(r for r in rows if r["split"] == "test")]
    for name, part in (("train", records[:40]), ("dev", records[40:56]), ("test", records[56:])):
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    return root


# anatomy and virology share MMLU's "other" category (ID for a study training on anatomy); astronomy is STEM (OOD).
MMLU_SUBJECTS = {"anatomy": 40, "virology": 8, "astronomy": 8}


def write_mmlu(root: Path) -> None:
    """Original-layout MMLU CSVs: a dev split of 5 exemplars, a small val split and a test split per subject."""
    import csv

    root.mkdir(parents=True, exist_ok=True)
    for subject, n_test in MMLU_SUBJECTS.items():
        for split, n in (("dev", 5), ("val", 4), ("test", n_test)):
            with open(root / f"{subject}_{split}.csv", "w", newline="", encoding="utf-8") as f:
                writer = csv.writer(f)
                for i in range(n):
                    writer.writerow([f"Which is {subject} {split} {i}?", f"Paris {i}", "Lyon", f"Au {i % 3}", "Nice", "ABCD"[i % 4]])


@pytest.fixture(scope="session")
def mmlu_inputs(tiny_tokenizer, tmp_path_factory) -> Path:
    """A tiny MMLU folder (`mmlu/`, written by `write_mmlu`) and a tiny model directory (`model/`)."""
    root = tmp_path_factory.mktemp("mmlu_inputs")
    write_mmlu(root / "mmlu")
    model = make_tiny_model(tiny_tokenizer, seed=3, sharpness=30.0)
    model.save_pretrained(root / "model")
    tiny_tokenizer.save_pretrained(root / "model")
    return root


@pytest.fixture
def cli(monkeypatch, capsys):
    """Run `knowtune ARGS` in this process, on a wide terminal (rich wraps nothing) and without --debug;
    the returned function gives (exit code, stdout, stderr)."""
    from knowtune.cli import _state, main

    monkeypatch.setenv("COLUMNS", "400")
    monkeypatch.setitem(_state, "debug", False)

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr("sys.argv", ["knowtune", *args])
        with pytest.raises(SystemExit) as exit_info:
            main()
        out, err = capsys.readouterr()
        return exit_info.value.code, out, err

    return run


def exact_answer_distribution(model, tok, prompt: str, params) -> dict[str, float]:
    """Enumerate every continuation with non-zero probability under HF's own temperature and top-k
    warpers, one full forward per node (no cache): an independent reference for the engine."""
    from transformers import (
        LogitsProcessorList,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
    )

    from knowtune.engine import answer_text, newline_stop_ids

    warp = LogitsProcessorList([TemperatureLogitsWarper(params.temperature), TopKLogitsWarper(params.top_k)])
    stops = newline_stop_ids(tok)
    base = tok(prompt)["input_ids"]
    dist: dict[str, float] = {}

    def walk(path: list[int], prob: float) -> None:
        ids = torch.tensor([base + path])
        with torch.no_grad():
            logits = model(ids).logits[:, -1, :].float()
        p = torch.softmax(warp(ids, logits), -1)[0].double()
        for t in torch.nonzero(p > 0).flatten().tolist():
            q = prob * p[t].item()
            nxt = path + [t]
            if t in stops or len(nxt) >= params.max_new_tokens:
                text = answer_text(tok, nxt)
                dist[text] = dist.get(text, 0.0) + q
            else:
                walk(nxt, q)

    walk([], 1.0)
    total = sum(dist.values())  # 1 up to float32 softmax rounding
    return {a: q / total for a, q in dist.items()}
