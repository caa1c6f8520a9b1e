"""Multiple-choice data: the MMLU loaders in both CSV layouts, their errors, the subject map, the
hub path's offline failure, and the builtin multiple-choice set."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from conftest import SHARED_DATA

from knowtune.data import load_qa
from knowtune.data.multiple_choice import (
    BUILTIN_DOMAINS,
    MCQuestion,
    builtin_mc,
    detect_mc,
    load_mc,
    load_mmlu,
    mmlu_subjects,
    read_mmlu_csv,
)
from knowtune.errors import DataError
from knowtune.matching import normalize_answer

MMLU = SHARED_DATA / "mmlu"
needs_mmlu = pytest.mark.skipif(not MMLU.is_dir(), reason=f"MMLU copy not found at {MMLU}")


def _manifest_counts(prefix: str) -> dict[tuple[str, str], int]:
    """(subject, split) → data rows, from the shared data's MANIFEST.tsv, for the CSVs under `prefix`."""
    counts = {}
    with open(SHARED_DATA / "MANIFEST.tsv", encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            path = row["path"]
            if path.startswith(prefix) and path.endswith(".csv"):
                subject, split = Path(path).stem.rsplit("_", 1)
                counts[(subject, split)] = int(row[next(k for k in row if k.startswith("records"))])
    return counts


@needs_mmlu
@pytest.mark.parametrize(
    "layout_dir, splits, n_test",
    [("data", {"dev", "val", "test"}, 14079), ("final_release_converted", {"dev", "test"}, 14042)],
)
def test_mmlu_reads_every_file_in_both_layouts(layout_dir, splits, n_test):
    data = load_mc(str(MMLU / layout_dir))
    got = Counter((q.subject, q.split) for q in data.questions)
    assert got == Counter(_manifest_counts(f"mmlu/{layout_dir}/"))  # every file, every row
    assert len(got) == 57 * len(splits) and set(data.splits()) == splits
    assert sum(q.split == "test" for q in data.questions) == n_test
    assert data.exemplar_split == "dev" and len(data.split("dev")) == 285
    assert len({q.id for q in data.questions}) == len(data.questions)
    assert all(len(q.options) == 4 and 0 <= q.answer <= 3 for q in data.questions)
    q = next(q for q in data.questions if q.id == "mmlu/abstract_algebra/dev/0")
    assert q.question == "Find all c in Z_3 such that Z_3[x]/(x^2 + c) is a field."
    assert q.options == ("0", "1", "2", "3") and q.answer_letter == "B" and q.domain == "STEM"


@needs_mmlu
def test_layouts_agree_where_the_releases_agree():
    # abstract_algebra is one of the 81 files the data README lists as identical in both releases.
    original = read_mmlu_csv(MMLU / "data" / "test" / "abstract_algebra_test.csv")
    converted = read_mmlu_csv(MMLU / "final_release_converted" / "test" / "abstract_algebra_test.csv")
    assert original == converted and len(original) == 100


@needs_mmlu
def test_subject_map_covers_every_subject_found():
    subjects = mmlu_subjects()
    found = {p.stem.rsplit("_", 1)[0] for p in (MMLU / "data").rglob("*.csv")}
    found |= {p.stem.rsplit("_", 1)[0] for p in (MMLU / "final_release_converted").rglob("*.csv")}
    assert len(found) == 57 and found == set(subjects)
    assert len({sub for sub, _ in subjects.values()}) == 17
    assert {cat for _, cat in subjects.values()} == {"STEM", "humanities", "social sciences", "other"}
    assert subjects["jurisprudence"] == ("law", "humanities")
    assert subjects["high_school_geography"] == ("geography", "social sciences")
    assert subjects["virology"] == ("health", "other")


@needs_mmlu
def test_a_directory_with_both_layouts_is_refused():
    with pytest.raises(DataError, match="abstract_algebra.*two files"):
        load_mmlu(MMLU)


def _write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def test_original_layout_quoted_fields_and_bom(tmp_path):
    text = '\ufeff"Multi\nline, with comma?",a,"b, c",d,e,C\nSecond?,1,2,3,4, A\n\n'
    qs = read_mmlu_csv(_write(tmp_path, "my_subject_test.csv", text))
    assert qs[0].question == "Multi\nline, with comma?" and qs[0].options == ("a", "b, c", "d", "e")
    assert [q.answer for q in qs] == [2, 0]  # " A": surrounding spaces in the answer cell are tolerated
    assert [q.id for q in qs] == ["mmlu/my_subject/test/0", "mmlu/my_subject/test/1"] and qs[1].split == "test"
    assert qs[0].domain == "my_subject"  # outside MMLU's map: a domain of its own


@pytest.mark.parametrize(
    "name, text, message",
    [
        # the bad row starts on line 3, after a quoted field spanning lines 1-2
        ("x_test.csv", '"Q1\nmore",a,b,c,d,A\nQ2,a,b,c,D\n', r"x_test\.csv, record on line 3: expected 6 columns"),
        ("x_test.csv", "Q1,a,b,c,d,A\nQ2,a,b,c,d,E\n",
         r"x_test\.csv, record on line 2, field 'answer': 'E' is not one of A, B, C, D"),
        ("x_dev.csv", "Q1,a,b,c,d,1\n", r"x_dev\.csv, record on line 1, field 'answer': '1' is not one of A, B, C, D"),
        ("x_val.csv", "question,choice0,choice1,choice2,choice3,answer\nQ,a,b,c,d,4\n",
         r"x_val\.csv, record on line 2, field 'answer': '4' is not one of 0, 1, 2, 3"),
        ("x_val.csv", "question,choice0,choice1,choice2,choice3,answer\nQ,a,b,c,d\n",
         r"x_val\.csv, record on line 2: expected 6 columns \(question,choice0"),
        ("x_test.csv", " ,a,b,c,d,A\n", r"record on line 1, field 'question': empty"),
        ("x_test.csv", "", r"x_test\.csv: empty file"),
        ("x_test.csv", "\n\n", r"x_test\.csv: empty file"),
        ("x_test.csv", "question,choice0,choice1,choice2,choice3,answer\n", r"x_test\.csv: no questions"),
        ("x_test.csv", b"Caf\xe9?,a,b,c,d,A\n", r"x_test\.csv: not UTF-8 text"),
        ("notes.csv", "Q,a,b,c,d,A\n", r"not an MMLU file name"),
    ],
)
def test_csv_errors_name_file_and_line(tmp_path, name, text, message):
    with pytest.raises(DataError, match=message):
        read_mmlu_csv(_write(tmp_path, name, text))


def test_forced_layout_and_missing_paths(tmp_path):
    path = _write(tmp_path, "x_test.csv", "Q,a,b,c,d,A\n")
    with pytest.raises(DataError, match="on line 1: expected the header"):
        read_mmlu_csv(path, layout="converted")
    with pytest.raises(DataError, match="no such file"):
        load_mc(str(tmp_path / "nowhere" / "x_test.csv"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no MMLU files"):
        load_mmlu(tmp_path / "empty")


def test_detect_mc(tmp_path):
    assert detect_mc("builtin") == "builtin"
    assert detect_mc("hf:cais/mmlu") == "mmlu-hf" and detect_mc("cais/mmlu") == "mmlu-hf"
    assert detect_mc(str(tmp_path)) == "mmlu-csv" and detect_mc("mmlu:anything") == "mmlu-csv"
    with pytest.raises(DataError, match="no such file"):
        detect_mc("./missing/dir")


def test_hub_loader_fails_clearly_offline(tmp_path):
    # A fresh process: huggingface_hub reads HF_HUB_OFFLINE when it is imported.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    code = (
        "from knowtune.data.multiple_choice import load_mc\n"
        "from knowtune.errors import DataError\n"
        "try:\n    load_mc('hf:cais/mmlu')\nexcept DataError as e:\n    print('DataError:', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert "DataError: hf:cais/mmlu (all, dev): cannot load from the Hugging Face hub" in out.stdout, out.stderr
    assert "local copy of the MMLU CSVs" in out.stdout


def test_builtin_mc_questions():
    data = builtin_mc(seed=0)
    facts = {e.id: e for e in load_qa("builtin").examples}
    assert len(data.questions) == len(facts) and data.exemplar_split == "exemplar"
    for q in data.questions:
        fact = facts[q.id]
        gold = {normalize_answer(a) for a in fact.answers}
        keys = [normalize_answer(o) for o in q.options]
        assert len(set(keys)) == 4, q
        assert [k in gold for k in keys] == [i == q.answer for i in range(4)], q  # only the gold option is right
        assert q.options[q.answer] == fact.answers[0] and q.question == fact.question
        assert (q.subject, q.split) == (fact.relation, fact.split)
    domains = data.domains()
    assert domains == {d: sorted(rs) for d, rs in BUILTIN_DOMAINS.items()}
    assert all(len(subjects) >= 2 for subjects in domains.values())
    positions = Counter(q.answer for q in data.questions)
    assert all(abs(positions[i] / len(data.questions) - 0.25) < 0.03 for i in range(4))


def test_builtin_mc_is_deterministic_per_seed():
    a, b, c = builtin_mc(seed=0), builtin_mc(seed=0), builtin_mc(seed=1)
    assert a.questions == b.questions and a.fingerprint() == b.fingerprint()
    changed = sum(x.options != y.options for x, y in zip(a.questions, c.questions))
    assert changed > 0.9 * len(a.questions)


def test_question_round_trip():
    q = MCQuestion("i", "s", "d", "Q?", ("a", "b", "c", "d"), 3, "dev")
    assert MCQuestion.from_dict(q.to_dict()) == q and q.answer_letter == "D"
