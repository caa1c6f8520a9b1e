"""Curation for the controlled study: proportions, relation mix, determinism, clear shortfalls."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest

from knowtune.curate.new_knowledge_sets import (
    apportion,
    filter_known,
    mixture,
    natural,
    relabel_idk,
    single_category,
    study_sets,
)
from knowtune.data.formats import ABSTENTION
from knowtune.errors import ConfigError
from knowtune.probe.records import ProbeRecord
from knowtune.train.examples import answer_label


def make_pool() -> list[ProbeRecord]:
    """Relation a: 60 questions, b: 30, c: 10; each with every category."""
    pool, cats = [], ["HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown"]
    for rel, n in (("a", 60), ("b", 30), ("c", 10)):
        for i in range(n):
            pool.append(ProbeRecord(f"{rel}{i:03d}", rel, answers=(f"ans{i}",), category=cats[i % 4]))
    return pool


def test_apportion_is_exact_and_proportional():
    assert apportion({"a": 60, "b": 30, "c": 10}, 20) == {"a": 12, "b": 6, "c": 2}
    assert sum(apportion({"a": 1, "b": 1, "c": 1}, 10).values()) == 10
    assert apportion({"a": 1, "b": 1, "c": 1}, 10) == {"a": 4, "b": 3, "c": 3}


@pytest.mark.parametrize("x", [0, 25, 50, 75, 100])
def test_mixture_proportions_and_relation_mix(x):
    pool = make_pool()
    d = mixture(pool, 20, x, seed=0)
    cats = Counter(r.category for r in d)
    assert len(d) == 20 and len({r.id for r in d}) == 20
    assert cats["Unknown"] == round(20 * x / 100)
    assert Counter(r.relation for r in d) == {"a": 12, "b": 6, "c": 2}
    assert d == mixture(pool, 20, x, seed=0)
    assert x in (0, 100) or d != mixture(pool, 20, x, seed=1)


def test_unknown_split_per_relation():
    d = mixture(make_pool(), 20, 50, seed=0)
    unk = Counter(r.relation for r in d if r.category == "Unknown")
    assert unk == {"a": 6, "b": 3, "c": 1}


def test_shortfall_in_one_relation_moves_elsewhere():
    pool = [r for r in make_pool() if not (r.relation == "c" and r.category == "Unknown")]
    d = mixture(pool, 20, 50, seed=0)
    unk = Counter(r.relation for r in d if r.category == "Unknown")
    assert len(d) == 20 and sum(unk.values()) == 10
    assert unk == {"a": 7, "b": 3}  # c's one Unknown moved to the relation with most to spare


def test_request_larger_than_pool_fails_with_counts():
    with pytest.raises(ConfigError, match=r"needs 40 Unknown examples but the probed training pool has only 24 \(a 15, b 7, c 2\)"):
        mixture(make_pool(), 40, 100, seed=0)
    with pytest.raises(ConfigError, match="D_WeaklyKnown.*needs 30 WeaklyKnown.*only 24"):
        single_category(make_pool(), "WeaklyKnown", 30, seed=0)
    with pytest.raises(ConfigError, match="D_Natural"):
        natural(make_pool(), 101, seed=0)


def test_single_category_natural_known_idk():
    pool = make_pool()
    hk = single_category(pool, "HighlyKnown", 12, seed=0)
    assert {r.category for r in hk} == {"HighlyKnown"} and len(hk) == 12
    assert len(natural(pool, 30, seed=0)) == 30
    d = mixture(pool, 20, 50, seed=0)
    known = filter_known(d)
    assert len(known) == 10 and all(r.category != "Unknown" for r in known)
    idk = relabel_idk(d)
    assert [answer_label(r.to_dict()) for r in idk if r.category == "Unknown"] == [ABSTENTION] * 10
    assert [answer_label(r.to_dict()) for r in idk if r.category != "Unknown"] == [r.answers[0] for r in known]


def test_study_sets_names():
    pool = make_pool() * 1
    sets = study_sets([replace(r, id=r.id + s) for r in pool for s in ("x", "y")], 20, seed=0)
    assert set(sets) == {"D_0", "D_25", "D_50", "D_75", "D_100", "D_Known_25", "D_Known_50", "D_Known_75",
                         "D_HighlyKnown", "D_MaybeKnown", "D_WeaklyKnown", "D_Natural", "D_IDK"}
    assert len(sets["D_Known_75"]) == 5
