"""Parameter arithmetic over state dicts for F-Learning (docs/design.md): θ_Δ = FT(θ) − θ, θ′ = θ − λ·θ_Δ.

Every operation computes in float32 and casts each result back to its tensor's dtype, so bf16 or
fp16 weights are not rounded at every intermediate step. Inputs are checked strictly (names, shapes,
dtypes, floating point) and the first offending tensor is named, in the order of the first argument's
keys. The LoRA variant takes θ_Δ = the merged update (α/r)·B·A of each adapted weight (α/√r with
rsLoRA), keyed by the base weight's own name so it lines up with the plain model's state dict.
Tensors are stored as safetensors only, written atomically.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from knowtune.errors import KnowtuneError

if TYPE_CHECKING:
    from peft import LoraConfig, PeftModel

StateDict = dict[str, torch.Tensor]

# peft's adapter state-dict keys (adapter name already removed, as in adapter_model.safetensors)
_LORA_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<ab>[AB])\.(?P<kind>weight|bias)$")
# Initialisations that rewrite the base weights too: B·A alone is then not the whole update.
_BASE_CHANGING_INITS = ("pissa", "olora", "corda", "loftq")


class TensorMismatchError(KnowtuneError):
    """State dicts that do not line up: names the first offending tensor."""


def _check_tensor(name: str, t: torch.Tensor, what: str) -> None:
    if not t.is_floating_point():
        raise TensorMismatchError(f"tensor {name!r} in {what}: not floating point ({t.dtype})")


def _check_pair(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], names: tuple[str, str], subset: bool) -> None:
    """Same names (or b's names ⊆ a's when `subset`), shapes and dtypes; the first offender is named."""
    for name, ta in a.items():
        if name not in b:
            if subset:
                continue
            raise TensorMismatchError(f"tensor {name!r}: in {names[0]} but not in {names[1]}")
        tb = b[name]
        _check_tensor(name, ta, names[0])
        _check_tensor(name, tb, names[1])
        if ta.shape != tb.shape:
            raise TensorMismatchError(
                f"tensor {name!r}: shape {tuple(ta.shape)} in {names[0]} vs {tuple(tb.shape)} in {names[1]}"
            )
        if ta.dtype != tb.dtype:
            raise TensorMismatchError(f"tensor {name!r}: dtype {ta.dtype} in {names[0]} vs {tb.dtype} in {names[1]}")
    for name in b:
        if name not in a:
            raise TensorMismatchError(f"tensor {name!r}: in {names[1]} but not in {names[0]}")


def _combine(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], fa: float, fb: float) -> StateDict:
    """fa·a + fb·b per tensor, in float32, cast back to the tensor's dtype."""
    return {
        n: (fa * ta.detach().float() + fb * b[n].detach().to(ta.device).float()).to(ta.dtype) for n, ta in a.items()
    }


def task_vector(finetuned: Mapping[str, torch.Tensor], base: Mapping[str, torch.Tensor]) -> StateDict:
    """θ_Δ = fine-tuned − base, tensor by tensor (both must hold the same tensors)."""
    _check_pair(finetuned, base, ("the fine-tuned weights", "the base weights"), subset=False)
    return _combine(finetuned, base, 1.0, -1.0)


def scale(delta: Mapping[str, torch.Tensor], factor: float) -> StateDict:
    """factor·Δ."""
    for name, t in delta.items():
        _check_tensor(name, t, "the delta")
    return {n: (factor * t.detach().float()).to(t.dtype) for n, t in delta.items()}


