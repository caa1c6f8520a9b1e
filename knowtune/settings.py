"""Settings from a named YAML preset plus command-line `key=value` overrides (torchtune style).

One loader serves every configurable stage (the probe) and every study: a preset is
`<package>/<folder>/<name>.yaml` shipped as package data, overrides are dotted YAML keys, and the
result is validated by the stage's pydantic model, whose errors become one line naming the key path.
"""

from __future__ import annotations

from importlib import resources
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from knowtune.errors import ConfigError

C = TypeVar("C", bound=BaseModel)


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    """`key=value` strings as a dict (values are parsed and validated later)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {pair!r} is not key=value")
        out[key.strip()] = value.strip()
    return out


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


def with_overrides(tree: dict, overrides: dict[str, str]) -> dict:
    """`tree` with every dotted `key=value` override applied (in place, and returned)."""
    for key, value in overrides.items():
        set_key(tree, key, value)
    return tree


def validated(model_cls: type[C], tree: dict, what: str) -> C:
    """`model_cls(**tree)`, or a ConfigError whose one line names `what` and the key path at fault."""
    try:
        return model_cls(**tree)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(map(str, err["loc"])) or "(root)"
        shown = f"'{key}'" if key.isprintable() else repr(key)
        raise ConfigError(f"{what}: key {shown}: {err['msg']}") from None


def preset_names(package: str, folder: str = "configs") -> list[str]:
    """The presets shipped in `package`'s `folder` (`<name>.yaml`)."""
    files = resources.files(package).joinpath(folder).iterdir()
    return sorted(f.name[:-5] for f in files if f.name.endswith(".yaml"))


def load_preset(model_cls: type[C], package: str, preset: str, overrides: dict[str, str], *, owner: str, what: str,
                folder: str = "configs") -> C:
    """Validate a shipped preset plus overrides; an unknown preset (of `owner`) or a bad key (of `what`) is one line."""
    names = preset_names(package, folder)
    if preset not in names:
        raise ConfigError(f"unknown preset {preset!r} for {owner}; choose one of {', '.join(names)}")
    text = resources.files(package).joinpath(folder).joinpath(f"{preset}.yaml").read_text(encoding="utf-8")
    return validated(model_cls, with_overrides(yaml.safe_load(text) or {}, overrides), what)
