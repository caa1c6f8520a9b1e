"""End to end on the real default model (SmolLM2-135M-Instruct) and the builtin facts."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from knowtune.data import load_qa, select_examples
from knowtune.data.formats import (
    build_prompt,
    exemplar_block,
    exemplar_sets,
    question_block,
)
from knowtune.engine import HFTreeEngine, SamplingParams, answer_text

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smol():
    from knowtune.models import load_model

    return load_model("builtin")


def test_greedy_identical_to_hf_generate_on_real_model(smol):
    data = load_qa("builtin")
    examples = select_examples(data, "test", None, 36)
    engine = HFTreeEngine(smol.model, smol.tokenizer, batch_size=12)
    mismatches = []
    for rel in sorted({e.relation for e in examples}):
        exs = [e for e in examples if e.relation == rel]
        shots = exemplar_sets(data, rel, 4, 1, seed=0)[0]
        outs = engine.complete("".join(map(exemplar_block, shots)), [question_block(e) for e in exs],
                               list(range(len(exs))), SamplingParams(n_samples=4, max_new_tokens=16))
        for ex, out in zip(exs, outs):
            inputs = smol.tokenizer(build_prompt(shots, ex), return_tensors="pt")
            n = inputs["input_ids"].shape[1]
            ref = smol.model.generate(**inputs, do_sample=False, max_new_tokens=16, pad_token_id=smol.tokenizer.pad_token_id)
            if answer_text(smol.tokenizer, ref[0, n:].tolist()) != out.greedy:
                mismatches.append(ex.id)
    assert len(examples) == 36 and mismatches == []


def test_probe_command_end_to_end(tmp_path):
    out = tmp_path / "probe"
    cmd = [sys.executable, "-m", "knowtune", "probe", "--model", "builtin", "--data", "builtin", "--limit", "14",
           "--preset", "quick", "--seed", "0", "--out", str(out)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert "HighlyKnown" in run.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n"] == 14 and summary["settings"]["n_exemplar_sets"] == 4
    assert summary["model"]["params"] > 100_000_000
    records = [json.loads(line) for line in (out / "probe.jsonl").read_text().splitlines()]
    assert len(records) == 14 and all(len(r["greedy"]) == 4 for r in records)
    # A well-known fact must come out known; the probe is not returning noise.
    assert summary["categories"]["HighlyKnown"] + summary["categories"]["MaybeKnown"] > 0
