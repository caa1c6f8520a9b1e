"""Settings of F-Learning knowledge updates (Ni et al. 2024; docs/design.md "F-Learning").

Five methods share two fine-tuning settings, `full` and `lora`: a method forgets K_old with one of
them (or not at all) and learns K_new with one of them. λ scales the subtracted forgetting delta;
a λ sweep is validated before any training (at least one value, every value a finite number ≥ 0,
no repeats).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)

from knowtune.train.sft_config import SFTConfig

Family = Literal["full", "lora"]
MethodId = Literal["ft", "lora", "flearning-ft", "flearning-lora", "lora-ft"]


@dataclass(frozen=True)
class Method:
    """An update method: how it forgets K_old (None: it does not) and how it learns K_new."""

    id: str
    label: str
    forget: Family | None
    learn: Family

    @property
    def uses_lambda(self) -> bool:
        """Whether λ means anything for this method (it forgets first)."""
        return self.forget is not None


METHODS: dict[str, Method] = {
    "ft": Method("ft", "FT", None, "full"),
    "lora": Method("lora", "LoRA", None, "lora"),
    "flearning-ft": Method("flearning-ft", "F-Learning-FT", "full", "full"),
    "flearning-lora": Method("flearning-lora", "F-Learning-LoRA", "lora", "lora"),
    "lora-ft": Method("lora-ft", "LoRA−FT", "lora", "full"),
}


def _number(value: Any) -> Any:
    # pydantic turns true/false into 1.0/0.0; a λ written as a boolean is a mistake, not a number.
    if isinstance(value, bool):
        raise ValueError(f"λ must be a number, not {str(value).lower()}")
    return value


def _sweep(value: Any) -> Any:
    """One number stands for a one-value sweep; repeated values are refused."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [value]
    if isinstance(value, list):
        seen = set()
        for v in value:
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                if float(v) in seen:
                    raise ValueError(f"λ {v} appears more than once")
                seen.add(float(v))
    return value


Lambda = Annotated[float, BeforeValidator(_number), Field(ge=0, allow_inf_nan=False)]
LambdaSweep = Annotated[list[Lambda], BeforeValidator(_sweep), Field(min_length=1)]


def _full_default() -> SFTConfig:
    # The paper's settings (lr 5e-5, 3 epochs); batches of 8 suit a CPU.
    return SFTConfig(method="full", epochs=3, learning_rate=5e-5, batch_size=8)


def _lora_default() -> SFTConfig:
    return SFTConfig(method="lora", epochs=3, learning_rate=5e-5, batch_size=8)


class FamilySettings(BaseModel):
    """Fine-tuning settings for the full and the LoRA family; forgetting and learning share them."""

    model_config = ConfigDict(extra="forbid")

    full: SFTConfig = Field(default_factory=_full_default, description="full fine-tuning (forget and learn)")
    lora: SFTConfig = Field(default_factory=_lora_default, description="LoRA fine-tuning (forget and learn)")

    @field_validator("full", "lora", mode="before")
    @classmethod
    def _over_family_defaults(cls, value: Any, info: ValidationInfo) -> Any:
        # A partial section (`--set lora.epochs=2`) overrides the family's defaults, not SFTConfig's.
        if isinstance(value, dict):
            default = _full_default() if info.field_name == "full" else _lora_default()
            return {**default.model_dump(), **value}
        return value

    @field_validator("full", "lora")
    @classmethod
    def _family_matches(cls, value: SFTConfig, info: ValidationInfo) -> SFTConfig:
        if value.method != info.field_name:
            raise ValueError(f"method must be {info.field_name!r} here, not {value.method!r}")
        return value

    def sft(self, family: Family) -> SFTConfig:
        """The fine-tuning settings of one family."""
        return self.full if family == "full" else self.lora


class FLearningConfig(FamilySettings):
    """One knowledge update (`knowtune update`): a method, its λ and the fine-tuning settings."""

    method: MethodId = Field("flearning-ft", description="ft, lora, flearning-ft, flearning-lora or lora-ft")
    lam: Lambda = Field(1.0, description="λ in θ′ = θ − λ·(FT(θ, K_old) − θ); ignored by ft and lora")
    max_new_tokens: int = Field(16, ge=1, description="answer cap of the exact-match knowledge check")
    eval_batch_size: int = Field(16, ge=1, description="prompts per batch in the knowledge check")

    @property
    def spec(self) -> Method:
        """The chosen method."""
        return METHODS[self.method]
