"""What every study's findings share: mean ± std over seeds and its formatting, the training run's
metrics at EARLY_STOP / CONVERGENCE, and a `Finding` (a paper's claim checked against this run)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

VERDICT_WORDS = {True: "yes", False: "no", None: "n/a"}
VERDICT_CLASSES = {True: "yes", False: "no", None: "na"}  # the report's CSS classes


def mean_std(values: list[float | None]) -> dict:
    """Mean and sample standard deviation (0 for one seed) of the non-missing values."""
    vals = [v for v in values if v is not None]
    if not vals:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(np.mean(vals)), "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0, "n": len(vals)}


def fmt(stat: dict, scale: float = 100.0, digits: int = 1) -> str:
    """'mean ± std' scaled (the std only over several seeds); 'n/a' when nothing was measured."""
    if stat.get("mean") is None:
        return "n/a"
    mean = f"{stat['mean'] * scale:.{digits}f}"
    return f"{mean} ± {stat['std'] * scale:.{digits}f}" if stat["n"] > 1 else mean


def at_epoch(run: dict, which: str) -> dict:
    """The metrics row at EARLY_STOP or CONVERGENCE (`which`) of one training run."""
    epoch = run[f"{which}_epoch"]
    return next(m for m in run["metrics"] if m["epoch"] == epoch)


def completed_runs(runs: dict) -> dict:
    """seed → set → run, without the runs that diverged or recorded no epoch."""
    return {s: {n: r for n, r in by.items() if "diverged" not in r and r["metrics"]} for s, by in runs.items()}


@dataclass
class Finding:
    """One claim of a paper against this run: in results.json the keys claim, paper, this_run and
    reproduced (True, False, or None when this run cannot tell), then any study-specific `extra` keys."""

    claim: str
    paper: str
    this_run: str
    reproduced: bool | None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The JSON shape of results.json's `findings` entries."""
        return {"claim": self.claim, "paper": self.paper, "this_run": self.this_run, "reproduced": self.reproduced,
                **self.extra}

    @classmethod
    def from_dict(cls, d: dict) -> Finding:
        """Read one `findings` entry back."""
        core = ("claim", "paper", "this_run", "reproduced")
        return cls(*(d[k] for k in core), extra={k: v for k, v in d.items() if k not in core})

    @property
    def verdict(self) -> str:
        """'yes', 'no' or 'n/a'."""
        return VERDICT_WORDS[self.reproduced]
