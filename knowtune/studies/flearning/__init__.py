"""The F-Learning study (Ni et al. 2024): forget the old facts (θ − λ·Δ_old), then learn the new ones;
Reliability / Generality / Locality against plain fine-tuning and LoRA, over a λ sweep."""

from knowtune.studies.flearning.config import FLearningStudyConfig
from knowtune.studies.registry import Study, register

STUDY = register(Study(
    name="flearning", paper="Ni et al. 2024", config=FLearningStudyConfig, package=__name__,
    summary="Forgetting before learning: probe → edits → forget once per family → every method over λ → report."))
