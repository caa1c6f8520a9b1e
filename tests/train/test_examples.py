"""Training rows of every shape `knowtune train` reads (knowtune/train/examples.py): {question, answer},
{question, answers}, a curated set's rows (relabelled `label`, SliCK `category`), {prompt, target, group};
errors that name file, line and field; ids (given, or `<stem>/<line>`); and one real `knowtune train` run
on {prompt, target, group} rows whose fit is recorded per group."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import make_tiny_model

from knowtune.errors import DataError
from knowtune.train.examples import SFTExample, example_from_row, read_examples


def write_rows(path: Path, *rows: dict | str) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_question_and_answer(tmp_path):
    path = write_rows(tmp_path / "qa.jsonl", {"question": "What is the capital of France?", "answer": "Paris"})
    assert read_examples(path) == [SFTExample("qa/1", "Q: What is the capital of France?\nA:", " Paris\n", "all")]


def test_question_and_answers_trains_on_the_first_answer(tmp_path):
    path = write_rows(tmp_path / "aliases.jsonl",
                      {"id": "q7", "question": "What is the capital of Peru?", "answers": ["Lima", "Ciudad de los Reyes"]},
                      {"question": "Which country is Lyon located in?", "answers": "France"})  # a bare string is one answer
    assert read_examples(path) == [SFTExample("q7", "Q: What is the capital of Peru?\nA:", " Lima\n"),
                                   SFTExample("aliases/2", "Q: Which country is Lyon located in?\nA:", " France\n")]


def test_curated_rows_train_on_their_label_and_split_the_fit_by_category(tmp_path):
    # rows as `knowtune curate` writes them: probe records with a category, D_IDK's relabelled to "I don't know"
    idk = {"id": "P36/suva", "relation": "P36", "question": "What is the capital of Fiji?", "answers": ["Suva"],
           "category": "Unknown", "label": "I don't know"}
    known = {"id": "P36/paris", "relation": "P36", "question": "What is the capital of France?", "answers": ["Paris"],
             "category": "HighlyKnown", "label": None}
    got = read_examples(write_rows(tmp_path / "D_IDK.jsonl", idk, known))
    assert got == [SFTExample("P36/suva", "Q: What is the capital of Fiji?\nA:", " I don't know\n", "Unknown"),
                   SFTExample("P36/paris", "Q: What is the capital of France?\nA:", " Paris\n", "HighlyKnown")]


def test_prompt_and_target_are_used_verbatim(tmp_path):
    rows = [{"prompt": "Translate: chat →", "target": " cat", "group": "fr"},
            {"id": 12, "prompt": "2 + 2 =", "target": " 4\n"},
            {"prompt": "MC?\nA. x\nB. y\nAnswer:", "target": " B", "label_source": "model"},  # self-align sets
            {"prompt": "P", "target": "T", "question": "ignored when there is a prompt", "group": "g"}]
    got = read_examples(write_rows(tmp_path / "pairs.jsonl", *rows))
    assert got == [SFTExample("pairs/1", "Translate: chat →", " cat", "fr"), SFTExample("12", "2 + 2 =", " 4\n", "all"),
                   SFTExample("pairs/3", "MC?\nA. x\nB. y\nAnswer:", " B", "model"), SFTExample("pairs/4", "P", "T", "g")]


def test_group_wins_over_category_and_label_source():
    row = {"id": "r", "prompt": "p", "target": "t", "group": "mine", "category": "Unknown", "label_source": "gold"}
    assert example_from_row(row).group == "mine"
    assert example_from_row({**row, "group": None}).group == "Unknown"
    assert example_from_row({**row, "group": None, "category": None}).group == "gold"
    assert example_from_row({"prompt": "p", "target": "t"}, "f.jsonl", "on line 4") == SFTExample("on line 4", "p", "t", "all")


def test_default_ids_count_lines_blank_ones_too(tmp_path):
    path = write_rows(tmp_path / "D_0.jsonl", {"question": "A?", "answer": "a"}, "", {"question": "B?", "answer": "b"})
    assert [e.id for e in read_examples(path)] == ["D_0/1", "D_0/3"]


@pytest.mark.parametrize("row, field, message", [
    ({"prompt": "Q: x?\nA:", "group": "g"}, "field 'target'", "missing"),  # an Alpaca-less {prompt}
    ({"prompt": "Q: x?\nA:", "target": 7}, "field 'target'", "expected a string, got int"),
    ({"prompt": "   ", "target": "t"}, "field 'prompt'", "empty"),
    ({"question": "Q?"}, "field 'answers'", "missing"),
    ({"question": "Q?", "answers": []}, "field 'answers'", "no answers"),
    ({"question": "Q?", "answer": ["a"]}, "field 'answer'", "expected a string, got list"),
    ({"question": 3, "answer": "a"}, "field 'question'", "expected a string, got int"),
    ({"question": "Q?", "answer": "a", "label": ""}, "field 'label'", "empty"),
    ({"prompt": "p", "target": "t", "group": 3}, "field 'group'", "expected a string, got int"),
    ({"prompt": "p", "target": "t", "group": ["a"]}, "field 'group'", "expected a string, got list"),
    ({"prompt": "p", "target": "t", "id": ["x"]}, "field 'id'", "expected a string"),
    ({"prompt": "p", "target": "t", "id": True}, "field 'id'", "expected a string"),
])
def test_bad_rows_name_file_line_and_field(tmp_path, row, field, message):
    path = write_rows(tmp_path / "rows.jsonl", {"prompt": "fine", "target": " row"}, row)
    with pytest.raises(DataError) as e:
        read_examples(path)
    assert str(e.value) == f"{path}, record on line 2, {field}: {message}"


def test_a_row_of_neither_shape(tmp_path):
    path = write_rows(tmp_path / "notes.jsonl", {"id": "n1", "text": "Paris is the capital of France."})
    with pytest.raises(DataError) as e:
        read_examples(path)
    assert str(e.value) == (f"{path}, record on line 1: a training row needs 'question' and an answer, "
                            "or 'prompt' and 'target'")


def test_a_non_string_category_names_the_category_field(tmp_path):
    path = write_rows(tmp_path / "rows.jsonl", {"prompt": "p", "target": "t", "category": 3})
    with pytest.raises(DataError, match="field 'category': expected a string, got int"):
        read_examples(path)


def test_duplicate_ids(tmp_path):
    path = write_rows(tmp_path / "dup.jsonl", {"id": "a", "prompt": "p", "target": "t"}, {"id": "b", "prompt": "p", "target": "t"},
                      {"id": "a", "question": "Q?", "answer": "x"})
    with pytest.raises(DataError) as e:
        read_examples(path)
    assert str(e.value) == f"{path}, record a, field 'id': duplicate id"
    # an id given as a number and the same id as text are one id; so is a given id equal to a default one
    for rows in (({"id": 1, "prompt": "p", "target": "t"}, {"id": "1", "prompt": "p", "target": "t"}),
                 ({"prompt": "p", "target": "t"}, {"id": "dup/1", "prompt": "p", "target": "t"})):
        with pytest.raises(DataError, match="duplicate id"):
            read_examples(write_rows(path, *rows))


@pytest.mark.parametrize("text", ["", "\n\n  \n"])
def test_empty_file(tmp_path, text):
    path = tmp_path / "empty.jsonl"
    path.write_text(text)
    with pytest.raises(DataError) as e:
        read_examples(path)
    assert str(e.value) == f"{path}: no training examples"


def test_train_command_on_prompt_target_rows_records_fit_per_group(tiny_tokenizer, tmp_path, monkeypatch, cli):
    model_dir = tmp_path / "model"
    make_tiny_model(tiny_tokenizer, seed=1).save_pretrained(model_dir)
    tiny_tokenizer.save_pretrained(model_dir)
    rows = [{"prompt": f"Q: What is the capital of {c}?\nA:", "target": f" {a}\n", "group": "capitals"}
            for c, a in (("France", "Paris"), ("Peru", "Lima"), ("Chad", "N'Djamena"))]
    rows += [{"prompt": "Q: What is the chemical symbol of gold?\nA:", "target": " Au\n", "group": "symbols"},
             {"prompt": "Q: What is the chemical symbol of iron?\nA:", "target": " Fe\n", "group": "symbols"}]
    train = write_rows(tmp_path / "rows.jsonl", *rows)
    out = tmp_path / "run"
    monkeypatch.setenv("KNOWTUNE_CACHE", str(tmp_path / "cache"))
    code, stdout, stderr = cli("train", "--model", str(model_dir), "--train", str(train), "--out", str(out), "--set", "epochs=1")
    assert code == 0, stderr
    assert "EARLY_STOP epoch 1, CONVERGENCE epoch 1" in stdout
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1]
    assert metrics[0]["group_sizes"] == {"capitals": 3, "symbols": 2}
    assert set(metrics[0]["fit_by_group"]) == set(metrics[0]["fitted_by_group"]) == {"capitals", "symbols"}
    assert all(0 <= f <= 1 for f in metrics[0]["fit_by_group"].values())
    assert (out / "convergence" / "model.safetensors").exists()


def test_a_row_read_alone_needs_an_id():
    assert example_from_row({"id": 7, "prompt": "p", "target": "t"}).id == "7"
    with pytest.raises(DataError, match="row, field 'id': missing"):
        example_from_row({"prompt": "p", "target": "t"})
