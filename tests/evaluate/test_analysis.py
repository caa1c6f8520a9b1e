"""The study's analyses and QA scoring on hand-made cases."""

import numpy as np
import pytest

from knowtune.evaluate.analysis import epochs_to_fit, fit_linear_model, fitted_fractions
from knowtune.evaluate.qa import question_rows, score_qa
from knowtune.probe.records import ProbeRecord


def test_linear_model_recovers_known_betas():
    rng = np.random.default_rng(0)
    pts = [(kn, unk, 0.37 + 0.07 * kn - 0.08 * unk) for kn, unk in rng.uniform(0, 1, size=(30, 2))]
    lm = fit_linear_model(pts)
    assert lm["beta0"] == pytest.approx(0.37) and lm["beta_kn"] == pytest.approx(0.07) and lm["beta_unk"] == pytest.approx(-0.08)
    assert lm["r2"] == pytest.approx(1.0)
    noisy = fit_linear_model([(kn, unk, acc + n) for (kn, unk, acc), n in zip(pts, rng.normal(0, 0.02, 30))])
    assert 0 < noisy["r2"] < 1
    assert fit_linear_model(pts[:2])["beta0"] is None


def test_fitted_fractions_and_epochs_to_fit():
    row = {"fitted_by_group": {"HighlyKnown": 3, "MaybeKnown": 2, "Unknown": 1}}
    assert fitted_fractions(row, 10) == (0.5, 0.1)
    metrics = [{"epoch": e, "fit_by_group": {"Known": k, "Unknown": u}} for e, k, u in [(1, 0.2, 0.0), (2, 0.6, 0.1), (3, 0.9, 0.5)]]
    assert epochs_to_fit(metrics, ["Known", "Unknown", "Other"]) == {"Known": 2, "Unknown": 3, "Other": None}


def test_score_qa_hallucination_and_abstention():
    recs = [ProbeRecord(str(i), "r", answers=(answer,), category=category) for i, (answer, category) in enumerate(
        [("Paris", "HighlyKnown"), ("Lima", "Unknown"), ("Suva", "Unknown"), ("Oslo", "HighlyKnown")])]
    m = score_qa(recs, ["paris", "I don't know.", "Nadi", "Oslo"])
    assert m["accuracy"] == 0.5
    assert m["accuracy_by_category"] == {"HighlyKnown": 1.0, "Unknown": 0.0}
    assert m["hallucination_rate"] == 0.25
    assert m["answered_share"] == 0.75 and m["answered_accuracy"] == pytest.approx(2 / 3)
    rows = question_rows(recs, ["paris", "I don't know.", "Nadi", "Oslo"])  # what the studies store per question
    assert [(r["id"], r["correct"], r["abstained"]) for r in rows] == [("0", True, False), ("1", False, True), ("2", False, False),
                                                                      ("3", True, False)]
    assert rows[2] == {"id": "2", "category": "Unknown", "prediction": "Nadi", "correct": False, "abstained": False}
