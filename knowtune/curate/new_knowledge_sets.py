"""Training sets for the controlled fine-tuning study (Gekhman et al. 2024) from SliCK-probed data.

* `mixture`: |D| examples with X % Unknown and the rest Known, sampled per relation so every
  variant keeps the pool's relation mix (where a relation runs short of one kind, the shortfall
  moves to the relations with the most to spare, and the manifest records the realised mix);
* `single_category`: D_HighlyKnown, D_MaybeKnown, D_WeaklyKnown, D_Unknown (|D| of one category);
* `natural`: D_Natural, a uniform sample of the pool (its natural category distribution);
* `filter_known`: D_Known, a set with its Unknown examples removed;
* `relabel_idk`: D_IDK, a set whose Unknown answers are replaced by "I don't know".
Everything is deterministic for a seed.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from knowtune.data.formats import ABSTENTION
from knowtune.errors import ConfigError
from knowtune.files import stable_int
from knowtune.probe.records import CATEGORIES, KNOWN, ProbeRecord

UNKNOWN_SHARES = (0, 25, 50, 75, 100)


def apportion(weights: dict[str, float], n: int) -> dict[str, int]:
    """Split n into integers proportional to `weights` (largest remainder, ties by name)."""
    total = sum(weights.values())
    exact = {k: n * w / total for k, w in weights.items()} if total else {k: 0.0 for k in weights}
    out = {k: int(q) for k, q in exact.items()}
    for k in sorted(exact, key=lambda k: (-(exact[k] - out[k]), k))[: n - sum(out.values())]:
        out[k] += 1
    return out


def relation_quota(pool: list[ProbeRecord], size: int) -> dict[str, int]:
    """Examples per relation for a set of `size` that keeps the pool's relation mix."""
    return apportion(dict(Counter(r.relation for r in pool)), size)


def _fill(want: dict[str, int], supply: dict[str, list[ProbeRecord]], what: str, size_note: str) -> dict[str, int]:
    """Take `want[rel]` from each relation's supply; move shortfalls to relations with spare supply."""
    have = {rel: len(supply.get(rel, [])) for rel in set(want) | set(supply)}
    total_want, total_have = sum(want.values()), sum(have.values())
    if total_want > total_have:
        per_rel = ", ".join(f"{r} {n}" for r, n in sorted(have.items()) if n)
        raise ConfigError(
            f"{size_note} needs {total_want} {what} examples but the probed training pool has only {total_have}"
            f" ({per_rel or 'none'}); lower the size or probe more training questions"
        )
    take = {rel: min(want.get(rel, 0), have[rel]) for rel in have}
    short = total_want - sum(take.values())
    while short:
        rel = max(have, key=lambda r: (have[r] - take[r], r))  # most spare first; deterministic
        take[rel] += 1
        short -= 1
    return take


def _sample(rows: list[ProbeRecord], n: int, seed: int, tag: str) -> list[ProbeRecord]:
    """n rows drawn without replacement, reproducibly (order of `rows` does not matter)."""
    rows = sorted(rows, key=lambda r: r.id)
    rng = np.random.default_rng(stable_int("curate", seed, tag))
    return [rows[i] for i in sorted(rng.choice(len(rows), size=n, replace=False))]


def _by_relation(pool: list[ProbeRecord], categories: tuple[str, ...]) -> dict[str, list[ProbeRecord]]:
    out: dict[str, list[ProbeRecord]] = defaultdict(list)
    for r in pool:
        if r.category in categories:
            out[r.relation].append(r)
    return out


