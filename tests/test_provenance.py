"""Determinism and provenance: the same command with the same seed gives byte-identical outputs,
and a stage given outputs made with another model warns."""

from __future__ import annotations

import shutil

import pytest
from conftest import make_tiny_model

from knowtune.cli import main

PROBE = ["probe", "--data", "{w}/qa.jsonl", "--preset", "quick", "--split", "test", "--limit", "24", "--set", "max_new_tokens=6"]


def knowtune(monkeypatch, capsys, *args: str) -> str:
    """Run the CLI in-process; return its stderr (exit code 0 required)."""
    monkeypatch.setattr("sys.argv", ["knowtune", *args])
    try:
        main()
    except SystemExit as e:
        assert e.code in (0, None), capsys.readouterr().err
    return capsys.readouterr().err


@pytest.fixture(scope="module")
def other_model(tiny_workdir, tmp_path_factory):
    """A second tiny model with different weights, saved as a directory."""
    from transformers import AutoTokenizer

    path = tmp_path_factory.mktemp("other") / "model"
    tok = AutoTokenizer.from_pretrained(tiny_workdir / "model")
    make_tiny_model(tok, seed=11).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_same_seed_same_command_gives_identical_probe_and_sets(monkeypatch, capsys, tiny_workdir, tmp_path):
    args = [a.format(w=tiny_workdir) for a in PROBE] + ["--model", str(tiny_workdir / "model")]
    for run in ("a", "b"):
        knowtune(monkeypatch, capsys, *args, "--out", str(tmp_path / run / "probe"))
        knowtune(monkeypatch, capsys, "curate", "--probe", str(tiny_workdir / "train.jsonl"), "--size", "8",
                 "--out", str(tmp_path / run / "sets"), "--seed", "3")
    a, b = tmp_path / "a", tmp_path / "b"
    assert (a / "probe" / "probe.jsonl").read_bytes() == (b / "probe" / "probe.jsonl").read_bytes()
    sets = sorted(p.name for p in (a / "sets").glob("*.jsonl"))
    assert len(sets) == 13
    for name in sets:
        assert (a / "sets" / name).read_bytes() == (b / "sets" / name).read_bytes(), name
    knowtune(monkeypatch, capsys, "curate", "--probe", str(tiny_workdir / "train.jsonl"), "--size", "8",
             "--out", str(tmp_path / "c"), "--seed", "4")
    assert any((a / "sets" / n).read_bytes() != (tmp_path / "c" / n).read_bytes() for n in sets)  # the seed matters


def test_stages_warn_on_outputs_made_with_another_model(monkeypatch, capsys, tiny_workdir, other_model, tmp_path):
    base = str(tiny_workdir / "model")
    probe = [a.format(w=tiny_workdir) for a in PROBE]
    knowtune(monkeypatch, capsys, *probe, "--model", base, "--out", str(tmp_path / "probe"))
    records = tmp_path / "probe" / "probe.jsonl"
    train = ["train", "--train", str(records), "--test", str(records), "--set", "epochs=1", "--set", "checkpoint_every_epoch=false"]

    err = knowtune(monkeypatch, capsys, *train, "--model", base, "--out", str(tmp_path / "same"))
    assert "warning" not in err
    err = knowtune(monkeypatch, capsys, *train, "--model", str(other_model), "--out", str(tmp_path / "other"))
    warnings = [line for line in err.splitlines() if line.startswith("knowtune: warning: ")]
    assert len(warnings) == 2, err  # --train and --test were both probed with the base model
    assert "--train" in warnings[0] and "probe/config.json" in warnings[0] and str(other_model) in warnings[0]

    # Curated sets carry their probe's provenance in manifest.json.
    shutil.copytree(tmp_path / "probe", tmp_path / "pool")
    shutil.copy(tiny_workdir / "train.jsonl", tmp_path / "pool" / "probe.jsonl")  # records with every category
    knowtune(monkeypatch, capsys, "curate", "--probe", str(tmp_path / "pool" / "probe.jsonl"), "--size", "8", "--out", str(tmp_path / "sets"))
    err = knowtune(monkeypatch, capsys, "train", "--train", str(tmp_path / "sets" / "D_50.jsonl"), "--set", "epochs=1",
                   "--set", "checkpoint_every_epoch=false", "--model", str(other_model), "--out", str(tmp_path / "other_set"))
    assert "sets/manifest.json" in err and "was made with model" in err

    # A fine-tune answers to its base model's fingerprint: judging it on the base model's probe is expected.
    tuned = str(tmp_path / "same" / "convergence")
    err = knowtune(monkeypatch, capsys, "evaluate", "--model", tuned, "--records", str(records))
    assert "warning" not in err
    knowtune(monkeypatch, capsys, *probe, "--model", str(other_model), "--out", str(tmp_path / "probe_by_other"))
    err = knowtune(monkeypatch, capsys, "evaluate", "--model", tuned, "--records", str(tmp_path / "probe_by_other" / "probe.jsonl"))
    assert "was made with model" in err and "probe_by_other/config.json" in err