def add(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> StateDict:
    """a + b (same tensors)."""
    _check_pair(a, b, ("the first", "the second"), subset=False)
    return _combine(a, b, 1.0, 1.0)


def subtract(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> StateDict:
    """a − b (same tensors)."""
    _check_pair(a, b, ("the first", "the second"), subset=False)
    return _combine(a, b, 1.0, -1.0)


def apply(base: Mapping[str, torch.Tensor], delta: Mapping[str, torch.Tensor], lam: float) -> StateDict:
    """θ − λ·Δ: the delta may cover only some of the base tensors (a LoRA update); the rest pass through."""
    _check_pair(base, delta, ("the base weights", "the delta"), subset=True)
    out = dict(base)
    out.update(_combine({n: base[n] for n in delta}, delta, 1.0, -lam))
    return out


@torch.no_grad()
def apply_to_model(model: torch.nn.Module, delta: Mapping[str, torch.Tensor], lam: float) -> None:
    """θ − λ·Δ written into the model's own tensors in place (no second copy of the weights)."""
    state = model.state_dict()  # tensors share storage with the parameters
    _check_pair(state, delta, ("the model", "the delta"), subset=True)
    # Every new value is computed before any is written: tied weights (one storage, two names) then
    # receive the same θ − λ·Δ twice instead of having λ·Δ subtracted twice.
    for name, t in _combine({n: state[n] for n in delta}, delta, 1.0, -lam).items():
        state[name].copy_(t)


# ---------------------------------------------------------------- LoRA


def _pattern_value(patterns: Mapping[str, float], module: str, default: float) -> float:
    """A rank or alpha from peft's rank_pattern / alpha_pattern: the first key that matches the end
    of the module name at a dot boundary, as peft's own `get_pattern_key` does."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def lora_delta(
    adapter: Mapping[str, torch.Tensor], config: LoraConfig, dtypes: Mapping[str, torch.dtype] | None = None
) -> StateDict:
    """The merged update (α/r)·B·A (α/√r with rsLoRA) of every adapted Linear/Conv1D weight, from
    a peft adapter state dict and its LoraConfig, keyed by the base weight name; a trained LoRA
    bias (`lora_bias`) gives the bias update. Results take `dtypes[name]`, else lora_B's dtype."""
    if getattr(config, "use_dora", False):
        raise KnowtuneError("DoRA adapters are not supported: their merged update is not (α/r)·B·A")
    init = getattr(config, "init_lora_weights", True)
    if isinstance(init, str) and init.lower().startswith(_BASE_CHANGING_INITS):
        raise KnowtuneError(f"LoRA init {init!r} changes the base weights too: B·A alone is not the update")
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in adapter.items():
        m = _LORA_KEY.match(key)
        if m is None:
            raise TensorMismatchError(f"tensor {key!r}: not a LoRA A/B weight of a Linear layer (unsupported adapter part)")
        parts.setdefault(m["module"], {})[m["ab"] + ("" if m["kind"] == "weight" else "_bias")] = t
    fan_in_fan_out = bool(getattr(config, "fan_in_fan_out", False))
    out: StateDict = {}
    for module, p in parts.items():
        if "A" not in p or "B" not in p:
            raise TensorMismatchError(f"tensor {module!r}: lora_{'B' if 'A' in p else 'A'}.weight is missing")
        a, b = p["A"], p["B"]
        r = int(_pattern_value(config.rank_pattern or {}, module, config.r))
        alpha = _pattern_value(config.alpha_pattern or {}, module, config.lora_alpha)
        if a.dim() != 2 or b.dim() != 2 or a.shape[0] != r or b.shape[1] != r:
            raise TensorMismatchError(
                f"tensor {module!r}: lora_A {tuple(a.shape)} and lora_B {tuple(b.shape)} do not have rank r={r}"
            )
        scaling = alpha / math.sqrt(r) if config.use_rslora else alpha / r
        dw = (b.detach().float() @ a.detach().float().to(b.device)) * scaling
        weight = f"{module}.weight"
        out[weight] = (dw.T if fan_in_fan_out else dw).to((dtypes or {}).get(weight, b.dtype))
        if "B_bias" in p:
            bias = f"{module}.bias"
            out[bias] = (p["B_bias"].detach().float() * scaling).to((dtypes or {}).get(bias, b.dtype))
    return out


def lora_delta_of_model(model: PeftModel, adapter_name: str = "default") -> StateDict:
    """The merged LoRA update of a peft model's adapter, in each base weight's dtype, shape-checked."""
    from peft import get_peft_model_state_dict

    if adapter_name not in getattr(model, "peft_config", {}):
        raise KnowtuneError(f"the model has no LoRA adapter named {adapter_name!r}")
    delta = lora_delta(get_peft_model_state_dict(model, adapter_name=adapter_name), model.peft_config[adapter_name])
    base = model.get_base_model()
    out: StateDict = {}
    for name, t in delta.items():
        module, _, kind = name.rpartition(".")
        layer = base.get_submodule(module)
        target = getattr(layer.get_base_layer() if hasattr(layer, "get_base_layer") else layer, kind, None)
        if target is None:
            raise TensorMismatchError(f"tensor {name!r}: the base model has no such tensor")
        if target.shape != t.shape:
            raise TensorMismatchError(f"tensor {name!r}: update shape {tuple(t.shape)} vs base {tuple(target.shape)}")
        out[name] = t.to(target.dtype)
    return out


def lora_delta_from_dir(path: str | Path, dtypes: Mapping[str, torch.dtype] | None = None) -> StateDict:
    """The merged LoRA update of an adapter saved by peft (`adapter_config.json` + `adapter_model.safetensors`)."""
    from peft import LoraConfig

    path = Path(path)
    cfg_file = path / "adapter_config.json"
    if not cfg_file.exists():
        raise KnowtuneError(f"{cfg_file}: no such file (not a saved peft adapter)")
    try:
        config = LoraConfig.from_pretrained(str(path))
    except (ValueError, TypeError, json.JSONDecodeError) as e:
        raise KnowtuneError(f"{cfg_file}: not a LoRA adapter config ({e})") from None
    return lora_delta(load_tensors(path / "adapter_model.safetensors"), config, dtypes)


# ---------------------------------------------------------------- safetensors


def save_tensors(path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> None:
    """Write tensors as safetensors via a temp file, fsync and rename, so no reader sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({n: t.detach().contiguous() for n, t in tensors.items()}, tmp, metadata=dict(metadata or {}))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_tensors(path: str | Path, device: str = "cpu") -> StateDict:
    """Read a safetensors file, with a one-line error for a missing or unreadable file."""
    path = Path(path)
    if not path.is_file():
        raise KnowtuneError(f"{path}: no such file")
    try:
        return load_file(str(path), device=device)
    except (SafetensorError, OSError) as e:
        raise KnowtuneError(f"{path}: not a readable safetensors file ({e})") from None
