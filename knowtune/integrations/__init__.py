"""knowtune inside your own training loop: `KnowledgeCallback` for a `transformers.Trainer` or TRL `SFTTrainer`."""

from knowtune.train.callback import KnowledgeCallback

__all__ = ["KnowledgeCallback"]
