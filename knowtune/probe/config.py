"""Settings of the SliCK probe, with the paper's defaults and a quick preset for CPUs."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from knowtune.errors import ConfigError
from knowtune.probe.engine import SamplingParams


class ProbeConfig(BaseModel):
    """SliCK probing settings; the field defaults are Gekhman et al. (2024)'s."""

    model_config = ConfigDict(extra="forbid")

    k_shot: int = Field(4, ge=0, description="exemplars per prompt, from the same relation")
    n_exemplar_sets: int = Field(10, ge=1, description="N_ex: random exemplar sets per relation")
    n_samples: int = Field(16, ge=0, description="N_sample: sampled answers per exemplar set")
    temperature: float = Field(0.5, gt=0, description="sampling temperature T")
    top_k: int = Field(40, ge=0, description="top-k for sampling (0 = no limit)")
    max_new_tokens: int = Field(24, ge=1, description="answer length cap in tokens")
    seed: int = Field(0, description="fixes exemplar sets and every sample")

    def sampling(self) -> SamplingParams:
        """The decoding part of the settings."""
        return SamplingParams(self.n_samples, self.temperature, self.top_k, self.max_new_tokens)


PRESETS: dict[str, dict] = {
    "paper": {},  # 10 exemplar sets × (1 greedy + 16 samples), T=0.5, top-40, 4-shot
    "quick": {"n_exemplar_sets": 4, "n_samples": 8},  # for CPUs: 4 × (1 + 8)
}


def probe_config(preset: str = "paper", **overrides) -> ProbeConfig:
    """A ProbeConfig from a named preset plus explicit overrides."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown probe preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return ProbeConfig(**{**PRESETS[preset], **overrides})
