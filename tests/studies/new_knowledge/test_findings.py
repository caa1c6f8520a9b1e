"""The new-knowledge study's findings (Gekhman et al. 2024) on hand-made runs: a made-up study in which
test accuracy is exactly Acc = β0 + β_kn·N_kn/|D| + β_unk·N_unk/|D| of the fitted examples, so every
aggregate is known by hand; every run answers the same test questions, the first round(acc·n) of them
right, so runs are paired by difficulty. Each of the seven findings is reproduced in a paper-like world,
contradicted when its premise is reversed clearly, and inconclusive when the difference is within its
interval or the sets it needs were not trained."""

from __future__ import annotations

import numpy as np
import pytest

from knowtune.studies.new_knowledge.findings import analyse
from knowtune.studies.registry import get_study
from knowtune.studies.verdicts import CONTRADICTED as C
from knowtune.studies.verdicts import INCONCLUSIVE as I
from knowtune.studies.verdicts import REPRODUCED as R

KNOWN = ("HighlyKnown", "MaybeKnown", "WeaklyKnown")
SIZE = 100  # |D| of every D_x
QUESTIONS = 200  # test questions answered by every run
CLAIMS = ["Unknown examples are fitted more slowly", "Test accuracy at convergence falls", "Early stopping limits",
          "Accuracy rises with fitted Known", "Filtering out Unknown", "Relabelling Unknown", "Fine-tuning on MaybeKnown"]


@pytest.fixture(scope="module")
def cfg():
    return get_study("new-knowledge").load_config("quick", {})


def _run(sizes: dict[str, int], fits: list[dict[str, float]], world: dict, idk: float | None = None) -> dict:
    """One training run: per epoch the fit of each group (`fits`), the fitted counts, and test accuracy
    from the world's linear model (percent); EARLY_STOP is epoch 1, CONVERGENCE the last."""
    b0, bkn, bunk = world["betas"]
    size = sum(sizes.values())
    metrics, outcomes = [], {}
    for epoch, fit in enumerate(fits, start=1):
        fitted = {g: round(fit[g] * n) for g, n in sizes.items()}
        kn, unk = sum(fitted.get(g, 0) for g in KNOWN) / size, fitted.get("Unknown", 0) / size
        acc = (b0 + bkn * kn + bunk * unk) / 100
        test = {"accuracy": acc, "accuracy_by_category": {"HighlyKnown": acc + 0.3, "MaybeKnown": acc, "WeaklyKnown": acc / 2,
                                                          "Unknown": acc / 10},
                "answered_accuracy": acc, "answered_share": 1.0, "hallucination_rate": 1 - acc}
        if idk is not None:  # D_IDK abstains on a third of the questions and is right more often on the rest
            test.update(answered_accuracy=idk, answered_share=0.6, hallucination_rate=0.6 * (1 - idk))
        outcomes[epoch] = {"test": _answers(acc, idk), "fit": _fitted(sizes, fitted)}
        metrics.append({"epoch": epoch, "train_loss": 1.0 / epoch, "dev_accuracy": acc, "test_accuracy": acc,
                        "ood_accuracy": acc - 0.05, "test": test, "ood": {**test, "accuracy": acc - 0.05},
                        "fit_by_group": {g: fitted[g] / n for g, n in sizes.items()}, "fitted_by_group": fitted,
                        "group_sizes": dict(sizes)})
    return {"metrics": metrics, "early_stop_epoch": 1, "convergence_epoch": len(fits), "size": size, "outcomes": outcomes}


def _answers(acc: float, idk: float | None, n: int = QUESTIONS) -> dict:
    """Per test question: the first round(acc·n) are answered right (so runs are paired by difficulty);
    D_IDK answers the first 60 % and is right on round(idk·60 %) of them."""
    if idk is None:
        return {f"q{i}": {"correct": i < round(acc * n), "abstained": False} for i in range(n)}
    answered = round(0.6 * n)
    return {f"q{i}": {"correct": i < round(idk * answered), "abstained": i >= answered} for i in range(n)}


