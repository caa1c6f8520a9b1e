"""Bad input at the command line: one line naming what and where, non-zero exit, no traceback."""

from __future__ import annotations

import pytest

from knowtune.cli import main
from knowtune.models import builtin_gguf


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr("sys.argv", ["knowtune", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


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
    (["--preset", "fast"], r"unknown probe preset 'fast'"),
    (["--set", "n_samples=many"], r"key 'n_samples': Input should be a valid integer"),
    (["--split", "exemplar"], r"split 'exemplar' is the exemplar pool"),
    (["--model", "{d}/no/such/model"], r"model path does not exist"),
    (["--model", "{d}/half.gguf"], r"half\.gguf: not a readable GGUF file"),
]


@pytest.mark.parametrize("args,pattern", CASES)
def test_probe_bad_input(monkeypatch, capsys, bad_files, args, pattern):
    import re

    args = [a.format(d=bad_files) for a in args]
    code, out, err = run_cli(monkeypatch, capsys, "probe", "--out", str(bad_files / "run"), "--limit", "2", *args)
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("knowtune: error: "), err
    assert re.search(pattern, lines[0]), lines[0]
    assert "Traceback" not in err + out
    assert not (bad_files / "run" / "probe.jsonl").exists()


def test_data_show_builtin(monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["knowtune", "data", "show", "builtin"])
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 0
    assert "P36" in capsys.readouterr().out
