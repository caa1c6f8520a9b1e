"""Settings of the self-align study (Ren et al. 2024); presets live in configs/<preset>.yaml."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from knowtune.curate.self_align_sets import SETS
from knowtune.probe.config import MCScoring
from knowtune.train.sft_config import SFTConfig


class SelfAlignConfig(BaseModel):
    """Everything a self-align study run depends on; recorded in the study directory."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field("builtin", description="model spec (see `knowtune probe --help`)")
    data: str = Field("builtin", description="multiple-choice dataset spec: 'builtin' or an MMLU CSV directory")
    train_subjects: list[str] = Field(..., min_length=1, description="the training source; HOMO tests its held-out questions")
    pool_split: str = Field("train", description="split the training pool is drawn from")
    test_split: str = Field("test", description="split of the HOMO / ID / OOD test questions")
    dev_split: str | None = Field("dev", description="split of the dev questions that pick EARLY_STOP (None: no dev set)")
    pool_size: int | None = Field(None, ge=1, description="training-subject questions to probe for the sets (None = all)")
    homo_size: int | None = Field(None, ge=1, description="HOMO test questions (None = all)")
    id_size: int | None = Field(None, ge=1, description="ID test questions, balanced across subjects (None = all)")
    ood_size: int | None = Field(None, ge=1, description="OOD test questions, balanced across subjects (None = all)")
    dev_size: int | None = Field(None, ge=1, description="dev questions (None = all)")
    size: int | None = Field(None, ge=1, description="questions in every training set (None = the largest equal size)")
    sets: list[str] = Field(list(SETS), min_length=1, description="which of harmonious / incompatible / self_aligning to train")
    mixture_shares: list[float] = Field(default_factory=list,
                                        description="also train Incompatible with these shares self-labelled")
    seeds: list[int] = Field([0], min_length=1, description="one study per seed (set sampling, data order, LoRA init)")
    k_shot: int = Field(5, ge=0, description="exemplars per prompt, for the base probe and every evaluation")
    probe: MCScoring = Field(default_factory=MCScoring,
                             description="scoring protocol of the base probe, the training format and every evaluation")
    probe_seed: int = Field(0, description="fixes the exemplars, so base and fine-tuned models read the same prompts")
    batch_size: int = Field(16, ge=1, description="questions per forward batch when probing and evaluating")
    train: SFTConfig = Field(default_factory=SFTConfig)

    @field_validator("sets")
    @classmethod
    def _known_sets(cls, value: list[str]) -> list[str]:
        unknown = [s for s in value if s not in SETS]
        if unknown:
            raise ValueError(f"unknown sets {unknown}; choose from {', '.join(SETS)}")
        return value

    @field_validator("mixture_shares")
    @classmethod
    def _shares_in_range(cls, value: list[float]) -> list[float]:
        if any(not 0.0 <= s <= 1.0 for s in value):
            raise ValueError(f"mixture shares must lie in [0, 1], got {value}")
        return value
