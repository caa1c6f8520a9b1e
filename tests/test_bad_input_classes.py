"""The classes of bad input beyond the table's one example each (docs/bad-inputs.md, second pass):
a refused run never poisons the next, malformed files are named with their field, loaders refuse
what they cannot read, messages name what the user gave, and Ctrl-C says what was kept."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from knowtune.curate.new_knowledge_sets import UNKNOWN_SHARES, study_sets
from knowtune.errors import ConfigError, DataError, ModelError
from knowtune.files import atomic_write_json, check_output_dir, read_text
from knowtune.probe.records import ProbeRecord


@pytest.fixture
def quiet_cli(cli):
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    yield cli
    hf_logging.enable_progress_bar()


def _qa(path: Path, exemplars: int) -> Path:
    rows = [{"id": f"e{i}", "relation": "cap", "question": f"What is the capital of land {i}?", "answers": [f"City {i}"],
             "split": "exemplar"} for i in range(exemplars)]
    rows += [{"id": f"t{i}", "relation": "cap", "question": f"What is the capital of country {i}?", "answers": ["Paris"],
              "split": "test"} for i in range(2)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_refused_probe_does_not_poison_the_corrected_run(quiet_cli, tiny_workdir, tmp_path):
    data, out = _qa(tmp_path / "qa.jsonl", exemplars=1), tmp_path / "p"
    args = ("probe", "--model", str(tiny_workdir / "model"), "--data", str(data), "--preset", "quick", "--out", str(out))
    code, _, err = quiet_cli(*args, "--set", "k_shot=3")
    assert code == 2 and "has 1 exemplars in split 'exemplar', needs at least k=3" in err
    assert not out.exists()
    code, _, err = quiet_cli(*args, "--set", "k_shot=1", "--set", "n_samples=1", "--set", "max_new_tokens=2")
    assert code == 0 and (out / "summary.json").exists(), err


def test_studies_write_nothing_before_their_settings_and_inputs_are_valid(quiet_cli, tmp_path):
    for args in (["study", "new-knowledge", "--set", "relations=[P999]"], ["study", "self-align", "--set", "train_subjects=[astronomy]"],
                 ["study", "flearning", "--set", "edits=[counterfact:]"]):
        code, _, err = quiet_cli(*args, "--out", str(tmp_path / "s"))
        assert code == 2 and err.startswith("knowtune: error: "), err
        assert not (tmp_path / "s").exists(), args


def test_probe_mc_checks_out_before_probing(quiet_cli, tiny_workdir, tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    monkeypatch.setattr("knowtune.evaluate.multiple_choice.evaluate_mc_test", lambda *a, **k: pytest.fail("probed"))
    code, _, err = quiet_cli("probe-mc", "--model", str(tiny_workdir / "model"), "--out", str(tmp_path / "file" / "sub"))
    assert code == 1 and "file: Not a directory" in err


@pytest.mark.parametrize("percent", [p for p in (0, 10, 37, 50, 99, 100)])
def test_every_idk_percentage_the_option_accepts_is_built(percent):
    cats = ("HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown")
    pool = [ProbeRecord(f"q{i}", "r", question=f"Q{i}?", answers=("a",), category=cats[i % 4]) for i in range(80)]
    sets = study_sets(pool, 20, 0, percent)
    unknown = sum(r.category == "Unknown" for r in sets["D_IDK"])
    assert len(sets["D_IDK"]) == 20 and unknown == round(20 * percent / 100)
    if percent in UNKNOWN_SHARES:  # the study's own mixture, relabelled
        assert [r.id for r in sets["D_IDK"]] == [r.id for r in sets[f"D_{percent}"]]


def test_a_model_directory_with_malformed_files(tiny_workdir, tmp_path):
    import shutil

    from knowtune.models import load_model

    model = tmp_path / "m"
    shutil.copytree(tiny_workdir / "model", model)
    (model / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "Nonsense"}}')  # JSON, but no tokenizer
    with pytest.raises(ModelError, match=r"/m: cannot load the tokenizer \("):
        load_model(str(model))
    (model / "config.json").write_text('["a list"]')
    with pytest.raises(ModelError, match=r"config.json: expected a JSON object, got list"):
        load_model(str(model))


def test_a_hub_id_fails_fast_when_the_hub_cannot_be_reached(monkeypatch):
    from huggingface_hub import constants

    from knowtune.models import load_model

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens
    start = time.monotonic()
    with pytest.raises(ModelError, match=r"nosuchowner/nosuchmodel: cannot load model \(not in the local hub cache, and the hub "
                                         r"http://127.0.0.1:9 cannot be reached"):
        load_model("nosuchowner/nosuchmodel")
    assert time.monotonic() - start < 10


def test_mmlu_rows_with_an_empty_option_are_refused(tmp_path):
    from knowtune.data.multiple_choice import read_mmlu_csv

    (tmp_path / "anatomy_test.csv").write_text("Q1?,a,b,c,d,A\nQ2?,a,,c,d,B\n")
    with pytest.raises(DataError, match=r"anatomy_test.csv, record on line 2, field 'B': empty option"):
        read_mmlu_csv(tmp_path / "anatomy_test.csv")


def test_an_entityquestions_template_must_have_the_slot(tmp_path):
    from knowtune.data.entityquestions import load_entityquestions

    (tmp_path / "P36.test.json").write_text(json.dumps([{"question": "What is the capital of France?", "answers": ["Paris"]}]))
    for bad in ('"What is the capital?"', "3"):
        (tmp_path / "relation_query_templates.json").write_text('{"P36": ' + bad + "}")
        with pytest.raises(DataError, match=r"relation_query_templates.json, field 'P36': a template must be a string with an \[X\] slot"):
            load_entityquestions(tmp_path)
    (tmp_path / "relation_query_templates.json").write_text('{"P36": "What is the capital of [X]?"}')
    assert load_entityquestions(tmp_path).examples[0].subject == "France"


def test_links_that_lead_nowhere_are_named_as_such(tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    with pytest.raises(DataError, match=r"/a: a symbolic link loop"):
        read_text(tmp_path / "a")
    with pytest.raises(DataError, match=r"/dangling: a symbolic link to a missing target \(.*gone\)"):
        read_text(tmp_path / "dangling")
    with pytest.raises(DataError, match=r"/none: no such file$"):
        read_text(tmp_path / "none")


def test_a_failed_atomic_write_names_the_target(tmp_path):
    (tmp_path / "target").mkdir()
    with pytest.raises(IsADirectoryError) as e:
        atomic_write_json(tmp_path / "target", {"a": 1})
    assert e.value.filename == str(tmp_path / "target") and "cannot write" in e.value.strerror
    assert sorted(p.name for p in tmp_path.iterdir()) == ["target"]  # the temp file is gone


def test_check_output_dir(tmp_path):
    check_output_dir(tmp_path / "new" / "deeper")
    (tmp_path / "f").write_text("x")
    with pytest.raises(FileExistsError):
        check_output_dir(tmp_path / "f")
    with pytest.raises(NotADirectoryError):
        check_output_dir(tmp_path / "f" / "sub")


def test_evaluate_prints_its_metrics_before_a_failed_write(quiet_cli, tiny_workdir, tmp_path, monkeypatch):
    import errno

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("knowtune.files.os.fsync", disk_full)
    code, out, err = quiet_cli("evaluate", "--model", str(tiny_workdir / "model"), "--records", str(tiny_workdir / "dev.jsonl"),
                               "--out", str(tmp_path / "results.json"))
    assert code == 1 and err.strip() == f"knowtune: error: {tmp_path / 'results.json'}: cannot write (No space left on device)"
    assert '"accuracy"' in out and list(tmp_path.iterdir()) == []  # printed, and no temp file left


def test_edit_specs_keep_their_prefix(tmp_path):
    from knowtune.data.edit_records import resolve_edits

    zsre = [{"subject": "France", "src": "What is the capital of France?", "answers": ["Paris"], "alt": "Lyon",
             "rephrase": "Which city is France's capital?", "loc": "nq question: who wrote hamlet", "loc_ans": "Shakespeare"}]
    (tmp_path / "z.jsonl").write_text(json.dumps(zsre))
    assert resolve_edits(f"zsre:{tmp_path / 'z.jsonl'}").examples[0].target_new == "Lyon"
    with pytest.raises(DataError, match=r"^'zsre:': no path after the zsre: prefix; give zsre:PATH$"):
        resolve_edits("zsre:")


@pytest.mark.parametrize("command,kept", [("probe", True), ("data", False)])
def test_ctrl_c_says_it_was_interrupted_and_what_was_kept(command, kept, quiet_cli, tiny_workdir, tmp_path, monkeypatch):
    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("knowtune.data.load_qa", interrupt)
    out = tmp_path / "p"
    args = ("probe", "--model", str(tiny_workdir / "model"), "--out", str(out)) if command == "probe" else ("data", "show", "builtin")
    code, _, err = quiet_cli(*args)
    assert code == 130
    expected = f"knowtune: interrupted; the work finished so far is kept in {out} (run the same command again to resume)" \
        if kept else "knowtune: interrupted"
    assert err.strip().splitlines()[-1] == expected


def test_interrupt_names_an_out_given_with_equals():
    from knowtune.cli import _kept

    assert _kept(["train", "--out=runs/t"]).endswith("kept in runs/t (run the same command again to resume)")
    assert _kept(["evaluate", "--out", "x.json"]) == "" and _kept([]) == ""


@pytest.mark.skipif(os.geteuid() == 0 if hasattr(os, "geteuid") else True, reason="root writes anywhere")
def test_an_unwritable_parent_is_refused_before_work(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(PermissionError):
        check_output_dir(locked / "out")


def test_a_foreign_manifest_is_not_called_different_settings(tmp_path):
    from knowtune.files import check_or_write_manifest

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64}))
    with pytest.raises(ConfigError, match=r"config.json: not a knowtune manifest of a probe \(a file of something else"):
        check_or_write_manifest(tmp_path / "config.json", {"settings": {}, "model": {}}, "a probe")


def test_a_study_checks_lora_targets_against_the_model_before_any_work(tiny_tokenizer, tmp_path):
    from conftest import make_tiny_model

    from knowtune.models import LoadedModel
    from knowtune.studies.common import check_study
    from knowtune.studies.registry import discover

    lm = LoadedModel(make_tiny_model(tiny_tokenizer), tiny_tokenizer, "tiny", "fp")
    for name, overrides in (("new-knowledge", {"train.method": "lora", "train.lora_target_modules": "[qkv]"}),
                            ("flearning", {"lora.lora_target_modules": "[qkv]"})):
        cfg = discover()[name].load_config("quick", overrides)
        with pytest.raises(ConfigError, match=r"lora_target_modules \['qkv'\] matches no layer of the model"):
            check_study(tmp_path / name, cfg, lm, None)
        assert not (tmp_path / name).exists()


def test_a_hub_id_that_is_not_one(monkeypatch):
    from knowtune.models import load_model

    with pytest.raises(ModelError, match=r"^foo\.\.bar: not a model path, and not a hub id \("):
        load_model("foo..bar")
