"""Every shipped preset loads: each registered study's configs/{cpu,paper,quick}.yaml validates against its
settings model, each probe preset validates, and no YAML file under knowtune/ is left unreached (a stray or
misplaced preset fails here, not in a user's run)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest
import yaml

from knowtune.probe.config import ProbeConfig, probe_config
from knowtune.settings import preset_names
from knowtune.studies.registry import discover

PACKAGE = Path(__file__).resolve().parents[1] / "knowtune"
STUDIES = discover()


def test_there_are_the_three_studies():
    assert sorted(STUDIES) == ["flearning", "new-knowledge", "self-align"]


@pytest.mark.parametrize("name", sorted(STUDIES))
def test_every_study_preset_validates(name):
    study = STUDIES[name]
    assert study.presets() == ["cpu", "paper", "quick"]
    for preset in study.presets():
        cfg = study.load_config(preset, {})
        assert isinstance(cfg, study.config), preset
        # the file's every key reached the config (extra keys are refused, so none was dropped)
        text = resources.files(study.package).joinpath("configs", f"{preset}.yaml").read_text(encoding="utf-8")
        raw = yaml.safe_load(text) or {}
        dumped = cfg.model_dump()
        assert set(raw) <= set(dumped), (preset, set(raw) - set(dumped))


def test_cpu_presets_are_evidence_runs_over_several_seeds():
    for name, study in STUDIES.items():
        assert len(study.load_config("cpu", {}).seeds) >= 3, name


def test_every_probe_preset_validates():
    names = preset_names("knowtune.probe", "presets")
    assert names == sorted(p.stem for p in (PACKAGE / "probe" / "presets").glob("*.yaml")) and "paper" in names
    for name in names:
        assert isinstance(probe_config(name), ProbeConfig)
    assert probe_config("paper") == ProbeConfig()  # the paper preset is the paper's defaults


def _reached() -> set[Path]:
    files = {PACKAGE / "probe" / "presets" / f"{name}.yaml" for name in preset_names("knowtune.probe", "presets")}
    for study in STUDIES.values():
        folder = Path(str(resources.files(study.package).joinpath("configs")))
        files |= {folder / f"{p}.yaml" for p in study.presets()}
    return {f.resolve() for f in files}


def test_every_yaml_under_the_package_is_a_loaded_preset():
    found = {p.resolve() for p in PACKAGE.rglob("*.y*ml")}
    stray = sorted(str(p.relative_to(PACKAGE.parent)) for p in found - _reached())
    assert not stray, f"YAML files under knowtune/ that no study or probe preset loads: {stray}"
    assert len(found) == 3 * len(STUDIES) + len(preset_names("knowtune.probe", "presets"))
