"""Memory estimates for training and probing requests, so one too large for the device is refused up
front, with the estimate, instead of failing hours in (a CUDA out-of-memory traceback, or the kernel's
OOM killer on a CPU).

The estimates are simple sums — weights, gradients, Adam state and saved activations for training;
weights and the KV cache for probing — and lean to the large side.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from knowtune.errors import ConfigError

# Bytes a loss needs per token and vocabulary entry: the float32 logits and their gradient.
LOGIT_BYTES = 4 * 2


@dataclass(frozen=True)
class Estimate:
    """The bytes one request needs on one device, part by part."""

    what: str  # "training", "probing"
    parts: dict[str, int]  # label → bytes, in the order the message lists them
    shape: str  # what the last, size-dependent part is for, e.g. "batch 16 × 64 tokens"
    advice: str  # how to make the request smaller
    device: torch.device

    @property
    def total(self) -> int:
        """Bytes in all."""
        return sum(self.parts.values())

    def refusal(self, available: int) -> str:
        """The one-line message when `available` bytes are too few."""
        div, unit = _unit(self.total)
        parts = ", ".join(f"{label} {b / div:.1f}" for label, b in self.parts.items())
        adiv, aunit = _unit(available)
        has = "the GPU has" if self.device.type == "cuda" else "this machine has"
        return (f"{self.what} needs ≈ {self.total / div:.1f} {unit} ({parts} for {self.shape}) "
                f"but {has} {available / adiv:.1f} {aunit} available; {self.advice}")


def _unit(n: int) -> tuple[int, str]:
    """The largest binary unit that keeps `n` at 1 or more, so tiny and huge numbers both read well."""
    for div, unit in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if n >= div:
            return div, unit
    return 1, "bytes"


def _text_config(model: torch.nn.Module):
    """The language model's config (multimodal configs nest it)."""
    cfg = model.config
    return cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg


def _weight_bytes(model: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def lora_parameters(model: torch.nn.Module, r: int, targets: list[str] | str) -> int:
    """Parameters peft's LoRA adds for `targets` (peft's matching: 'all-linear', a regex, or name
    suffixes): r × (fan-in + fan-out) per adapted weight. Targets matching nothing are a ConfigError."""
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    total, matched = 0, False
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
            continue
        if targets == "all-linear":
            hit = isinstance(module, torch.nn.Linear) and module is not output  # peft leaves the output layer alone
        elif isinstance(targets, str):
            hit = re.fullmatch(targets, name) is not None
        else:
            hit = any(name == t or name.endswith("." + t) for t in targets)
        if hit:
            matched = True
            total += r * sum(weight.shape)
    if not matched:
        names = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
        raise ConfigError(f"lora_target_modules {targets!r} matches no layer of the model (its linear layers: {', '.join(names)})")
    return total


def training_estimate(model: torch.nn.Module, batch: int, seq_len: int, *, lora: tuple[int, list[str] | str] | None = None,
                      bf16: bool = False) -> Estimate:
    """Bytes to fine-tune `model` with AdamW on batches of `batch` sequences of `seq_len` tokens, all its
    weights or, with `lora` = (r, target modules), LoRA adapters; `bf16` activations under autocast."""
    size = next(model.parameters()).element_size()
    weights = _weight_bytes(model)
    if lora is not None:
        trainable = lora_parameters(model, *lora)
        weights += trainable * size
    else:
        trainable = sum(p.numel() for p in model.parameters())
    c = _text_config(model)
    inter = getattr(c, "intermediate_size", None) or 4 * c.hidden_size
    # Activations autograd saves per token and layer: about 9·hidden + 4·intermediate values, counted
    # with saved_tensors_hooks on transformers' Llama with SDPA attention (79 bytes per hidden unit in
    # float32 at SmolLM2's intermediate/hidden = 2.67). Korthikanti et al. (2022)'s "34 bytes per hidden
    # unit" counts 2-byte values, a GELU MLP and dropout masks; a SwiGLU MLP saves 4 intermediate
    # tensors, not 2. SDPA does not store the attention matrix, so no term grows with seq_len².
    act_size = 2 if bf16 else size
    per_token = c.num_hidden_layers * (9 * c.hidden_size + 4 * inter) * act_size + c.vocab_size * LOGIT_BYTES
    parts = {"weights": weights, "gradients": trainable * size, "Adam state": 2 * trainable * size,
             "activations": batch * seq_len * per_token}
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # where the HF Trainer will put it
    advice = "lower batch_size (gradient_accumulation_steps keeps the effective batch), use method=lora, or shorten the examples"
    return Estimate("training", parts, f"batch {batch} × {seq_len} tokens", advice, device)


def probe_estimate(model: torch.nn.Module, batch: int, n_samples: int, seq_len: int) -> Estimate:
    """Bytes to probe `batch` questions at once, each with 1 greedy + `n_samples` sequences of up to
    `seq_len` tokens: the weights and, at worst (every sample distinct), one KV cache row per sequence."""
    c = _text_config(model)
    n_kv = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    size = next(model.parameters()).element_size()
    kv = batch * (1 + n_samples) * seq_len * c.num_hidden_layers * 2 * n_kv * head_dim * size
    shape = f"batch {batch} × {1 + n_samples} sequences × {seq_len} tokens, all samples distinct"
    return Estimate("probing", {"weights": _weight_bytes(model), "KV cache": kv}, shape,
                    "lower --batch-size, n_samples or max_new_tokens", next(model.parameters()).device)


def available_bytes(device: torch.device) -> int | None:
    """Free memory on `device`: free GPU memory on CUDA, else the OS's MemAvailable (None if unknown)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in Path("/proc/meminfo").read_text(encoding="ascii").splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):  # not every OS names these (macOS has no SC_AVPHYS_PAGES)
        return None


def check_fits(estimate: Estimate, model: torch.nn.Module) -> None:
    """Raise ConfigError with the estimate when it exceeds what the device has; the model's weights
    already on that device count as available, since the estimate includes them."""
    free = available_bytes(estimate.device)
    if free is None:
        return
    resident = sum(p.numel() * p.element_size() for p in model.parameters() if p.device.type == estimate.device.type)
    if estimate.total > free + resident:
        raise ConfigError(estimate.refusal(free + resident))
