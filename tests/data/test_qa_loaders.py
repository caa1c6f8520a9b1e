"""Loaders: builtin facts, EntityQuestions on the real files, JSONL; errors name file, record, field."""

from __future__ import annotations

import json

import pytest
from conftest import SHARED_DATA

from knowtune.data import load_qa
from knowtune.data.entityquestions import load_entityquestions
from knowtune.data.records import chance_rate
from knowtune.errors import DataError

EQ = SHARED_DATA / "entityquestions"


def test_builtin_facts_meet_the_spec():
    ds = load_qa("builtin")
    assert len(ds.examples) >= 3000
    assert len(ds.relations()) >= 6
    assert set(ds.splits()) == {"exemplar", "train", "dev", "test"}
    assert len({e.id for e in ds.examples}) == len(ds.examples)
    for rel in ds.relations():
        exs = [e for e in ds.examples if e.relation == rel]
        assert sum(e.split == "exemplar" for e in exs) >= 16, rel
        assert len(ds.templates[rel]) >= 2
        assert all(e.answers and e.question.endswith("?") for e in exs)
    assert sum(e.popularity is not None for e in ds.examples) / len(ds.examples) > 0.8
    assert ds.fingerprint() == load_qa("builtin").fingerprint()


@pytest.mark.skipif(not EQ.exists(), reason=f"EntityQuestions copy not found at {EQ}")
def test_entityquestions_reads_every_file():
    ds = load_entityquestions(EQ)
    files = sorted(EQ.rglob("P*.*.json"))
    assert sum(len(json.loads(f.read_text())) for f in files) == len(ds.examples)
    assert ds.exemplar_split == "dev"
    p17 = [e for e in ds.examples if e.relation == "P17" and e.split == "train"]
    assert len(p17) == 8000
    assert p17[0].question == f"Which country is {p17[0].subject} located in?"
    assert ds.templates["P17"][0] == "Which country is {subject} located in?"
    assert 0 < chance_rate(p17) < 0.5


def test_entityquestions_errors_name_file_record_field(tmp_path):
    (tmp_path / "P1.train.json").write_text(json.dumps([{"question": "Who is X?", "answers": ["Y"]}, {"question": "Who is Z?", "answers": []}]))
    with pytest.raises(DataError, match=r"P1\.train\.json, record 1, field 'answers': no answers"):
        load_entityquestions(tmp_path)
    (tmp_path / "P1.train.json").write_text("[{")
    with pytest.raises(DataError, match=r"P1\.train\.json: malformed JSON"):
        load_entityquestions(tmp_path)


def test_entityquestions_infers_templates_without_the_template_file(tmp_path):
    rows = [{"question": f"Where was {n} born?", "answers": ["X"]} for n in ("Ann Lee", "Bo", "Carl Friedrich Gauss")]
    (tmp_path / "P19.dev.json").write_text(json.dumps(rows))
    ds = load_entityquestions(tmp_path)
    assert ds.templates["P19"] == ["Where was {subject} born?"]
    assert [e.subject for e in ds.examples] == ["Ann Lee", "Bo", "Carl Friedrich Gauss"]


def test_jsonl_loader_and_errors(tmp_path):
    good = tmp_path / "qa.jsonl"
    good.write_text(
        '{"id": "a", "question": "Capital of Peru?", "answers": ["Lima"], "relation": "cap", "split": "exemplar"}\n'
        '{"question": "Capital of Chad?", "answers": "N\'Djamena", "popularity": 3}\n'
    )
    ds = load_qa(str(good))
    assert [e.id for e in ds.examples] == ["a", "qa/2"]
    assert ds.examples[1].answers == ("N'Djamena",) and ds.examples[1].popularity == 3.0
    assert ds.exemplar_split == "exemplar"
    cases = {
        '{"question": "Q?", "answers": [1]}\n': r"line 1.*field 'answers': answer 0 is int",
        '{"question": "", "answers": ["a"]}\n': r"field 'question': empty",
        '{"answers": ["a"]}\n': r"field 'question': missing",
        '{"question": "Q?"}\n': r"field 'answers': missing",
        '{"question": "Q?", "answers": ["a"], "popularity": "high"}\n': r"field 'popularity': expected a number",
        '{"id": "x", "question": "Q?", "answers": ["a"]}\n{"id": "x", "question": "R?", "answers": ["b"]}\n': r"record x, field 'id': duplicate",
        '{"question": "Q?", "answers": ["a"]\n': r"line 1: malformed JSON",
        "[1, 2]\n": r"expected a JSON object",
        "\n": r"no records",
    }
    for text, pattern in cases.items():
        bad = tmp_path / "bad.jsonl"
        bad.write_text(text)
        with pytest.raises(DataError, match=pattern):
            load_qa(str(bad))


def test_missing_paths_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="no such file or directory"):
        load_qa(str(tmp_path / "nope"))
    with pytest.raises(DataError, match="no EntityQuestions files"):
        load_qa(str(tmp_path))
