"""`knowtune audit`: held-out exemplars that never show a question its own answer, the outputs of an
audit on a tiny model, and (slow) the same categories as `knowtune probe` on builtin questions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from knowtune.audit.run import plan_audit
from knowtune.data.sft_rows import read_sft_rows
from knowtune.errors import ConfigError
from knowtune.probe.config import ProbeConfig


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _alpaca(qa_rows: list[dict]) -> list[dict]:
    return [{"id": r["id"], "relation": r["relation"], "instruction": r["question"], "input": "", "output": r["answers"][0]}
            for r in qa_rows]


def _messages(qa_rows: list[dict]) -> list[dict]:
    return [{"id": r["id"], "relation": r["relation"], "messages": [{"role": "user", "content": r["question"]},
                                                                    {"role": "assistant", "content": r["answers"][0]}]}
            for r in qa_rows]


def test_held_out_exemplars_cover_every_row_and_never_its_own_question(tmp_path):
    rows = [{"id": f"{rel}{i}", "relation": rel, "question": f"q {rel} {i}?", "answer": f"a{i}"}
            for rel, n in (("big", 50), ("small", 10), ("tiny", 5)) for i in range(n)]
    cfg = ProbeConfig(k_shot=4)
    plan = plan_audit(read_sft_rows(_write(tmp_path / "s.jsonl", rows)), cfg)
    probed = [q.id for _, _, qs in plan.passes for q in qs]
    assert sorted(probed) == sorted(r["id"] for r in rows if r["relation"] != "tiny")  # each once
    assert set(plan.skipped) == {60, 61, 62, 63, 64} and "relation 'tiny' has 5 rows, needs at least 8" in plan.skipped[60]
    for _, data, questions in plan.passes:
        pool = {e.id for e in data.split("exemplar")}
        assert pool and not pool & {q.id for q in questions}
        for rel in ("big", "small"):
            n_pool = sum(e.relation == rel for e in data.split("exemplar"))
            assert n_pool == {"big": 16, "small": 5}[rel]


def test_no_auditable_rows_is_refused_with_the_count(tmp_path):
    rows = [{"question": "Tell me about Peru.", "answer": "Peru is a country in western South America with a long coast."}] * 3
    with pytest.raises(ConfigError, match=r"s.jsonl: none of the 3 rows is auditable \(3 long answer\)"):
        plan_audit(read_sft_rows(_write(tmp_path / "s.jsonl", rows)), ProbeConfig())


def test_an_exemplar_file_must_cover_each_relation(tmp_path):
    rows = read_sft_rows(_write(tmp_path / "s.jsonl", [{"relation": "P17", "question": "q?", "answer": "a"}]))
    ex = read_sft_rows(_write(tmp_path / "ex.jsonl", [{"relation": "P36", "question": "e?", "answer": "b"}] * 4))
    with pytest.raises(ConfigError, match=r"ex.jsonl: relation 'P17' has 0 usable exemplars, needs at least k_shot=4"):
        plan_audit(rows, ProbeConfig(), ex)


def test_audit_on_a_tiny_model_writes_every_output(cli, tiny_workdir, tmp_path):
    import datasets

    qa = [json.loads(line) for line in (tiny_workdir / "qa.jsonl").read_text().splitlines()]
    two_users = {"id": "two-users", "messages": [{"role": "user", "content": "Hi"}, {"role": "user", "content": "Capital of Peru?"},
                                                 {"role": "assistant", "content": "Lima"}]}
    data = _alpaca(qa[:40]) + [{"id": "long", "instruction": "Describe Peru.", "input": "", "output": " ".join(["word"] * 20)},
                               two_users]
    path = _write(tmp_path / "alpaca.jsonl", data)
    out = tmp_path / "audit"
    code, stdout, err = cli("audit", "--model", str(tiny_workdir / "model"), "--data", str(path), "--out", str(out),
                            "--preset", "quick", "--export", "all", "--format", "datasets")
    assert code == 0, err
    audit = [json.loads(line) for line in (out / "audit.jsonl").read_text().splitlines()]
    assert [a["id"] for a in audit] == [r["id"] for r in data[:40]]
    assert {"id", "category", "p_greedy", "p_sample", "greedy_answer"} <= set(audit[0])
    assert [json.loads(line)["id"] for line in (out / "not_auditable.jsonl").read_text().splitlines()] == ["long", "two-users"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["audited"] == 40 and summary["not_auditable_reasons"] == {"long answer": 1, "multi-turn": 1}
    assert set(summary["per_relation"]) == {"cap", "lang"}
    html = (out / "report.html").read_text()
    assert "PaLM 2" in html and "not a prediction for this model" in html and "Not auditable (2)" in html
    n_unknown = summary["categories"]["Unknown"]
    assert len(datasets.load_from_disk(str(out / "export_filtered"))) == 42 - n_unknown
    idk = datasets.load_from_disk(str(out / "export_idk"))
    assert sum(r["messages"][-1]["content"] == "I don't know" for r in idk) == n_unknown


def _builtin_rows(n: int) -> tuple[list[dict], list[dict]]:
    from knowtune.data import load_qa, select_examples

    ds = load_qa("builtin")
    qa = [e.to_dict() for e in select_examples(ds, "test", None, n)]
    return qa, [e.to_dict() for e in ds.split("exemplar")]


@pytest.mark.slow
def test_audit_gives_the_probes_categories_on_builtin_questions(cli, tmp_path):
    """40 builtin questions as Alpaca rows and as messages rows, with the builtin exemplar pool as
    --exemplars: the same categories, P(T=0) and P(T>0) as `knowtune probe` on the same questions with
    the same answers (an Alpaca or messages row carries one answer, so the probe's data is given the
    first alias only; with every alias the probe also counts e.g. "Wales" for Swansea) and settings."""
    n = 40
    qa, pool = _builtin_rows(n)
    ex = _write(tmp_path / "exemplars.jsonl", pool)
    one_answer = [{**r, "answers": r["answers"][:1]} for r in qa]
    probe_data = _write(tmp_path / "qa.jsonl", pool + one_answer)  # split "exemplar" rows are the probe's pool
    code, _, err = cli("probe", "--data", str(probe_data), "--preset", "quick", "--out", str(tmp_path / "probe"))
    assert code == 0, err
    want = {r["id"]: (r["category"], r["p_greedy"], r["p_sample"])
            for r in map(json.loads, (tmp_path / "probe" / "probe.jsonl").read_text().splitlines())}
    assert len(want) == n and len({c for c, _, _ in want.values()}) >= 3
    for shape, rows in (("alpaca", _alpaca(qa)), ("messages", _messages(qa))):
        data = _write(tmp_path / f"{shape}.jsonl", rows)
        code, _, err = cli("audit", "--data", str(data), "--exemplars", str(ex), "--preset", "quick", "--out", str(tmp_path / shape))
        assert code == 0, err
        got = {r["id"]: (r["category"], r["p_greedy"], r["p_sample"])
               for r in map(json.loads, (tmp_path / shape / "audit.jsonl").read_text().splitlines())}
        assert got == want, shape
