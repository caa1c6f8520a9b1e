"""Reading a user's SFT set: every shape, every container, and rows that are not auditable (with reasons)."""

from __future__ import annotations

import json

import pytest

from knowtune.data.sft_rows import read_sft_rows
from knowtune.errors import DataError

Q, A = "What is the capital of Peru?", "Lima"
SHAPES = {
    "qa": {"question": Q, "answer": A},
    "qa-answers": {"question": Q, "answers": [A, "Lima, Peru"]},
    "prompt-completion": {"prompt": Q, "completion": " Lima"},
    "alpaca": {"instruction": Q, "input": "", "output": A},
    "messages": {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": Q},
                              {"role": "assistant", "content": A}]},
}


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("name", list(SHAPES))
def test_each_shape_gives_the_question_and_answer(tmp_path, name):
    row = read_sft_rows(_write(tmp_path / "s.jsonl", [SHAPES[name]])).rows[0]
    assert (row.question, row.answers[0], row.reason) == (Q, A, None)
    assert row.id == "0" and row.index == 0


def test_messages_keep_the_system_turn_and_aliases_are_kept(tmp_path):
    rows = read_sft_rows(_write(tmp_path / "s.jsonl", [SHAPES["messages"], SHAPES["qa-answers"]])).rows
    assert rows[0].system == "Be brief." and rows[1].answers == (A, "Lima, Peru")


def test_alpaca_input_joins_the_instruction(tmp_path):
    row = read_sft_rows(_write(tmp_path / "s.jsonl", [{"instruction": "Name the capital of", "input": "Peru.", "output": A}])).rows[0]
    assert row.question == "Name the capital of Peru."


def test_rows_that_are_not_auditable_are_kept_with_their_reason(tmp_path):
    rows = [
        {"messages": [{"role": "user", "content": Q}, {"role": "assistant", "content": A},
                      {"role": "user", "content": "And Chile?"}, {"role": "assistant", "content": "Santiago"}]},
        {"question": Q, "answer": "Lima is the capital and largest city of Peru, on the Pacific coast"},
        {"question": Q, "answer": "Lima\nand more"},
        {"question": "", "answer": A},
        {"text": "free text"},
        {"prompt": [{"role": "user", "content": Q}], "completion": [{"role": "assistant", "content": A}]},
        SHAPES["qa"],
    ]
    got = read_sft_rows(_write(tmp_path / "s.jsonl", rows))
    reasons = [r.reason for r in got.rows]
    assert reasons[0].startswith("multi-turn: 2 user and 2 assistant turns")
    assert reasons[1] == "long answer: 13 words (more than 8)"
    assert reasons[2].startswith("multi-line answer")
    assert reasons[3] == "empty question" and reasons[4] == "no question/answer fields"
    assert reasons[5].startswith("prompt-completion: a conversational prompt") and reasons[6] is None
    assert [r.index for r in got.auditable()] == [6]
    assert got.not_auditable_counts()["multi-turn"] == 1


def test_a_set_with_no_usable_fields_names_the_fields_it_saw(tmp_path):
    path = _write(tmp_path / "s.jsonl", [{"text": "a", "meta": 1}, {"body": "b"}])
    with pytest.raises(DataError, match=r"s.jsonl: no row has .* fields \(the rows have: body, meta, text\); name them with"):
        read_sft_rows(path)


def test_named_fields(tmp_path):
    path = _write(tmp_path / "s.jsonl", [{"q": Q, "a": [A, "Lima city"]}, {"q": Q}])
    rows = read_sft_rows(path, question_field="q", answer_field="a").rows
    assert rows[0].answers == (A, "Lima city") and rows[0].answer_key == "a"
    assert rows[1].reason == "no question/answer fields: lacks 'a'"
    with pytest.raises(DataError, match=r"no row has 'question' and 'answer' fields \(the rows have: q\)"):
        read_sft_rows(_write(tmp_path / "t.jsonl", [{"q": Q}]), answer_field="answer", question_field="question")


def test_json_parquet_and_datasets_directory_read_alike(tmp_path):
    import datasets

    rows = [{"id": f"r{i}", "question": f"{Q} {i}", "answer": A} for i in range(3)]
    (tmp_path / "s.json").write_text(json.dumps(rows), encoding="utf-8")
    ds = datasets.Dataset.from_list(rows)
    ds.to_parquet(str(tmp_path / "s.parquet"))
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "dd"))
    want = [(r["id"], r["question"]) for r in rows]
    for spec in ("s.json", "s.parquet", "dd"):
        assert [(r.id, r.question) for r in read_sft_rows(tmp_path / spec).rows] == want, spec


def test_bad_containers(tmp_path):
    (tmp_path / "o.json").write_text('{"question": "x"}', encoding="utf-8")
    with pytest.raises(DataError, match="o.json: expected a JSON list of objects, got dict"):
        read_sft_rows(tmp_path / "o.json")
    (tmp_path / "bad.parquet").write_text("not parquet", encoding="utf-8")
    with pytest.raises(DataError, match="bad.parquet: not a readable Parquet file"):
        read_sft_rows(tmp_path / "bad.parquet")
    with pytest.raises(DataError, match="duplicate id"):
        read_sft_rows(_write(tmp_path / "d.jsonl", [{"id": "a", **SHAPES["qa"]}, {"id": "a", **SHAPES["qa"]}]))
