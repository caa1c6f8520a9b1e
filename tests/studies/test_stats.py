"""The shared bootstrap and the three-valued verdicts on hand-made data whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

from knowtune.studies.stats import (
    BOOTSTRAP,
    Interval,
    bootstrap,
    column_means,
    difference,
    slope,
    wilson,
)
from knowtune.studies.verdicts import (
    CONTRADICTED,
    INCONCLUSIVE,
    REPRODUCED,
    Finding,
    check,
    combine,
)


def paired(rng, n: int, diff: float, base: float = 0.4) -> np.ndarray:
    """n questions answered by two variants: each question's difficulty shared, A right `diff` more often."""
    p = rng.uniform(base - 0.2, base + 0.2, n)
    return np.c_[rng.random(n) < p + diff, rng.random(n) < p].astype(float)


def test_a_large_true_difference_is_reproduced_and_its_reverse_contradicted():
    rng = np.random.default_rng(0)
    data = [paired(rng, 200, 0.3) for _ in range(3)]
    iv = bootstrap(data, difference(), shared=True)
    assert 20 < iv.estimate < 40 and iv.low > 0
    assert check(iv).verdict == REPRODUCED
    assert check(iv, above=False).verdict == CONTRADICTED  # a paper that said A is worse
    reverse = bootstrap([d[:, ::-1] for d in data], difference(), shared=True)
    assert reverse.estimate == pytest.approx(-iv.estimate) and check(reverse).verdict == CONTRADICTED


def test_zero_difference_with_noise_is_inconclusive_and_says_what_it_could_detect():
    rng = np.random.default_rng(1)
    iv = bootstrap([paired(rng, 100, 0.0)], difference(), shared=True)
    c = check(iv)
    assert c.verdict == INCONCLUSIVE and iv.low < 0 < iv.high
    # two independent Bernoulli answers per question at p≈0.4: sd of the difference ≈ 0.69 / √100 → ±13.5 points
    assert c.detectable == pytest.approx(13.5, abs=3)


def test_the_95_interval_covers_the_true_difference_about_95_percent_of_the_time():
    # 400 simulated paired samples of 100 questions, true difference 5 points. The coverage of a correct
    # 95 % interval is Binomial(400, 0.95)/400 with sd 1.1 points; 3 sd either side is the tolerance.
    rng = np.random.default_rng(2)
    hits = 0
    for r in range(400):
        iv = bootstrap([paired(rng, 100, 0.05)], difference(), shared=True, replicates=400, seed=r)
        hits += iv.low <= 5.0 <= iv.high
    assert 0.95 - 3 * 0.0109 <= hits / 400 <= 0.95 + 3 * 0.0109


def test_hierarchical_intervals_widen_with_the_spread_over_seeds_and_still_cover():
    # Each seed shifts A's advantage by N(0, 15 points); 8 seeds, 60 shared questions.
    rng = np.random.default_rng(3)
    hits, widths, flat = 0, [], []
    for r in range(150):
        p = rng.uniform(0.2, 0.6, 60)
        seeds = [np.c_[rng.random(60) < p + 0.05 + rng.normal(0, 0.15), rng.random(60) < p].astype(float) for _ in range(8)]
        iv = bootstrap(seeds, difference(), shared=True, replicates=300, seed=r)
        hits += iv.low <= 5.0 <= iv.high
        widths.append(iv.high - iv.low)
        # the same data with the seed spread removed: only the questions' noise is left
        calm = [np.c_[rng.random(60) < p + 0.05, rng.random(60) < p].astype(float) for _ in range(8)]
        calm_iv = bootstrap(calm, difference(), shared=True, replicates=300, seed=r)
        flat.append(calm_iv.high - calm_iv.low)
    # resampling seeds then questions counts the questions' noise at both levels, so it errs wide (documented)
    assert hits / 150 >= 0.90
    assert np.mean(widths) > 1.3 * np.mean(flat)


