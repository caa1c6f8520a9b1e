"""Settings of supervised fine-tuning on (prompt, target) pairs, full or LoRA."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class SFTConfig(BaseModel):
    """Fine-tuning settings; the loss is on the target tokens only."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["full", "lora"] = Field("full", description="full fine-tuning or LoRA (peft)")
    epochs: int = Field(10, ge=1, description="passes over the training set; metrics are recorded after each")
    learning_rate: float = Field(1e-5, gt=0)
    lr_scheduler_type: str = Field("constant", description="any transformers scheduler name")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="share of steps for linear warm-up")
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    batch_size: int = Field(16, ge=1, description="examples per batch, over all processes (accelerate launch: batch_size/N each)")
    gradient_accumulation_steps: int = Field(1, ge=1)
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    lora_target_modules: list[str] | str = Field("all-linear", description="peft target_modules")
    bf16: bool = Field(False, description="bf16 autocast (faster on CPUs with avx512_bf16; changes numerics)")
    fit_bf16: bool = Field(False, description="run the per-epoch fit check in bf16, recomputing near ties in float32 "
                           "(float32's fit; on the builtin model nearly every row is a near tie, so it is slower: bench/bf16_margin.py)")
    seed: int = Field(0, description="data order and LoRA initialisation")
    checkpoint_every_epoch: bool = Field(True, description="save a resumable checkpoint (model + optimizer) per epoch")
    save_weights: bool = Field(True, description="save EARLY_STOP and CONVERGENCE weights as safetensors")
    eval_batch_size: int = Field(64, ge=1, description="questions per batch in per-epoch evaluation")
    report_to: str | list[str] = Field("none", description="transformers integrations that log the loss and the per-epoch "
                                       "fit and accuracy: none, tensorboard, wandb, all, or a list")

    @field_validator("lr_scheduler_type")
    @classmethod
    def _known_scheduler(cls, value: str) -> str:
        # Checked here, before any work, against the names the Trainer accepts (imported only now: heavy).
        from transformers import SchedulerType

        names = [t.value for t in SchedulerType]
        if value not in names:
            raise ValueError(f"unknown scheduler {value!r}; choose one of {', '.join(names)}")
        return value

    @field_validator("lora_target_modules")
    @classmethod
    def _targets(cls, value: list[str] | str) -> list[str] | str:
        # peft reads a string as a regular expression (re.fullmatch over module names), a list as names.
        if isinstance(value, list) and not value:
            raise ValueError("names no module; give at least one, a regular expression or 'all-linear'")
        if isinstance(value, str) and value != "all-linear":
            try:
                re.compile(value)
            except re.error as e:
                raise ValueError(f"{value!r} is not a valid regular expression ({e})") from None
        return value
