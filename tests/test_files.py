"""The resume guard every run directory shares (knowtune/files.py `check_or_write_manifest`): a second run
with other settings is refused with one line naming what differs."""

from __future__ import annotations

import pytest

from knowtune.errors import ConfigError
from knowtune.files import atomic_dir, check_or_write_manifest, read_json


def test_same_manifest_resumes_and_another_is_refused(tmp_path):
    path = tmp_path / "run" / "manifest.json"
    path.parent.mkdir()
    check_or_write_manifest(path, {"config": {"epochs": 2}, "model": "m"}, "a training run")
    assert read_json(path) == {"config": {"epochs": 2}, "model": "m"}
    check_or_write_manifest(path, {"config": {"epochs": 2}, "model": "m"}, "a training run")  # the same: resume
    check_or_write_manifest(path, {"config": {"epochs": 2}, "model": "other"}, "a training run", compare=["config"])
    with pytest.raises(ConfigError) as e:
        check_or_write_manifest(path, {"config": {"epochs": 3}, "model": "m"}, "a training run")
    assert str(e.value) == (f"{path}: this directory holds a training run with a different config.epochs "
                            "(2 vs 3); use another output directory or delete it")
    path.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="not a knowtune manifest"):
        check_or_write_manifest(path, {"config": {}}, "a training run")


def test_the_refusal_shows_the_setting_that_differs(tmp_path):
    base = {f"key{i:02d}": "value" for i in range(20)}
    path = tmp_path / "manifest.json"
    check_or_write_manifest(path, {"config": {**base, "train": {"epochs": 4}}}, "a study")
    with pytest.raises(ConfigError) as e:
        check_or_write_manifest(path, {"config": {**base, "train": {"epochs": 9}}}, "a study")
    assert "epochs" in str(e.value) and "4" in str(e.value) and "9" in str(e.value)


def test_atomic_dir_replaces_the_folder_whole_or_not_at_all(tmp_path):
    target = tmp_path / "model"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("new")
    assert [p.name for p in target.iterdir()] == ["a.txt"]
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_dir(target) as tmp:
            (tmp / "b.txt").write_text("half")
            raise RuntimeError("killed")
    assert [p.name for p in target.iterdir()] == ["a.txt"] and sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    with atomic_dir(target) as tmp:
        (tmp / "b.txt").write_text("newer")
    assert [p.name for p in target.iterdir()] == ["b.txt"]