def test_seeds_with_their_own_questions_are_resampled_separately():
    rng = np.random.default_rng(4)
    data = [paired(rng, n, 0.3) for n in (50, 80, 120)]  # flearning: every seed has its own edits
    iv = bootstrap(data, difference(), shared=False, replicates=500)
    assert iv.low > 0
    with pytest.raises(ValueError, match="same number of rows"):
        bootstrap(data, difference(), shared=True)


def test_slopes_missing_values_and_undefined_statistics():
    rng = np.random.default_rng(5)
    xs = [0, 25, 50, 75, 100]
    # accuracy falls 0.6 → 0.2 across five sets on the same 200 questions: slope −40 points per 100 %
    p = rng.uniform(0, 1, 200)
    cols = np.stack([(p < 0.6 - 0.1 * i).astype(float) for i in range(5)], axis=1)
    iv = bootstrap([cols], slope([x / 100 for x in xs]), shared=True)
    assert iv.estimate == pytest.approx(-40, abs=5) and iv.high < 0
    # NaN is a missing value: column means skip it
    assert column_means(np.array([[1.0, np.nan], [0.0, 1.0]])).tolist() == [0.5, 1.0]
    assert bootstrap([], difference(), shared=True) is None
    assert bootstrap([np.full((5, 2), np.nan)], difference(), shared=True) is None


def test_the_same_seed_gives_the_same_interval_and_is_recorded():
    rng = np.random.default_rng(6)
    data = [paired(rng, 50, 0.1)]
    assert bootstrap(data, difference(), True) == bootstrap(data, difference(), True)
    assert BOOTSTRAP["replicates"] >= 1000 and isinstance(BOOTSTRAP["seed"], int)


def test_close_to_claims_use_the_stated_margin():
    # "within 2 points of B, or above": the threshold is −2
    assert check(Interval(-1.0, -1.5, -0.5), threshold=-2).verdict == REPRODUCED
    assert check(Interval(-5.0, -6.0, -3.0), threshold=-2).verdict == CONTRADICTED
    assert check(Interval(-1.0, -4.0, 2.0), threshold=-2).verdict == INCONCLUSIVE
    assert "above -2 points" in check(None, threshold=-2).rule and check(None).verdict == INCONCLUSIVE


def test_a_claim_of_several_parts():
    yes, no, unsure = check(Interval(3, 1, 5), label="R"), check(Interval(-3, -5, -1), label="G"), check(Interval(0, -1, 1), label="L")
    assert combine([yes, yes]).verdict == REPRODUCED
    both = combine([yes, unsure, no])
    assert both.verdict == CONTRADICTED and both.estimate == -3 and both.ci == (-5, -1)
    assert combine([yes, unsure]).verdict == INCONCLUSIVE and combine([yes, unsure]).label == "L"
    d = Finding("claim", "paper", "this run", both, {"set": "x"}).to_dict()
    assert (d["estimate"], d["ci"], d["verdict"], d["detectable"], d["threshold"], d["set"]) == (-3, [-5, -1], CONTRADICTED, 2, 0, "x")
    assert [p["label"] for p in d["parts"]] == ["R", "L", "G"]
    back = Finding.from_dict(d)
    assert back.verdict == CONTRADICTED and back.summary == "-3.0 [-5.0, -1.0] (±2.0)" and back.extra["set"] == "x"


def test_a_correlation_keeps_its_units_and_two_decimals():
    r = Finding("claim", "paper", "this run", check(Interval(0.42, 0.11, 0.73), units="Pearson r")).to_dict()
    assert r["units"] == "Pearson r" and "above 0 Pearson r" in r["rule"]
    back = Finding.from_dict(r)
    assert back.check.units == "Pearson r" and back.summary == "+0.42 [+0.11, +0.73] (±0.31)" and "units" not in back.extra


def test_wilson_interval_matches_scipy():
    for k, n in ((0, 10), (3, 10), (40, 80), (80, 80), (191, 714)):
        ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert wilson(k, n) == pytest.approx((ci.low, ci.high))
