"""Strict settings: every numeric setting of every settings model refuses nan, ±inf, booleans and
strings, naming the key as the user types it; YAML 1.2 values; errors that name no key never say `key ''`."""

from __future__ import annotations

import types
import typing
from typing import Annotated, Literal, Union, get_args, get_origin

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from knowtune.errors import ConfigError
from knowtune.probe.config import ProbeConfig, probe_config
from knowtune.settings import (
    load_preset,
    parse_overrides,
    validated,
    with_overrides,
    yaml_value,
)
from knowtune.studies.registry import discover
from knowtune.train.sft_config import SFTConfig
from knowtune.update.flearning_config import FLearningConfig

UPDATE_NAMES = {"lam": "--lambda", "method": "--method"}


def _numeric_paths(ann, path: tuple) -> typing.Iterator[tuple]:
    """Key paths (ints for list items, literal keys for dicts) of every int or float below annotation `ann`."""
    origin, args = get_origin(ann), get_args(ann)
    if ann in (int, float):
        yield path
    elif origin is Annotated:
        yield from _numeric_paths(args[0], path)
    elif origin in (Union, types.UnionType):
        seen = set()
        for a in args:
            for p in _numeric_paths(a, path):
                if p not in seen:
                    seen.add(p)
                    yield p
    elif origin is list:
        yield from _numeric_paths(args[0], (*path, 0))
    elif origin is dict and get_origin(args[0]) is Literal:
        for key in get_args(args[0]):
            yield from _numeric_paths(args[1], (*path, key))
    elif isinstance(ann, type) and issubclass(ann, BaseModel):
        for name, field in ann.model_fields.items():
            yield from _numeric_paths(field.annotation, (*path, name))


def _loaders() -> dict[str, tuple[type[BaseModel], typing.Callable[[dict[str, str]], BaseModel]]]:
    """Every settings model a user sets with --set, discovered from the stages and the study registry,
    with how the CLI validates it."""
    out = {
        "probe": (ProbeConfig, lambda ov: probe_config("quick", ov)),
        "train": (SFTConfig, lambda ov: validated(SFTConfig, with_overrides({}, ov), "training settings")),
        "update": (FLearningConfig, lambda ov: validated(FLearningConfig, with_overrides({"method": "flearning-ft", "lam": 1.0}, ov),
                                                         "update settings", UPDATE_NAMES)),
    }
    for name, study in discover().items():
        for preset in study.presets():
            out[f"study {name} {preset}"] = (study.config, lambda ov, s=study, p=preset: s.load_config(p, ov))
    return out


LOADERS = _loaders()
CASES = [(which, path) for which, (model, _) in LOADERS.items() for path in _numeric_paths(model, ())]
BAD = ["nan", "inf", "-inf", ".nan", ".inf", "-.inf", ".NaN", "1e999", "-1e999", "true", "false", "yes", "no", "on", "off",
       "'1'", '"0.5"', "abc", "1_0", "0x10", "[1]", "{a: 1}"]


def _override(path: tuple, text: str) -> tuple[str, str, str]:
    """(key, value, key as the error names it): list items are set as a one-item list."""
    dotted = ".".join(map(str, path))
    if 0 in path:
        i = path.index(0)
        return ".".join(map(str, path[:i])), f"[{text}]", dotted
    return dotted, text, dotted


def test_every_model_has_numeric_settings():
    assert {"probe", "train", "update"} <= LOADERS.keys() and any(w.startswith("study ") for w in LOADERS)
    paths = {".".join(map(str, p)) for w, p in CASES}
    assert {"temperature", "learning_rate", "lam", "lr_grid.full.0", "lambdas.0", "train.epochs", "probe.top_k"} <= paths


@pytest.mark.parametrize("which,path", CASES, ids=[f"{w}:{'.'.join(map(str, p))}" for w, p in CASES])
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bad=st.one_of(st.sampled_from(BAD),
                     st.text(alphabet="abcdefxyz_-", min_size=1, max_size=8).filter(lambda t: isinstance(yaml_value(t), str))))
def test_a_numeric_setting_refuses_what_is_not_a_finite_number(which, path, bad):
    key, value, named = _override(path, bad)
    with pytest.raises(ConfigError) as e:
        LOADERS[which][1]({key: value})
    message = str(e.value)
    assert f"key '{named}'" in message or (named == "lam" and "--lambda" in message), message
    assert "key ''" not in message


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_lambda_option_names_the_option(value):
    with pytest.raises(ConfigError, match=r"^update settings: --lambda: must be a finite number, not (nan|inf|-inf)$"):
        validated(FLearningConfig, {"method": "flearning-ft", "lam": value}, "update settings", UPDATE_NAMES)


def test_yaml_12_values():
    assert [yaml_value(t) for t in ("yes", "no", "on", "off", "y", "true", "False")] == ["yes", "no", "on", "off", "y", True, False]
    assert yaml_value("1e-5") == 1e-5 and yaml_value("3") == 3 and yaml_value("[1, on]") == [1, "on"]
    assert yaml_value("nan") == "nan" and yaml_value(".inf") == float("inf")


@pytest.mark.parametrize("override,expect", [
    ("epochs=yes", "training settings: key 'epochs': Input should be a valid integer (got 'yes')"),
    ("epochs=true", "training settings: key 'epochs': Input should be a valid integer (got true)"),
    ("epochs=2.0", "training settings: key 'epochs': Input should be a valid integer"),
    ("learning_rate=inf", "training settings: key 'learning_rate': Input should be a valid number (got 'inf')"),
    ("weight_decay=.inf", "training settings: key 'weight_decay': must be a finite number, not inf"),
    ("bf16=yes", "training settings: key 'bf16': Input should be a valid boolean (got 'yes')"),
    ("fit_bf16=1", "training settings: key 'fit_bf16': Input should be a valid boolean (got 1)"),
    ("lr_scheduler_type=cosine_annealing", "training settings: key 'lr_scheduler_type': unknown scheduler 'cosine_annealing'; choose one of linear, cosine"),
    ("lora_target_modules=[]", "training settings: key 'lora_target_modules': names no module"),
    ("lora_target_modules='(q'", "training settings: key 'lora_target_modules': '(q' is not a valid regular expression"),
])
def test_training_settings_are_strict(override, expect):
    with pytest.raises(ConfigError) as e:
        validated(SFTConfig, with_overrides({}, parse_overrides([override])), "training settings")
    assert str(e.value).startswith(expect), str(e.value)


def test_a_check_across_settings_names_no_empty_key():
    study = discover()["new-knowledge"]
    with pytest.raises(ConfigError) as e:
        study.load_config("quick", {"train_pool": "2", "size": "3"})
    assert str(e.value) == "study config: size (|D| = 3) is more than train_pool (2)"


@pytest.mark.parametrize("name,override", [("new-knowledge", "relations"), ("flearning", "relations"), ("flearning", "seeds"),
                                           ("self-align", "train_subjects"), ("new-knowledge", "seeds")])
def test_an_empty_list_where_one_item_is_needed(name, override):
    with pytest.raises(ConfigError, match=rf"study config: key '{override}': List should have at least 1 item"):
        discover()[name].load_config("quick", {override: "[]"})


def test_string_numbers_are_not_coerced():
    with pytest.raises(ConfigError, match=r"probe settings: key 'k_shot': Input should be a valid integer \(got '2'\)"):
        load_preset(ProbeConfig, "knowtune.probe", "quick", {"k_shot": "'2'"}, owner="the probe", what="probe settings", folder="presets")
    assert probe_config("quick", {"k_shot": "2", "temperature": "1e-1"}).temperature == 0.1
