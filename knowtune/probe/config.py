"""Settings of the SliCK probe (the paper's defaults, and the presets in presets/*.yaml) and the scoring
protocol of the multiple-choice probe."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from knowtune.engine import SamplingParams
from knowtune.settings import load_preset


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
    estimator: Literal["sampled", "exact"] = Field(
        "sampled", description="P(T>0) from N_sample drawn answers, or exact sample probabilities (hf engine only)")
    min_path_prob: float = Field(1e-5, ge=0, lt=1, description="exact estimator: answer paths less likely are not "
                                 "expanded; their mass, recorded, bounds the error of p_s")

    def sampling(self) -> SamplingParams:
        """The decoding part of the settings."""
        return SamplingParams(self.n_samples, self.temperature, self.top_k, self.max_new_tokens)


def probe_config(preset: str = "paper", overrides: dict[str, str] | None = None) -> ProbeConfig:
    """A ProbeConfig from a shipped preset (presets/<name>.yaml) plus dotted `key=value` overrides."""
    return load_preset(ProbeConfig, "knowtune.probe", preset, overrides or {}, owner="the probe", what="probe settings",
                       folder="presets")


class MCScoring(BaseModel):
    """How the multiple-choice probe scores the four options (docs/design.md): `letter` = the next-token
    logits of the option letters after a lettered MMLU prompt (Ren et al. 2024); `cloze` = each option's
    log-probability as the answer of a `Q: …\nA:` prompt (lm-evaluation-harness's continuation scoring)."""

    model_config = ConfigDict(extra="forbid")

    scoring: Literal["letter", "cloze"] = Field("letter", description="letter (Ren et al.) or cloze (option likelihood)")
    cloze_norm: Literal["sum", "mean"] = Field(
        "sum", description="cloze: sum of the option's token log-probabilities, or their mean (length-normalised)")

    def label(self) -> str:
        """The protocol in words, for every output and report heading."""
        if self.scoring == "letter":
            return "letter-logit"
        return f"cloze ({'summed' if self.cloze_norm == 'sum' else 'mean'} option log-probability)"
