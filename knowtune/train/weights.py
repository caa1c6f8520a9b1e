"""Saving a fine-tuned model as a loadable Hugging Face directory (safetensors), atomically."""

from __future__ import annotations

import copy
from pathlib import Path

from knowtune.files import atomic_dir, atomic_write_json


def save_weights(model, tokenizer, target: Path, meta: dict | None = None) -> Path:
    """Save full (LoRA: merged) weights + tokenizer (+ `meta` as knowtune_meta.json) as a loadable HF
    directory, atomically: a reader sees the old directory or the complete new one."""
    target = Path(target)
    with atomic_dir(target) as tmp:
        if hasattr(model, "merge_and_unload"):  # peft: base + (α/r)·B·A, merged on a copy; adapter beside it
            copy.deepcopy(model).merge_and_unload().save_pretrained(tmp)
            model.save_pretrained(tmp / "adapter")
        else:
            model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if meta is not None:
            atomic_write_json(tmp / "knowtune_meta.json", meta)
    return target
