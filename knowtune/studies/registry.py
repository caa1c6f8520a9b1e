"""The study registry: each study package registers one `Study`, and the CLI builds
`knowtune study <name>` and `knowtune study list` from it, so a new study is a new folder."""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from knowtune.errors import ConfigError
from knowtune.settings import load_preset, preset_names


@dataclass(frozen=True)
class Study:
    """One paper's study: its command name, its settings model and shipped presets, and how to run it."""

    name: str  # `knowtune study <name>`
    paper: str  # whose findings it checks, e.g. "Gekhman et al. 2024"
    summary: str  # one line: the stages it chains
    config: type[BaseModel]  # every setting a run depends on
    package: str  # the package: its configs/<preset>.yaml are the presets, its study.py has run_study

    def run(self, cfg: BaseModel, out: str | Path, progress: bool = True) -> dict:
        """Run (or resume) the study into `out`: `<package>.study.run_study`, imported only now, since
        it pulls in torch and transformers; returns what results.json holds."""
        return importlib.import_module(f"{self.package}.study").run_study(cfg, out, progress)

    def presets(self) -> list[str]:
        """The shipped presets: quick, cpu and paper in every study."""
        return preset_names(self.package)

    def load_config(self, preset: str, overrides: dict[str, str]) -> BaseModel:
        """A preset plus `key=value` overrides, validated; bad input is one line naming the key."""
        return load_preset(self.config, self.package, preset, overrides, owner=f"study {self.name!r}", what="study config")


STUDIES: dict[str, Study] = {}


def register(study: Study) -> Study:
    """Add a study (its package calls this on import)."""
    STUDIES[study.name] = study
    return study


def discover() -> dict[str, Study]:
    """Import every study package under knowtune.studies, so each registers itself; name → study."""
    import knowtune.studies as root

    for info in pkgutil.iter_modules(root.__path__):
        if info.ispkg:
            importlib.import_module(f"{root.__name__}.{info.name}")
    return dict(sorted(STUDIES.items()))


def get_study(name: str) -> Study:
    """The study called `name`, or a one-line error naming the ones there are."""
    studies = discover()
    if name not in studies:
        raise ConfigError(f"unknown study {name!r}; choose one of {', '.join(studies)}")
    return studies[name]
