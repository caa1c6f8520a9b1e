"""Exports of an audited set: filtered / idk / self-aligned, in the user's shape, as TRL messages, as a
datasets directory; each loads with `datasets`."""

from __future__ import annotations

import json

import pytest

from knowtune.curate.exports import export_rows, write_export
from knowtune.data.sft_rows import read_sft_rows
from knowtune.errors import ConfigError
from knowtune.probe.records import ProbeRecord

ROWS = [
    {"id": "a", "question": "Capital of Peru?", "answers": ["Lima"]},
    {"id": "b", "instruction": "Capital of Chad?", "input": "", "output": "N'Djamena"},
    {"id": "c", "prompt": "Capital of Cuba?", "completion": " Havana"},
    {"id": "d", "messages": [{"role": "user", "content": "Capital of Peru?"}, {"role": "assistant", "content": "Lima"}]},
    {"id": "e", "text": "not auditable"},
]
# a, c Known with the right greedy answer; b, d Unknown with a wrong one
CATS = {"a": ("HighlyKnown", "Lima", True), "b": ("Unknown", "Abuja", False), "c": ("MaybeKnown", "Havana", True),
        "d": ("Unknown", "Cusco", False)}


@pytest.fixture
def audited(tmp_path):
    path = tmp_path / "set.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    rows = read_sft_rows(path)
    records = [ProbeRecord(r.id, "all", question=r.question, answers=r.answers, category=CATS[r.id][0],
                           extra={"greedy_answer": CATS[r.id][1], "answer_correct": CATS[r.id][2]}) for r in rows.auditable()]
    return rows.rows, records


def test_filtered_drops_unknown_and_keeps_the_rest_as_written(audited):
    rows, records = audited
    out, counts = export_rows("filtered", "jsonl", rows, records)
    assert out == [ROWS[0], ROWS[2], ROWS[4]]
    assert counts == {"rows": 3, "relabelled": 0, "dropped_unknown": 2, "kept_not_audited": 1, "left_out_unconvertible": 0}


def test_idk_relabels_unknown_in_each_shape(audited):
    rows, records = audited
    out, counts = export_rows("idk", "jsonl", rows, records, idk="Not sure.")
    assert out[1]["output"] == "Not sure." and out[3]["messages"][-1] == {"role": "assistant", "content": "Not sure."}
    assert out[0] == ROWS[0] and out[2] == ROWS[2] and counts["relabelled"] == 2


def test_self_aligned_takes_the_models_answer_where_it_is_wrong(audited):
    rows, records = audited
    out, _ = export_rows("self-aligned", "jsonl", rows, records)
    assert out[1]["output"] == "Abuja" and out[3]["messages"][-1]["content"] == "Cusco" and out[0] == ROWS[0]


def test_messages_shape_and_what_cannot_be_converted(audited):
    rows, records = audited
    out, counts = export_rows("idk", "messages", rows, records)
    assert out[0] == {"messages": [{"role": "user", "content": "Capital of Peru?"}, {"role": "assistant", "content": "Lima"}]}
    assert out[1]["messages"][-1]["content"] == "I don't know"
    assert out[2]["messages"][-1]["content"] == "Havana"  # a completion's leading space belongs to the prompt format
    assert counts["left_out_unconvertible"] == 1 and len(out) == 4


def test_own_shape_keeps_lists_and_leading_space(audited):
    rows, records = audited
    records = [ProbeRecord(r.id, "all", question=r.question, answers=r.answers, category="Unknown") for r in records]
    out, _ = export_rows("idk", "jsonl", rows, records)
    assert out[0]["answers"] == ["I don't know"] and out[2]["completion"] == " I don't know"


def test_written_exports_load_with_datasets(audited, tmp_path):
    import datasets

    rows, records = audited
    own = write_export("filtered", "jsonl", rows, records, tmp_path)
    msgs = write_export("idk", "messages", rows, records, tmp_path)
    disk = write_export("self-aligned", "datasets", rows, records, tmp_path)
    assert own["path"].endswith("export_filtered.jsonl") and own["rows"] == 3
    assert len(datasets.load_dataset("json", data_files=msgs["path"], split="train")) == 4
    loaded = datasets.load_from_disk(disk["path"])
    assert loaded.column_names == ["messages"] and loaded[1]["messages"][-1]["content"] == "Abuja"


def test_unknown_kind_or_format(audited):
    rows, records = audited
    with pytest.raises(ConfigError, match="unknown export 'all-of-them'"):
        export_rows("all-of-them", "jsonl", rows, records)
    with pytest.raises(ConfigError, match="unknown export format 'csv'"):
        export_rows("idk", "csv", rows, records)
