"""Settings of the new-knowledge study (Gekhman et al. 2024); presets live in configs/<preset>.yaml."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from knowtune.probe.config import ProbeConfig
from knowtune.train.sft_config import SFTConfig


class NewKnowledgeConfig(BaseModel):
    """Everything a new-knowledge study run depends on; recorded in the run directory."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field("builtin", description="model spec (see `knowtune probe --help`)")
    data: str = Field("builtin", description="QA dataset spec")
    relations: list[str] = Field(..., min_length=1, description="in-distribution relations: training, dev and test")
    ood_relations: list[str] = Field(default_factory=list, description="held-out relations, test only")
    train_pool: int | None = Field(None, ge=1, description="training questions to probe (None = all)")
    dev_size: int | None = Field(None, ge=1, description="dev questions for EARLY_STOP (None = all)")
    test_size: int | None = Field(None, ge=1, description="in-distribution test questions (None = all)")
    ood_test_size: int | None = Field(None, ge=1, description="OOD test questions (None = all)")
    size: int = Field(..., ge=1, description="|D|, the size of every training set")
    seeds: list[int] = Field([0], min_length=1, description="one full study per seed (curation, data order)")
    idk_unknown_percent: int = Field(50, ge=0, le=100, description="the mixture D_IDK relabels")
    probe: ProbeConfig = Field(default_factory=ProbeConfig)
    train: SFTConfig = Field(default_factory=SFTConfig)
    batch_size: int = Field(16, ge=1, description="probe batch size")

    @model_validator(mode="after")
    def _size_within_pool(self) -> NewKnowledgeConfig:
        """|D| must fit in the probed pool: refused before the model is loaded."""
        if self.train_pool is not None and self.size > self.train_pool:
            raise ValueError(f"size (|D| = {self.size}) is more than train_pool ({self.train_pool})")
        return self
