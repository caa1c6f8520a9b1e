"""The F-Learning study (Ni et al. 2024): forget the old facts (θ − λ·Δ_old), then learn the new ones;
Reliability / Generality / Locality against plain fine-tuning and LoRA, over a λ sweep."""

from knowtune.studies.flearning.config import FLearningStudyConfig
from knowtune.studies.registry import Study, register


def _run(cfg: FLearningStudyConfig, out, progress: bool = True) -> dict:
    from knowtune.studies.flearning.study import (
        run_study,  # the heavy imports wait until a run
    )

    return run_study(cfg, out, progress)


STUDY = register(Study(
    name="flearning", paper="Ni et al. 2024", config=FLearningStudyConfig, run=_run, package=__name__,
    summary="Forgetting before learning: probe → edits → forget once per family → every method over λ → report."))
