"""Model specs: local paths never reach the hub; bad specs fail clearly; GGUF conversion is cached."""

from __future__ import annotations

import time

import pytest

from knowtune.errors import ModelError
from knowtune.models import builtin_gguf, load_model, resolve


def test_missing_paths_fail_without_the_hub(tmp_path):
    for spec in (str(tmp_path / "nope"), "./nope", "~/nope/model", str(tmp_path / "m.gguf"), "a/b/c"):
        with pytest.raises(ModelError, match="does not exist"):
            resolve(spec)
    (tmp_path / "notamodel").mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        resolve(str(tmp_path / "notamodel"))
    assert resolve("HuggingFaceTB/SmolLM2-135M-Instruct")[1] is False  # a hub id, left to transformers


def test_truncated_gguf_is_refused(tmp_path):
    bad = tmp_path / "half.gguf"
    bad.write_bytes(builtin_gguf().read_bytes()[: 5_000_000])
    with pytest.raises(ModelError, match="not a readable GGUF"):
        load_model(str(bad))
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf at all")
    with pytest.raises(ModelError, match="not a readable GGUF"):
        load_model(str(tmp_path / "junk.gguf"))


def test_local_hf_directory_roundtrip(tiny_model, tiny_tokenizer, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    lm = load_model(str(tmp_path))
    assert lm.fingerprint == load_model(str(tmp_path)).fingerprint
    assert sum(p.numel() for p in lm.model.parameters()) == sum(p.numel() for p in tiny_model.parameters())


@pytest.mark.slow
def test_builtin_loads_from_the_safetensors_cache():
    load_model("builtin")  # converts on first use
    start = time.perf_counter()
    lm = load_model("builtin")
    assert time.perf_counter() - start < 5
    assert lm.model.config.model_type == "llama"
    assert lm.tokenizer.decode(lm.tokenizer("Paris")["input_ids"]) == "Paris"