def _draw(pool: list[ProbeRecord], size: int, parts: list[tuple[tuple[str, ...], int]], seed: int, name: str) -> list[ProbeRecord]:
    """Draw `size` examples made of `parts` (category group, count), each part split across
    relations in proportion to the pool's relation mix."""
    quota = relation_quota(pool, size)
    chosen: list[ProbeRecord] = []
    for i, (cats, n) in enumerate(parts):
        label = "Unknown" if cats == ("Unknown",) else "Known" if cats == KNOWN else "/".join(cats)
        want = quota if i == len(parts) - 1 else apportion(quota, n)
        quota = {r: quota[r] - want[r] for r in quota}
        supply = _by_relation(pool, cats)
        for rel, k in sorted(_fill(want, supply, label, f"{name} (|D|={size})").items()):
            if k:
                chosen += _sample(supply[rel], k, seed, f"{name}/{label}/{rel}")
    return sorted(chosen, key=lambda r: r.id)


def mixture(pool: list[ProbeRecord], size: int, unknown_percent: int, seed: int) -> list[ProbeRecord]:
    """D with `unknown_percent` % Unknown and the rest Known, relation mix kept."""
    if not 0 <= unknown_percent <= 100:
        raise ConfigError(f"unknown share must be within 0–100 %, got {unknown_percent}")
    n_unknown = round(size * unknown_percent / 100)
    return _draw(pool, size, [(("Unknown",), n_unknown), (KNOWN, size - n_unknown)], seed, f"D with {unknown_percent}% Unknown")


def single_category(pool: list[ProbeRecord], category: str, size: int, seed: int) -> list[ProbeRecord]:
    """D_<category>: |D| examples of one SliCK category, relation mix kept where possible."""
    if category not in CATEGORIES:
        raise ConfigError(f"unknown category {category!r}; choose one of {', '.join(CATEGORIES)}")
    return _draw(pool, size, [((category,), size)], seed, f"D_{category}")


def natural(pool: list[ProbeRecord], size: int, seed: int) -> list[ProbeRecord]:
    """D_Natural: a uniform random sample of the pool."""
    if size > len(pool):
        raise ConfigError(f"D_Natural (|D|={size}) needs {size} examples but the probed training pool has {len(pool)}")
    return _sample(pool, size, seed, "natural")


def filter_known(rows: list[ProbeRecord]) -> list[ProbeRecord]:
    """D_Known: the set with its Unknown examples removed."""
    return [r for r in rows if r.category != "Unknown"]


def relabel_idk(rows: list[ProbeRecord], label: str = ABSTENTION) -> list[ProbeRecord]:
    """D_IDK: Unknown examples keep their question but are labelled "I don't know" (or `label`)."""
    return [r.relabelled(label) if r.category == "Unknown" else r for r in rows]


def study_sets(pool: list[ProbeRecord], size: int, seed: int, idk_unknown_percent: int = 50) -> dict[str, list[ProbeRecord]]:
    """Every training set of the study, by name. D_Unknown is D with 100 % Unknown (the same set)."""
    if size > len(pool):  # every set draws |D| distinct questions from the pool
        raise ConfigError(f"|D| = {size} is more than the {len(pool)} probed training questions")
    sets: dict[str, list[ProbeRecord]] = {}
    for x in UNKNOWN_SHARES:
        sets[f"D_{x}"] = mixture(pool, size, x, seed)
    for x in UNKNOWN_SHARES[1:-1]:
        sets[f"D_Known_{x}"] = filter_known(sets[f"D_{x}"])
    for cat in KNOWN:
        sets[f"D_{cat}"] = single_category(pool, cat, size, seed)
    sets["D_Natural"] = natural(pool, size, seed)
    # Any share 0–100 is buildable: one not among the study's mixtures is drawn as its own mixture.
    idk_base = sets.get(f"D_{idk_unknown_percent}") or mixture(pool, size, idk_unknown_percent, seed)
    sets["D_IDK"] = relabel_idk(idk_base)
    return sets


def describe_set(rows: list[ProbeRecord]) -> dict:
    """Size, category counts and relation mix of a curated set."""
    return {
        "size": len(rows),
        "categories": dict(Counter(r.category for r in rows)),
        "relations": dict(sorted(Counter(r.relation for r in rows).items())),
    }
