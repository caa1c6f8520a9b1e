"""SliCK categories, the probe run directory, resume and determinism, on a tiny random model."""

from __future__ import annotations

import json

import pytest

from knowtune.data.formats import build_prompt, exemplar_sets
from knowtune.data.records import QADataset, QAExample
from knowtune.engine import HFTreeEngine
from knowtune.errors import ConfigError
from knowtune.probe.config import probe_config
from knowtune.probe.records import ProbeRecord
from knowtune.probe.slick import load_records, run_probe, slick_category, summarize


def test_category_definitions():
    assert slick_category(1.0, 0.0) == "HighlyKnown"
    assert slick_category(0.1, 0.0) == "MaybeKnown"
    assert slick_category(0.9, 1.0) == "MaybeKnown"
    assert slick_category(0.0, 1 / 160) == "WeaklyKnown"
    assert slick_category(0.0, 0.0) == "Unknown"


def make_dataset(n_per_rel: int = 6) -> QADataset:
    capitals = [("France", "Paris"), ("Spain", "Madrid"), ("Peru", "Lima"), ("Chad", "N'Djamena"), ("Mali", "Bamako"),
                ("Iran", "Tehran"), ("Cuba", "Havana"), ("Fiji", "Suva"), ("Oman", "Muscat"), ("Laos", "Vientiane"),
                ("Togo", "Lome"), ("Iraq", "Baghdad"), ("Chile", "Santiago"), ("Japan", "Tokyo")]
    symbols = [("gold", "Au"), ("iron", "Fe"), ("tin", "Sn"), ("lead", "Pb"), ("neon", "Ne"), ("zinc", "Zn"),
               ("argon", "Ar"), ("boron", "B"), ("xenon", "Xe"), ("radon", "Rn"), ("copper", "Cu"), ("silver", "Ag"),
               ("carbon", "C"), ("sodium", "Na")]
    exs = []
    for rel, rows, tpl in (("cap", capitals, "What is the capital of {}?"), ("sym", symbols, "What is the chemical symbol of {}?")):
        for i, (s, a) in enumerate(rows):
            split = "exemplar" if i < 14 - n_per_rel else "test"
            exs.append(QAExample(f"{rel}/{s}", rel, s, tpl.format(s), (a,), popularity=float(100 - i), split=split))
    return QADataset("toy", exs, exemplar_split="exemplar", templates={"cap": [], "sym": []})


def test_prompt_format_and_exemplar_sets():
    ds = make_dataset()
    sets = exemplar_sets(ds, "cap", k=4, n_sets=3, seed=0)
    assert len(sets) == 3 and all(len(s) == 4 for s in sets)
    assert all(e.split == "exemplar" and e.relation == "cap" for s in sets for e in s)
    assert sets == exemplar_sets(ds, "cap", k=4, n_sets=3, seed=0)
    assert sets != exemplar_sets(ds, "cap", k=4, n_sets=3, seed=1)
    q = ds.split("test")[0]
    prompt = build_prompt(sets[0], q)
    assert prompt.startswith(f"Q: {sets[0][0].question}\nA: {sets[0][0].answers[0]}\n\n")
    assert prompt.endswith(f"\n\nQ: {q.question}\nA:")
    with pytest.raises(ConfigError, match="has 8 exemplars.*needs at least k=9"):
        exemplar_sets(ds, "cap", k=9, n_sets=1, seed=0)


def probe(model, tok, out, examples, batch_size=4, chunk_size=64, seed=0):
    ds = make_dataset()
    cfg = probe_config("paper", {"n_exemplar_sets": "3", "n_samples": "6", "max_new_tokens": "6", "seed": str(seed)})
    engine = HFTreeEngine(model, tok, batch_size=batch_size)
    return run_probe(engine, ds, examples, cfg, out, {"spec": "tiny"}, chunk_size=chunk_size, progress=False)


def test_probe_writes_records_and_summary(tiny_model, tiny_tokenizer, tmp_path):
    ds = make_dataset()
    summary = probe(tiny_model, tiny_tokenizer, tmp_path, ds.split("test"))
    records = load_records(tmp_path / "probe.jsonl")
    assert len(records) == 12 == summary["n"]
    r = records[0]
    assert len(r.greedy) == 3 and len(r.sample_correct) == 3
    assert all(sum(s.values()) == 6 for s in r.samples)
    assert r.p_greedy == sum(r.greedy_correct) / 3
    assert r.p_sample == sum(r.sample_correct) / 18
    assert r.category == slick_category(r.p_greedy, r.p_sample)
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert sum(saved["categories"].values()) == 12
    assert set(saved["per_relation"]) == {"cap", "sym"}
    assert saved["settings"]["n_exemplar_sets"] == 3
    assert json.loads((tmp_path / "config.json").read_text())["data"]["fingerprint"] == ds.fingerprint()


def test_records_independent_of_batching_and_interruption(tiny_model, tiny_tokenizer, tmp_path):
    ds = make_dataset()
    qs = ds.split("test")
    probe(tiny_model, tiny_tokenizer, tmp_path / "a", qs, batch_size=12)
    # b: small batches, small chunks, and "killed" after the first chunk then resumed
    probe(tiny_model, tiny_tokenizer, tmp_path / "b", qs[:2], batch_size=1, chunk_size=2)
    lines = (tmp_path / "b" / "probe.jsonl").read_text()
    (tmp_path / "b" / "probe.jsonl").write_text(lines + lines.splitlines()[0][:40])  # a torn last line
    (tmp_path / "b" / "config.json").unlink()
    probe(tiny_model, tiny_tokenizer, tmp_path / "b", qs, batch_size=1, chunk_size=2)
    a = {r.id: r for r in load_records(tmp_path / "a" / "probe.jsonl")}
    b = {r.id: r for r in load_records(tmp_path / "b" / "probe.jsonl")}
    assert a == b


def test_resume_skips_done_work_and_refuses_other_settings(tiny_model, tiny_tokenizer, tmp_path):
    ds = make_dataset()
    qs = ds.split("test")
    probe(tiny_model, tiny_tokenizer, tmp_path, qs)
    engine_calls = []

    class Counting(HFTreeEngine):
        def complete(self, *a, **k):
            engine_calls.append(1)
            return super().complete(*a, **k)

    cfg = probe_config("paper", {"n_exemplar_sets": "3", "n_samples": "6", "max_new_tokens": "6", "seed": "0"})
    run_probe(Counting(tiny_model, tiny_tokenizer), ds, qs, cfg, tmp_path, {"spec": "tiny"}, progress=False)
    assert engine_calls == []  # everything was done already
    with pytest.raises(ConfigError, match="different settings"):
        probe(tiny_model, tiny_tokenizer, tmp_path, qs, seed=1)


def test_summary_counts_by_popularity():
    recs = [ProbeRecord(str(i), "r", popularity=float(i), category="HighlyKnown" if i >= 5 else "Unknown", p_greedy=0.0)
            for i in range(10)]
    s = summarize(recs)
    assert s["per_popularity"]["top 30%"] == {"HighlyKnown": 3, "MaybeKnown": 0, "WeaklyKnown": 0, "Unknown": 0}
    assert s["per_popularity"]["bottom 30%"]["Unknown"] == 3
