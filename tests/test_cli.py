"""Bad input at the command line: one line naming what and where, non-zero exit, no traceback."""

from __future__ import annotations

import pytest

from knowtune.models import builtin_gguf


@pytest.fixture
def bad_files(tmp_path):
    (tmp_path / "malformed.jsonl").write_text('{"question": "Q?", "answers": ["a"]}\n{"question": \n')
    (tmp_path / "noanswers.jsonl").write_text('{"id": "q1", "question": "Q?", "answers": []}\n')
    (tmp_path / "half.gguf").write_bytes(builtin_gguf().read_bytes()[:1_000_000])
    return tmp_path


CASES = [
    (["--data", "{d}/missing.jsonl"], r"missing\.jsonl: no such file"),
    (["--data", "{d}/malformed.jsonl"], r"malformed\.jsonl, record on line 2: malformed JSON"),
    (["--data", "{d}/noanswers.jsonl"], r"noanswers\.jsonl, record q1, field 'answers': no answers"),
    (["--relations", "P999"], r"unknown relation 'P999'"),
    (["--preset", "fast"], r"unknown preset 'fast' for the probe"),
    (["--set", "n_samples=many"], r"key 'n_samples': Input should be a valid integer"),
    (["--split", "exemplar"], r"split 'exemplar' is the exemplar pool"),
    (["--model", "{d}/no/such/model"], r"model path does not exist"),
    (["--model", "{d}/half.gguf"], r"half\.gguf: not a readable GGUF file"),
]


@pytest.mark.parametrize("args,pattern", CASES)
def test_probe_bad_input(cli, bad_files, args, pattern):
    import re

    args = [a.format(d=bad_files) for a in args]
    code, out, err = cli("probe", "--out", str(bad_files / "run"), "--limit", "2", *args)
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("knowtune: error: "), err
    assert re.search(pattern, lines[0]), lines[0]
    assert "Traceback" not in err + out
    assert not (bad_files / "run" / "probe.jsonl").exists()


def test_data_show_builtin(cli):
    code, out, _ = cli("data", "show", "builtin")
    assert code == 0 and "P36" in out


def probe_rows(n_unknown: int, n_known: int) -> str:
    import json

    rows = [{"id": f"u{i}", "relation": "r", "question": f"Q{i}?", "answers": ["a"], "category": "Unknown"} for i in range(n_unknown)]
    rows += [{"id": f"k{i}", "relation": "r", "question": f"K{i}?", "answers": ["b"], "category": "HighlyKnown"} for i in range(n_known)]
    return "".join(json.dumps(r) + "\n" for r in rows)


def test_curate_refuses_what_the_pool_cannot_give(cli, tmp_path):
    probe = tmp_path / "probe.jsonl"
    probe.write_text(probe_rows(3, 20))
    code, _, err = cli("curate", "--probe", str(probe), "--size", "10", "--out", str(tmp_path / "sets"))
    assert code == 2
    assert "D with 50% Unknown (|D|=10) needs 5 Unknown examples but the probed training pool has only 3 (r 3)" in err
    assert not (tmp_path / "sets").exists()  # nothing half-written


def test_curate_and_evaluate_reject_empty_or_mismatched_probe_files(cli, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    code, _, err = cli("curate", "--probe", str(empty), "--size", "4", "--out", str(tmp_path / "s"))
    assert code == 2 and "no probe records" in err
    other = tmp_path / "other.jsonl"
    other.write_text('{"id": "x", "relation": "r", "question": "Q?", "answers": ["a"]}\n')  # not a probe file: no category
    code, _, err = cli("evaluate", "--records", str(other))
    assert code == 2 and "other.jsonl, record on line 1, field 'category': missing" in err


def test_study_rejects_unknown_preset_and_keys(cli, tmp_path):
    code, _, err = cli("study", "new-knowledge", "--preset", "huge", "--out", str(tmp_path))
    assert code == 2 and "unknown preset 'huge' for study 'new-knowledge'; choose one of cpu, paper, quick" in err
    code, _, err = cli("study", "new-knowledge", "--set", "train.epochz=3", "--out", str(tmp_path))
    assert code == 2 and "key 'train.epochz': Extra inputs are not permitted" in err
    code, _, err = cli("study", "new-knowledge", "--set", "size=-1", "--out", str(tmp_path))
    assert code == 2 and "key 'size'" in err
