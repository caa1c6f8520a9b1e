"""The exact estimator on the probe: same greedy and HighlyKnown/MaybeKnown as sampled, drawn categories
distributed as P(WeaklyKnown), sampled records unchanged, no deprecation warning on the probe and fit paths."""

from __future__ import annotations

import json
import warnings

import pytest
from scipy.stats import binomtest
from test_slick import make_dataset

from knowtune.engine import HFTreeEngine
from knowtune.errors import ConfigError
from knowtune.probe.config import probe_config
from knowtune.probe.exact import (
    exact_categories,
    probe_examples_exact,
    weakly_known_probability,
)
from knowtune.probe.slick import load_records, run_probe
from knowtune.train.fit import teacher_forced_fit

SETTINGS = {"n_exemplar_sets": "3", "n_samples": "6", "max_new_tokens": "6"}


def run(model, tok, out, estimator: str):
    ds = make_dataset()
    cfg = probe_config("paper", {**SETTINGS, "estimator": estimator})
    run_probe(HFTreeEngine(model, tok, batch_size=4), ds, ds.split("test"), cfg, out, {"spec": "tiny"}, progress=False)
    return {r.id: r for r in load_records(out / "probe.jsonl")}


def test_exact_shares_greedy_and_known_categories_with_sampled(tiny_model, tiny_tokenizer, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no deprecated transformers path (past_key_values) on the probe
        sampled = run(tiny_model, tiny_tokenizer, tmp_path / "s", "sampled")
        exact = run(tiny_model, tiny_tokenizer, tmp_path / "e", "exact")
    assert sampled.keys() == exact.keys()
    for q, s in sampled.items():
        e = exact[q]
        assert e.greedy == s.greedy and e.p_greedy == s.p_greedy
        merged = lambda c: "WeaklyKnown|Unknown" if c in ("WeaklyKnown", "Unknown") else c
        assert merged(e.category) == merged(s.category)
        assert len(e.extra["p_sets"]) == 3 and e.p_sample == pytest.approx(sum(e.extra["p_sets"]) / 3)
        assert e.extra["p_weakly_known"] == pytest.approx(weakly_known_probability(e.extra["p_sets"], 6))
        assert e.sample_correct is None and e.samples is None
    # probe.jsonl of the sampled estimator keeps its keys: nothing new
    line = json.loads((tmp_path / "s" / "probe.jsonl").read_text().splitlines()[0])
    assert list(line) == ["id", "relation", "subject", "question", "answers", "popularity", "split", "greedy",
                          "greedy_correct", "sample_correct", "samples", "p_greedy", "p_sample", "category"]


def test_fit_raises_no_deprecation_warning(tiny_model, tiny_tokenizer):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        teacher_forced_fit(tiny_model, tiny_tokenizer, [("Q: a\nA:", " Paris\n"), ("Q: bb\nA:", " Au\n")])


def test_weakly_known_probability():
    assert weakly_known_probability([0.0, 0.0], 16) == 0.0
    assert weakly_known_probability([0.5], 2) == pytest.approx(0.75)
    assert weakly_known_probability([0.1, 0.2], 3) == pytest.approx(1 - 0.9**3 * 0.8**3)
    assert weakly_known_probability([1e-18], 16) == pytest.approx(16e-18)  # not lost to 1 - (1 - p)
    assert weakly_known_probability([0.3], 0) == 0.0


def test_drawn_category_follows_its_probability():
    assert exact_categories(1.0, 0.0, 0, "q") == ("HighlyKnown", "HighlyKnown")
    assert exact_categories(0.5, 0.9, 0, "q") == ("MaybeKnown", "MaybeKnown")
    for p in (0.05, 0.3, 0.8):
        drawn = [exact_categories(0.0, p, 0, f"q{i}") for i in range(4000)]
        assert {e for e, _ in drawn} == {"WeaklyKnown" if p >= 0.5 else "Unknown"}
        wk = sum(d == "WeaklyKnown" for _, d in drawn)
        assert binomtest(wk, 4000, p).pvalue > 1e-3


def test_exact_needs_the_hf_engine():
    ds = make_dataset()
    with pytest.raises(ConfigError, match="estimator: 'exact' needs the hf engine"):
        probe_examples_exact(object(), ds, ds.split("test"), probe_config("paper", {"estimator": "exact"}))


def test_exact_records_independent_of_batching(tiny_model, tiny_tokenizer):
    ds = make_dataset()
    qs = ds.split("test")
    cfg = probe_config("paper", {**SETTINGS, "estimator": "exact"})
    one = probe_examples_exact(HFTreeEngine(tiny_model, tiny_tokenizer, batch_size=1), ds, qs[:6], cfg)
    many = probe_examples_exact(HFTreeEngine(tiny_model, tiny_tokenizer, batch_size=6), ds, qs[:6][::-1], cfg)
    assert one == many[::-1]
