"""The new-knowledge study (Gekhman et al. 2024): does fine-tuning on facts the model does not know
encourage hallucination? SliCK probe → controlled sets → fine-tune each → fit and accuracy per epoch."""

from knowtune.studies.new_knowledge.config import NewKnowledgeConfig
from knowtune.studies.registry import Study, register

STUDY = register(Study(
    name="new-knowledge", paper="Gekhman et al. 2024", config=NewKnowledgeConfig, package=__name__,
    summary="Does fine-tuning on new knowledge encourage hallucinations? probe → curate → train every variant → "
            "evaluate → report."))
