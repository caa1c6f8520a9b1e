"""Settings from a named YAML preset plus command-line `key=value` overrides (torchtune style).

One loader serves every configurable stage (the probe) and every study: a preset is
`<package>/<folder>/<name>.yaml` shipped as package data, overrides are dotted YAML keys, and the
result is validated by the stage's pydantic model, whose errors become one line naming the key path.

Values are read strictly: YAML 1.2 scalars (only true/false are booleans, so `yes`, `no`, `on`, `off`
stay strings; `1e-5` is a number), pydantic's strict mode (a boolean is not an integer, a string is not
a number) and finite floats only (`.nan`, `.inf` are refused), all before any work starts.
"""

from __future__ import annotations

import math
import re
from importlib import resources
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from knowtune.errors import ConfigError

C = TypeVar("C", bound=BaseModel)


class _Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 core-schema booleans and numbers: PyYAML implements YAML 1.1,
    where `yes`/`no`/`on`/`off` are booleans, `010` is octal and `1e-5` is a string."""


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
for _tag, _rx, _first in (
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("tag:yaml.org,2002:int", r"^[-+]?(?:0|[1-9][0-9]*)$", "-+0123456789"),
    ("tag:yaml.org,2002:float", r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
     "-+0123456789."),
):
    _Yaml12Loader.add_implicit_resolver(_tag, re.compile(_rx), list(_first))


def yaml_value(text: str) -> Any:
    """A YAML 1.2 (core schema) value: see _Yaml12Loader."""
    return yaml.load(text, Loader=_Yaml12Loader)  # noqa: S506 — a SafeLoader subclass


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
        node[keys[-1]] = yaml_value(value)
    except (yaml.YAMLError, ValueError, RecursionError) as e:  # ValueError: an integer of more digits than Python reads
        shown = repr(value[:40]) + ("…" if len(value) > 40 else "")
        raise ConfigError(f"override {dotted!r}: {shown} is not a YAML value ({getattr(e, 'problem', None) or type(e).__name__})") from None


def with_overrides(tree: dict, overrides: dict[str, str]) -> dict:
    """`tree` with every dotted `key=value` override applied (in place, and returned)."""
    for key, value in overrides.items():
        set_key(tree, key, value)
    return tree


def _non_finite(tree: Any) -> tuple[tuple, float] | None:
    """The key path and value of the first nan or ±inf in `tree`, if any (iterative, and each node
    visited once: a YAML alias can make a tree contain itself)."""
    stack, seen = [((), tree)], set()
    while stack:
        path, node = stack.pop()
        if isinstance(node, float) and not math.isfinite(node):
            return path, node
        if isinstance(node, (dict, list)) and id(node) not in seen:
            seen.add(id(node))
            items = list(node.items() if isinstance(node, dict) else enumerate(node))
            stack += [((*path, k), v) for k, v in reversed(items)]
    return None


def _key(loc: tuple, names: dict[str, str]) -> str:
    """A key path as the user types it: `--lambda` for an option, `key 'lr_grid.full.0'` for a setting."""
    dotted = ".".join(map(str, loc))
    if dotted in names:
        return names[dotted]
    return f"key '{dotted}'" if dotted.isprintable() else f"key {dotted!r}"


def validated(model_cls: type[C], tree: dict, what: str, names: dict[str, str] | None = None) -> C:
    """`model_cls` validated strictly from `tree`, or a ConfigError whose one line names `what` and the
    key at fault as the user typed it (`names` maps a top-level field to its option, e.g. lam → --lambda)."""
    names = names or {}
    if (bad := _non_finite(tree)) is not None:
        raise ConfigError(f"{what}: {_key(bad[0], names)}: must be a finite number, not {bad[1]}")
    try:
        return model_cls.model_validate(tree, strict=True)
    except ValidationError as e:
        err = e.errors()[0]
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] in ("int_type", "float_type", "bool_type", "string_type", "literal_error") and isinstance(
                err.get("input"), (str, int, float, bool)):
            msg += f" (got {str(err['input']).lower() if isinstance(err['input'], bool) else repr(err['input'])})"
        if not err["loc"]:  # a check across several settings: it names them itself
            raise ConfigError(f"{what}: {msg}") from None
        raise ConfigError(f"{what}: {_key(err['loc'], names)}: {msg}") from None


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
    return validated(model_cls, with_overrides(yaml_value(text) or {}, overrides), what)
