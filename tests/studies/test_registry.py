"""The study registry and the commands built from it, through the real `knowtune` entry point:
`knowtune study list`, `knowtune study NAME --help`, unknown study names and presets as one error line,
and a fourth study registered from outside showing up in `discover()` and `knowtune study list`."""

from __future__ import annotations

import pkgutil

import pytest
from pydantic import BaseModel, ConfigDict

import knowtune.studies
from knowtune.errors import ConfigError
from knowtune.studies import registry
from knowtune.studies.registry import STUDIES, Study, discover, get_study, register

NAMES = ["flearning", "new-knowledge", "self-align"]


def test_every_study_package_registers_one_study_named_for_it():
    packages = sorted(f"knowtune.studies.{m.name}" for m in pkgutil.iter_modules(knowtune.studies.__path__) if m.ispkg)
    studies = discover()
    assert sorted(studies) == NAMES
    assert sorted(s.package for s in studies.values()) == packages
    assert all(name == s.name for name, s in studies.items())


def test_study_list_shows_each_study_with_paper_and_presets(cli):
    code, out, err = cli("study", "list")
    assert code == 0 and err == ""
    for name, study in discover().items():
        rows = [line for line in out.splitlines() if f" {name} " in line]
        assert len(rows) == 1, (name, out)
        assert study.paper in rows[0] and "cpu, paper, quick" in rows[0], rows[0]
    assert {"Gekhman et al. 2024", "Ni et al. 2024", "Ren et al. 2024"} == {s.paper for s in discover().values()}


@pytest.mark.parametrize("name", NAMES)
def test_study_help_shows_the_paper(cli, name):
    code, out, err = cli("study", name, "--help")
    assert code == 0 and err == ""
    study = get_study(name)
    assert f" study {name} [OPTIONS]" in out  # the program name is whatever runs the tests
    assert f"{study.paper} end to end" in out and "--preset" in out and "cpu, paper, quick" in out


@pytest.mark.parametrize("args", [["study", "slick"], ["study", "new_knowledge", "--out", "x"], ["study", "slick", "--help"]])
def test_unknown_study_is_one_error_line_naming_the_studies(cli, args):
    code, out, err = cli(*args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("knowtune: error: "), err
    assert lines[0] == f"knowtune: error: unknown study '{args[1]}'; choose one of flearning, new-knowledge, self-align"
    assert out == ""


@pytest.mark.parametrize("name", NAMES)
def test_unknown_preset_is_one_error_line_naming_the_presets(cli, name, tmp_path):
    code, _, err = cli("study", name, "--preset", "huge", "--out", str(tmp_path / "run"))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0] == f"knowtune: error: unknown preset 'huge' for study '{name}'; choose one of cpu, paper, quick"
    assert not (tmp_path / "run").exists()


def test_get_study_names_the_studies_there_are():
    with pytest.raises(ConfigError, match=r"unknown study 'slick'; choose one of flearning, new-knowledge, self-align"):
        get_study("slick")


class DummyConfig(BaseModel):
    """Reads the new-knowledge presets' keys without checking them, and one key of its own."""

    model_config = ConfigDict(extra="allow")
    size: int


@pytest.fixture
def dummy():
    """A fourth study, registered the way a study package registers itself; removed afterwards."""
    assert "dummy" not in STUDIES
    study = register(Study(name="dummy", paper="Nobody et al. 2099", summary="a stand-in study", config=DummyConfig,
                           package="knowtune.studies.new_knowledge"))
    yield study
    del STUDIES["dummy"]


def test_a_registered_study_is_discovered(dummy, cli):
    studies = discover()
    assert list(studies) == ["dummy", *NAMES] and studies["dummy"] is dummy
    assert get_study("dummy") is dummy and dummy.presets() == ["cpu", "paper", "quick"]
    cfg = dummy.load_config("quick", {"size": "7"})
    assert isinstance(cfg, DummyConfig) and cfg.size == 7
    with pytest.raises(ConfigError, match="study config: key 'size': Input should be a valid integer"):
        dummy.load_config("quick", {"size": "many"})
    code, out, _ = cli("study", "list")  # the list is read from the registry when it runs
    assert code == 0 and any(" dummy " in line and "Nobody et al. 2099" in line for line in out.splitlines())


def test_the_dummy_is_gone_afterwards():
    assert "dummy" not in discover() and sorted(registry.STUDIES) == NAMES