def _fitted(sizes: dict[str, int], fitted: dict[str, int]) -> dict:
    """Per training example: the first `fitted[g]` examples of each group are fitted."""
    return {f"{g}{i}": {"group": g, "fitted": i < fitted[g]} for g, n in sizes.items() for i in range(n)}


def _fits(sizes: dict[str, int], known: tuple[float, float], unknown: tuple[float, float]) -> list[dict[str, float]]:
    return [{g: (unknown if g == "Unknown" else known)[e] for g in sizes} for e in (0, 1)]


def _mixture(x: int, known_only: bool = False) -> dict[str, int]:
    k = SIZE - x
    sizes = {"HighlyKnown": k // 2, "MaybeKnown": k - k // 2, "Unknown": 0 if known_only else x}
    return {g: n for g, n in sizes.items() if n}


def world(betas=(40.0, 10.0, -20.0), known_fit=(0.8, 1.0), unknown_fit=(0.2, 1.0), d50_known_fit=None, d50_unknown_fit=None,
          hk_fit=(0.4, 0.6), mk_fit=(0.8, 1.0), idk=(0.6, 0.7), seeds=2, drop=()) -> dict:
    """seed → set name → run, for every set the study trains (less `drop`); the world's defaults are paper-like:
    Known fitted before Unknown, accuracy falling with fitted Unknown, MaybeKnown best, D_IDK accurate when it answers."""
    w = {"betas": betas}
    runs = {}
    for seed in range(seeds):
        by = {}
        for x in (0, 25, 50, 75, 100):
            kf, uf = (d50_known_fit or known_fit, d50_unknown_fit or unknown_fit) if x == 50 else (known_fit, unknown_fit)
            by[f"D_{x}"] = _run(_mixture(x), _fits(_mixture(x), kf, uf), w)
            if 0 < x < 100:
                by[f"D_Known_{x}"] = _run(_mixture(x, True), _fits(_mixture(x, True), known_fit, unknown_fit), w)
        for cat, fit in (("HighlyKnown", hk_fit), ("MaybeKnown", mk_fit), ("WeaklyKnown", known_fit)):
            by[f"D_{cat}"] = _run({cat: SIZE}, _fits({cat: SIZE}, fit, unknown_fit), w)
        natural = {"HighlyKnown": 40, "MaybeKnown": 20, "WeaklyKnown": 10, "Unknown": 30}
        by["D_Natural"] = _run(natural, _fits(natural, known_fit, unknown_fit), w)
        by["D_IDK"] = _run(_mixture(50), _fits(_mixture(50), known_fit, unknown_fit), w, idk=idk[seed % len(idk)])
        runs[seed] = {n: r for n, r in by.items() if n not in drop}
    return runs


def verdicts(cfg, runs, probed=None) -> list[str]:
    results = analyse(cfg, probed or {"test": [{}] * 10}, runs)
    assert [f["claim"].startswith(c) for f, c in zip(results["findings"], CLAIMS)] == [True] * 7
    return [f["verdict"] for f in results["findings"]]


def test_a_paper_like_world_reproduces_every_finding_with_numbers_by_hand(cfg):
    results = analyse(cfg, {"test": [{}] * 96, "dev": [{}] * 32}, world())
    assert results["sizes"] == {"test": 96, "dev": 32}
    assert [f["verdict"] for f in results["findings"]] == [R] * 7
    agg, f = results["aggregate"], results["findings"]
    # accuracy at convergence, everything fitted: 40 + 10·(1 − x) − 20·x = 50 − 30·x (x the Unknown share)
    conv = agg["accuracy_vs_unknown"]["D"]["convergence"]
    for x in (0, 25, 50, 75, 100):
        assert conv[x] == {"mean": pytest.approx((50 - 30 * x / 100) / 100), "std": 0.0, "n": 2}
    assert "slope -30.0 points per 100 % Unknown" in f[1]["this_run"]
    # early stop: 80 % of Known and 20 % of Unknown fitted: D_0 48 → 50 (−2 drop... a rise), D_100 36 → 20 (16 drop)
    es = agg["accuracy_vs_unknown"]["D"]["early_stop"]
    assert es[0]["mean"] == pytest.approx(0.48) and es[100]["mean"] == pytest.approx(0.36)
    assert f[2]["this_run"].startswith("0% Unknown: 48.0 ± 0.0 → 50.0 ± 0.0; 100% Unknown: 36.0 ± 0.0 → 20.0 ± 0.0; "
                                       "drop at 100 % − drop at 0 %: +18.0 [")
    assert f[2]["estimate"] == pytest.approx(18) and f[2]["ci"][0] > 0 and f[2]["detectable"] > 0
    # D_50: Known fit 0.8 then 1.0, Unknown 0.2 then 1.0 → Known − Unknown averages (0.6 + 0) / 2 = 30 points
    assert f[0]["this_run"].startswith("Known − Unknown fit, mean over epochs: +30.0 [") and f[0]["estimate"] == pytest.approx(30)
    assert "epochs to 50 % fit: Known [1, 1], Unknown [2, 2]" in f[0]["this_run"]
    curves = agg["fit_curves"]["D_50"]
    assert curves["Known"][1]["mean"] == pytest.approx(0.8) and curves["Unknown"][1]["mean"] == pytest.approx(0.2)
    # the linear model is exact in this world
    lm = agg["linear_model"]["test"]["pooled"]
    assert (lm["beta0"], lm["beta_kn"], lm["beta_unk"], lm["r2"]) == (pytest.approx(40), pytest.approx(10), pytest.approx(-20),
                                                                     pytest.approx(1))
    n_sets = 5 + 3 + 3 + 1  # D_x, D_Known_x, single categories, D_Natural; D_IDK is left out
    assert lm["n_points"] == 2 * n_sets * 2  # seeds × sets × epochs
    assert agg["linear_model"]["test"]["per_seed"]["beta_kn"] == {"mean": pytest.approx(10), "std": pytest.approx(0), "n": 2}
    assert "pooled β0 40.0, β_kn 10.0, β_unk -20.0, R² 1.00 (48 points)" in f[3]["this_run"]
    # D_Known_x is all Known, fully fitted at convergence: 50, against D's 50 − 30·x
    assert f[4]["this_run"].startswith("D_Known − D at convergence: 25%: +7.5, 50%: +15.0, 75%: +22.5; mean +15.0 [")
    # D_IDK answers 60 % of the questions, 60 % and 70 % right over the seeds; D_50 at early stop: 40 + 4 − 2 = 42
    idk = agg["idk"]
    assert idk["D_50"]["early_stop"]["accuracy"]["mean"] == pytest.approx(0.42)
    assert idk["D_IDK"]["early_stop"]["answered_accuracy"] == {"mean": pytest.approx(0.65), "std": pytest.approx(np.std([0.6, 0.7], ddof=1)), "n": 2}
    assert f[5]["this_run"] == "D_50: 42.0 ± 0.0 on all; D_IDK: 65.0 ± 7.1 on the 60.0 ± 0.0 % answered"
    # Table 2: MaybeKnown fitted 0.8 / 1.0 → 48 / 50; HighlyKnown 0.4 / 0.6 → 44 / 46
    t2 = agg["table2"]
    assert t2["D_MaybeKnown"]["convergence"]["all"]["mean"] == pytest.approx(0.50)
    assert t2["D_HighlyKnown"]["early_stop"]["all"]["mean"] == pytest.approx(0.44)
    assert t2["D_Unknown"]["convergence"]["all"]["mean"] == pytest.approx(0.20)  # D_Unknown is D_100
    assert t2["D_HighlyKnown"]["convergence"]["Unknown"]["mean"] == pytest.approx(0.046)
    assert "early_stop: D_MaybeKnown 48.0 ± 0.0 vs D_HighlyKnown 44.0 ± 0.0 (difference +4.0 [" in f[6]["this_run"]
    # 8 of the 200 questions differ: a draw holds Binomial(200, 0.04) of them, sd 2.8 questions = 1.4 points
    low, high = f[6]["parts"][0]["ci"]
    assert 4.0 - 2 * 1.4 - 0.6 <= low <= 4.0 - 2 * 1.4 + 0.6 and 4.0 + 2 * 1.4 - 0.6 <= high <= 4.0 + 2 * 1.4 + 0.6
    assert results["diverged"] == {} and set(results["runs"]) == {"seed0", "seed1"}


@pytest.mark.parametrize("changes, expect", [
    # Unknown fitted faster than Known in D_50
    ({"d50_known_fit": (0.3, 1.0), "d50_unknown_fit": (0.9, 1.0)}, [C, R, R, R, R, R, R]),
    # accuracy rises with fitted Unknown and falls with fitted Known: β signs reversed
    ({"betas": (40.0, -10.0, 20.0)}, [R, C, C, C, C, R, C]),
    # fitted Unknown helps, less than fitted Known: accuracy still falls with the Unknown share (50 − 5·x), but
    # β_unk > 0, and early stopping no longer helps (D_100 41 → 45 rises more than D_0 48 → 50): a 2-point
    # difference on 200 questions, inside its interval, so inconclusive rather than contradicted
    ({"betas": (40.0, 10.0, 5.0)}, [R, R, I, C, R, R, R]),
    # D_IDK is less accurate on what it answers (30 and 32 %) than D_50 on everything (42 %)
    ({"idk": (0.30, 0.32)}, [R, R, R, R, R, C, R]),
    # HighlyKnown beats MaybeKnown
    ({"hk_fit": (0.8, 1.0), "mk_fit": (0.4, 0.6)}, [R, R, R, R, R, R, C]),
    # equal at early stop: "beats" needs both stages, and no difference is no evidence either way
    ({"hk_fit": (0.8, 0.9), "mk_fit": (0.8, 1.0)}, [R, R, R, R, R, R, I]),
])
def test_reversed_premises_are_not_reproduced(cfg, changes, expect):
    assert verdicts(cfg, world(**changes)) == expect


def test_accuracy_rising_with_unknown_gives_a_positive_slope(cfg):
    results = analyse(cfg, {"test": [{}]}, world(betas=(40.0, -10.0, 20.0)))
    # convergence: 40 − 10·(1 − x) + 20·x = 30 + 30·x
    assert "slope +30.0 points per 100 % Unknown" in results["findings"][1]["this_run"]
    lm = results["aggregate"]["linear_model"]["test"]["pooled"]
    assert lm["beta_kn"] == pytest.approx(-10) and lm["beta_unk"] == pytest.approx(20)


@pytest.mark.parametrize("drop, expect", [
    # nothing trained: nothing to say
    (["D_0", "D_25", "D_50", "D_75", "D_100", "D_Known_25", "D_Known_50", "D_Known_75", "D_HighlyKnown", "D_MaybeKnown",
      "D_WeaklyKnown", "D_Natural", "D_IDK"], [I] * 7),
    # no D_50: no fit gap, and the IDK comparison has no D to compare with
    (["D_50", "D_Known_50"], [I, R, R, R, R, I, R]),
    (["D_IDK"], [R, R, R, R, R, I, R]),
    (["D_Known_25", "D_Known_50", "D_Known_75"], [R, R, R, R, I, R, R]),
    (["D_MaybeKnown"], [R, R, R, R, R, R, I]),
    (["D_HighlyKnown"], [R, R, R, R, R, R, I]),
    # D_0 and D_100 alone: the slope and the early-stop gap still stand
    (["D_25", "D_50", "D_75", "D_Known_25", "D_Known_50", "D_Known_75", "D_HighlyKnown", "D_MaybeKnown", "D_WeaklyKnown",
      "D_Natural", "D_IDK"], [I, R, R, R, I, I, I]),
])
def test_missing_sets_give_no_verdict(cfg, drop, expect):
    assert verdicts(cfg, world(drop=drop)) == expect


def test_too_few_points_for_the_linear_model(cfg):
    # one set, one seed, one epoch: fewer than 3 points
    runs = {0: {"D_50": {**world(seeds=1)[0]["D_50"]}}}
    runs[0]["D_50"]["metrics"] = runs[0]["D_50"]["metrics"][:1]
    runs[0]["D_50"]["convergence_epoch"] = 1
    results = analyse(cfg, {"test": [{}]}, runs)
    assert results["aggregate"]["linear_model"]["test"]["pooled"]["beta_kn"] is None
    assert results["findings"][3]["verdict"] == I and results["findings"][3]["this_run"] == "n/a"


def test_diverged_runs_are_left_out_and_listed(cfg):
    runs = world()
    runs[1]["D_IDK"] = {"metrics": [], "diverged": "loss became nan at epoch 1", "size": SIZE}
    runs[0]["D_IDK"] = {**runs[0]["D_IDK"], "diverged": "loss became inf at epoch 2"}
    results = analyse(cfg, {"test": [{}]}, runs)
    assert results["diverged"] == {"seed0/D_IDK": "loss became inf at epoch 2", "seed1/D_IDK": "loss became nan at epoch 1"}
    assert results["findings"][5]["verdict"] == I  # no D_IDK run finished
    assert results["aggregate"]["idk"]["D_IDK"]["early_stop"]["accuracy"]["n"] == 0


def test_out_of_distribution_test_set(cfg):
    results = analyse(cfg, {"test": [{}] * 4, "ood": [{}] * 3}, world())
    assert results["sizes"] == {"test": 4, "ood": 3}
    ood = results["aggregate"]["linear_model"]["ood"]["pooled"]  # the OOD accuracy is 5 points below the test's
    assert (ood["beta0"], ood["beta_kn"], ood["beta_unk"]) == (pytest.approx(35), pytest.approx(10), pytest.approx(-20))
    conv = results["aggregate"]["accuracy_vs_unknown_ood"]["D"]["convergence"]
    assert conv[100]["mean"] == pytest.approx(0.15)
    assert analyse(cfg, {"test": [{}]}, world())["aggregate"]["accuracy_vs_unknown_ood"] is None


def test_a_falling_slope_without_d0_or_d100_is_no_verdict(cfg):
    # D_25, D_50, D_75 give a falling slope (−30 points); D_100 below D_0 cannot be checked: the slope alone, or n/a
    assert verdicts(cfg, world(drop=["D_0", "D_100"]))[1] in (R, I)


def test_a_diverged_d50_beside_a_finished_d_known_50(cfg):
    runs = world()
    for by in runs.values():
        by["D_50"] = {"metrics": [], "diverged": "loss became nan at epoch 1", "size": SIZE}
    assert verdicts(cfg, runs)[4] == R  # D_Known − D at 25 % and 75 % still stand


def test_runs_without_per_question_outputs_give_no_interval_and_say_so(cfg):
    runs = world(seeds=1)
    for run in runs[0].values():
        del run["outcomes"]  # a run directory written before knowtune stored per-question outputs
    results = analyse(cfg, {"test": [{}]}, runs)
    assert [(f["verdict"], f["ci"]) for f in results["findings"]] == [(I, None)] * 7
    assert results["caveats"] and "no per-question outputs" in results["caveats"][0]
    assert analyse(cfg, {"test": [{}]}, world(seeds=1))["caveats"] == []


def test_constant_accuracy_leaves_r2_undefined_and_the_finding_and_report_say_so(cfg, tmp_path):
    from knowtune.studies.new_knowledge.report import write_report

    results = analyse(cfg, {"test": [{}] * 10}, world(betas=(40.0, 0.0, 0.0)))  # every run answers 40 % right
    assert results["aggregate"]["linear_model"]["test"]["pooled"]["r2"] is None
    assert "R² n/a (accuracy constant)" in results["findings"][3]["this_run"]
    write_report({**results, "config": cfg.model_dump()}, tmp_path / "report.html")
    assert "n/a" in (tmp_path / "report.html").read_text(encoding="utf-8")
