"""Study configs: a named YAML preset, then command-line `key=value` overrides (torchtune style)."""

from __future__ import annotations

from importlib import resources
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from knowtune.errors import ConfigError

C = TypeVar("C", bound=BaseModel)


def preset_names(study: str) -> list[str]:
    """The presets shipped for a study (configs/<study>_<preset>.yaml)."""
    files = resources.files("knowtune.recipes").joinpath("configs").iterdir()
    return sorted(f.name[len(study) + 1 : -5] for f in files if f.name.startswith(study + "_") and f.name.endswith(".yaml"))


def set_key(tree: dict, dotted: str, value: str) -> None:
    """Set tree['a']['b'] = yaml(value) for 'a.b=value'."""
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: {k!r} is not a section")
    try:
        node[keys[-1]] = yaml.safe_load(value)
    except (yaml.YAMLError, ValueError, RecursionError) as e:  # ValueError: an integer of more digits than Python reads
        shown = repr(value[:40]) + ("…" if len(value) > 40 else "")
        raise ConfigError(f"override {dotted!r}: {shown} is not a YAML value ({getattr(e, 'problem', None) or type(e).__name__})") from None


def load_study_config(model_cls: type[C], study: str, preset: str, overrides: dict[str, str]) -> C:
    """Validate a preset plus overrides; errors name the key path."""
    if preset not in preset_names(study):
        raise ConfigError(f"unknown preset {preset!r} for study {study!r}; choose one of {', '.join(preset_names(study))}")
    text = resources.files("knowtune.recipes").joinpath("configs", f"{study}_{preset}.yaml").read_text(encoding="utf-8")
    tree = yaml.safe_load(text) or {}
    for key, value in overrides.items():
        set_key(tree, key, value)
    try:
        return model_cls(**tree)
    except ValidationError as e:
        err = e.errors()[0]
        raise ConfigError(f"study config: key {'.'.join(map(str, err['loc']))!r}: {err['msg']}") from None
