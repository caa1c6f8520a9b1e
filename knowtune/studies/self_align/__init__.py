"""The self-align study (Ren et al. 2024): does instruction tuning teach knowledge, or align the
model with what it already knows? Harmonious / Incompatible / Self-aligning sets, HOMO / ID / OOD."""

from knowtune.studies.registry import Study, register
from knowtune.studies.self_align.config import SelfAlignConfig

STUDY = register(Study(
    name="self-align", paper="Ren et al. 2024", config=SelfAlignConfig, package=__name__,
    summary="Learning or self-aligning? probe → harmonious / incompatible / self-aligning sets → fine-tune → "
            "HOMO / ID / OOD → report."))
