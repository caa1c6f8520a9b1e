"""What every study's findings share: mean ± std over seeds and its formatting, the training run's
metrics at EARLY_STOP / CONVERGENCE, and the bootstrap behind every finding's 95 % interval.

The bootstrap (docs/design.md §3) is hierarchical: each replicate draws the seeds with replacement,
then the test questions with replacement, and recomputes the statistic. The same questions answered
by several variants stay paired: a question draw picks a whole row of per-question outcomes (one
column per compared quantity). When every seed answers the same questions (`shared=True`, as in the
new-knowledge and self-align studies), one question draw per replicate serves every seed, because the
question sample's error is shared by the seeds and does not shrink with more of them; otherwise (the
edits of flearning differ per seed) each drawn seed gets its own draw. numpy has no hierarchical
bootstrap and scipy.stats.bootstrap resamples one level only, so this is written here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from math import sqrt
from statistics import NormalDist

import numpy as np

BOOTSTRAP = {"method": "hierarchical percentile bootstrap: seeds, then test questions (paired across variants)",
             "replicates": 2000, "seed": 20240, "level": 0.95}

# statistic(seed_ids, means): the quantity from one draw, given which seeds were drawn (to look up
# per-seed covariates) and, per drawn seed, the mean of each column over the drawn questions.
Statistic = Callable[[np.ndarray, list[np.ndarray]], float]


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


@dataclass(frozen=True)
class Interval:
    """A point estimate with its 95 % bootstrap interval; `half_width` is the smallest effect this run can detect."""

    estimate: float
    low: float
    high: float

    @property
    def half_width(self) -> float:
        """Half the interval's width."""
        return (self.high - self.low) / 2


def wilson(k: int, n: int, level: float = BOOTSTRAP["level"]) -> tuple[float, float]:
    """The Wilson score interval of a proportion k / n (one sample of independent answers, no seeds)."""
    # By hand: scipy's binomtest(...).proportion_ci does this, but scipy is a test-only dependency (tests compare).
    z = NormalDist().inv_cdf(0.5 + level / 2)
    p, z2 = k / n, z * z / n
    centre, half = (p + z2 / 2) / (1 + z2), z * sqrt(p * (1 - p) / n + z2 / (4 * n)) / (1 + z2)
    return centre - half, centre + half


def _draw_means(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per replicate (a row of question counts in `weights`), each column's mean over the drawn
    questions that have a value (NaN = missing, as a locality score of an edit with no locality prompt)."""
    present = ~np.isnan(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (weights @ np.where(present, values, 0.0)) / (weights @ present)


def _counts(rng: np.random.Generator, n: int, replicates: int) -> np.ndarray:
    """How often each of n questions is drawn, per replicate: a draw of n with replacement."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=replicates).astype(float)


def column_means(values: np.ndarray) -> np.ndarray:
    """Each column's mean over the questions that have a value."""
    return _draw_means(values, np.ones((1, values.shape[0])))[0]


def bootstrap(per_seed: Sequence[np.ndarray], statistic: Statistic, shared: bool,
              replicates: int = BOOTSTRAP["replicates"], seed: int = BOOTSTRAP["seed"],
              level: float = BOOTSTRAP["level"]) -> Interval | None:
    """The statistic on all the data and its percentile interval over hierarchical bootstrap replicates;
    `per_seed` holds one (questions × columns) array per seed (with `shared`, the same questions in the
    same row order). None when there is no data or the statistic is undefined on it."""
    per_seed = [np.asarray(v, dtype=float) for v in per_seed]
    per_seed = [v.reshape(len(v), -1) for v in per_seed]
    if not per_seed or any(len(v) == 0 for v in per_seed):
        return None
    n_seeds = len(per_seed)
    estimate = statistic(np.arange(n_seeds), [column_means(v) for v in per_seed])
    if estimate is None or not np.isfinite(estimate):
        return None
    rng = np.random.default_rng(seed)
    if shared:
        if len({len(v) for v in per_seed}) != 1:
            raise ValueError("shared questions need the same number of rows in every seed")
        weights = _counts(rng, len(per_seed[0]), replicates)
        # means[slot][s]: the replicate means of seed s; one question draw for every slot and seed
        means = [[_draw_means(v, weights) for v in per_seed]] * n_seeds
    else:
        means = [[_draw_means(v, _counts(rng, len(v), replicates)) for v in per_seed] for _ in range(n_seeds)]
    drawn = rng.integers(n_seeds, size=(replicates, n_seeds)) if n_seeds > 1 else np.zeros((replicates, 1), dtype=int)
    stats = np.array([statistic(ids, [means[j][s][b] for j, s in enumerate(ids)]) for b, ids in enumerate(drawn)], dtype=float)
    stats = stats[np.isfinite(stats)]
    if len(stats) < replicates / 2:  # the statistic is undefined on most draws: no interval to speak of
        return None
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(stats, [tail, 100 - tail])
    return Interval(float(estimate), float(low), float(high))


def mean_over_seeds(fn: Callable[[np.ndarray], float]) -> Statistic:
    """A statistic that computes `fn` of each drawn seed's column means and averages over the drawn seeds."""
    def statistic(_ids: np.ndarray, means: list[np.ndarray]) -> float:
        return float(np.mean([fn(m) for m in means]))

    return statistic


def difference(a: int = 0, b: int = 1, scale: float = 100.0) -> Statistic:
    """Column a minus column b (points, with the default scale), averaged over seeds: a paired difference."""
    return mean_over_seeds(lambda m: (m[a] - m[b]) * scale)


def slope(xs: Sequence[float], scale: float = 100.0) -> Statistic:
    """The least-squares slope of the columns' seed-mean (× scale) against xs."""
    x = np.asarray(xs, dtype=float)

    def statistic(_ids: np.ndarray, means: list[np.ndarray]) -> float:
        return float(np.polyfit(x, np.mean(means, axis=0) * scale, 1)[0])

    return statistic
