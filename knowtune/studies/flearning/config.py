"""Settings of the F-Learning study (Ni et al. 2024); presets live in configs/<preset>.yaml."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator

from knowtune.probe.config import ProbeConfig
from knowtune.update.flearning_config import (
    METHODS,
    Family,
    FamilySettings,
    LambdaSweep,
    MethodId,
)

LearningRate = Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)]
Category = Literal["HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown"]


class FLearningStudyConfig(FamilySettings):
    """Everything an F-Learning study run depends on; recorded in the run directory."""

    model: str = Field("builtin", description="model spec (see `knowtune probe --help`)")
    edits: list[str] = Field(["builtin"], min_length=1, description="edit sets: 'builtin' (counterfactuals of the "
                             "facts the model knows, found by a SliCK probe) or specs such as counterfact:PATH, zsre:PATH")
    data: str = Field("builtin", description="the QA facts behind 'builtin' edits (they need 2 question templates per relation)")
    relations: list[str] = Field(["P17", "P36", "P246", "P37"], min_length=1, description="relations probed for 'builtin' edits")
    probe_pool: int | None = Field(320, ge=1, description="questions probed for 'builtin' edits, relation-balanced (None = all)")
    known: list[Category] = Field(["HighlyKnown"], min_length=1, description="SliCK categories that count as known")
    n_edits: int | None = Field(96, ge=2, description="edits per seed, relation-balanced (None = all)")
    dev_size: int = Field(16, ge=1, description="edits of each seed's set used to choose λ (the rest are test)")
    context_shots: int = Field(1, ge=0, description="exemplars of the prompt's relation put before every builtin "
                               "edit, rephrase and locality prompt (0: bare zero-shot prompts)")
    n_locality: int = Field(1, ge=1, description="locality prompts per builtin edit")
    seeds: list[int] = Field([0], min_length=1, description="per seed: which edits, their new targets, data order, LoRA init")
    methods: list[MethodId] = Field(list(METHODS), min_length=1, description="methods and baselines to run")
    lambdas: LambdaSweep = Field([0.3, 1.0, 3.0], description="the λ sweep of every method that forgets")
    select: Literal["rg", "rgl"] = Field("rg", description="λ criterion on dev edits, token protocol: mean of R and G "
                                         "('rg') or of R, G and L ('rgl'); ties go to the smaller λ")
    lr_grid: dict[Family, list[LearningRate]] = Field({}, description="learning rates to choose from per family, on the "
                                                       "first seed's dev edits with the family's plain baseline (empty: "
                                                       "full.learning_rate and lora.learning_rate as given)")
    locality_floor: float = Field(0.5, ge=0, le=1, description="learning-rate rule: the best dev mean of R and G (token) "
                                  "among the rates whose dev Locality reaches this; else the rate with the highest Locality")
    protocols: list[Literal["token", "exact"]] = Field(["token", "exact"], min_length=1)
    max_new_tokens: int = Field(16, ge=1, description="answer cap of the exact protocol (QA-style prompts)")
    eval_batch_size: int = Field(16, ge=1, description="prompts per batch when scoring edits")
    locality_tolerance: float = Field(2.0, ge=0, description="points of Locality a method may lose and still be 'about equal'")
    close_tolerance: float = Field(2.0, ge=0, description="points LoRA−FT may trail F-Learning-FT and still 'come close'")
    probe: ProbeConfig = Field(default_factory=ProbeConfig)
    batch_size: int = Field(16, ge=1, description="probe batch size")

    @field_validator("edits", "methods")
    @classmethod
    def _no_repeats(cls, value: list[str]) -> list[str]:
        repeated = sorted({v for v in value if value.count(v) > 1})
        if repeated:
            raise ValueError(f"{repeated[0]!r} is listed more than once")
        return value

    @field_validator("lr_grid")
    @classmethod
    def _grids_named(cls, value: dict[str, list[float]]) -> dict[str, list[float]]:
        for family, grid in value.items():
            if not grid:
                raise ValueError(f"the {family} grid names no learning rate")
            if len(set(grid)) < len(grid):
                raise ValueError(f"the {family} grid repeats a learning rate")
        return value

    @field_validator("dev_size")
    @classmethod
    def _leaves_test_edits(cls, value: int, info: ValidationInfo) -> int:
        n = info.data.get("n_edits")
        if n is not None and value >= n:
            raise ValueError(f"dev_size {value} leaves no test edits of n_edits {n}")
        return value

    @field_validator("protocols")
    @classmethod
    def _has_token(cls, value: list[str]) -> list[str]:
        if "token" not in value:
            raise ValueError("λ is chosen under the token protocol, so 'token' must be listed")
        return value
