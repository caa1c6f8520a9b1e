"""Settings of supervised fine-tuning on (prompt, target) pairs, full or LoRA."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


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
    batch_size: int = Field(16, ge=1, description="examples per optimizer step (per device)")
    gradient_accumulation_steps: int = Field(1, ge=1)
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    lora_target_modules: list[str] | str = Field("all-linear", description="peft target_modules")
    bf16: bool = Field(False, description="bf16 autocast (faster on CPUs with avx512_bf16; changes numerics)")
    seed: int = Field(0, description="data order and LoRA initialisation")
    checkpoint_every_epoch: bool = Field(True, description="save a resumable checkpoint (model + optimizer) per epoch")
    save_weights: bool = Field(True, description="save EARLY_STOP and CONVERGENCE weights as safetensors")
    eval_batch_size: int = Field(64, ge=1, description="questions per batch in per-epoch evaluation")
    report_to: str | list[str] = Field("none", description="transformers integrations that log the loss and the per-epoch "
                                       "fit and accuracy: none, tensorboard, wandb, all, or a list")
