"""The package's layering, read from the source: every `import` of a knowtune module (at module level,
inside functions, under TYPE_CHECKING, relative, or `importlib.import_module("knowtune....")`) must go
down the layer order, never up; the data layer stays below every stage; memory.py is a leaf; only the
studies and the CLI know about the studies; and a study package never imports another study.

`violations()` is checked on the real tree (none allowed) and on small made-up trees, one per rule,
so each rule is known to fail when it is broken."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "knowtune"

# Lowest first; a module may import its own layer and the layers below it.
LAYERS = ["errors", "matching", "files", "memory", "data", "engine", "probe", "evaluate", "curate", "train", "integrations",
          "update", "report", "audit", "studies", "cli"]
HELPERS = {"settings", "models", "provenance"}  # low-level helpers: sit just above files
HELPER_MAY_IMPORT = {"errors", "files", "matching"}
DATA_MUST_NOT_IMPORT = {"probe", "train", "evaluate", "curate", "update", "studies"}
STUDY_SHARED = {"registry", "common", "stats", "verdicts"}  # knowtune.studies.<these> are shared by every study


def rank(top: str) -> float | None:
    """The layer of a top-level name (`knowtune.<top>...`); None for a name in no layer."""
    if top == "":  # the `knowtune` package itself (__version__): below everything
        return -1
    if top == "__main__":  # `python -m knowtune`: above the CLI it runs
        return len(LAYERS)
    if top in HELPERS:
        return LAYERS.index("files") + 0.5
    return LAYERS.index(top) if top in LAYERS else None


def top_name(module: str) -> str:
    """'knowtune.data.formats' → 'data'; 'knowtune' → ''."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def read_tree(root: Path = PACKAGE) -> dict[str, tuple[str, bool, str]]:
    """module name → (source, is a package, path shown in messages) for every .py file under `root`."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        is_pkg = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_pkg else parts)
        out[name] = (path.read_text(encoding="utf-8"), is_pkg, str(path.relative_to(root.parent)))
    return out


def imports(module: str, source: str, is_pkg: bool, known: set[str]) -> list[tuple[int, str]]:
    """(line, imported knowtune module) for every import anywhere in the module's AST."""
    package = module if is_pkg else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from . import x, from ..data import y
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:  # `from knowtune.studies import flearning` imports a module
                sub = f"{target}.{alias.name}"
                found.append((node.lineno, sub if sub in known else target))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name == "import_module" and isinstance(node.args[0].value, str):
                found.append((node.lineno, node.args[0].value))
    return [(line, t) for line, t in found if t == "knowtune" or t.startswith("knowtune.")]


def study_of(module: str, packages: set[str]) -> str | None:
    """'knowtune.studies.flearning.lr' → 'knowtune.studies.flearning' when that is a study package."""
    parts = module.split(".")
    if len(parts) >= 3 and parts[1] == "studies":
        pkg = ".".join(parts[:3])
        if pkg in packages:
            return pkg
    return None


def violations(tree: dict[str, tuple[str, bool, str]]) -> list[str]:
    """Every import that breaks a layering rule, as 'path:line: importer imports target (rule)'."""
    known = set(tree)
    packages = {m for m, (_, is_pkg, _) in tree.items() if is_pkg}
    out = []
    for module, (source, is_pkg, path) in sorted(tree.items()):
        top = top_name(module)
        if rank(top) is None:
            out.append(f"{path}: knowtune.{top} is in no layer (add it to LAYERS or HELPERS in tests/test_layers.py)")
            continue
        own_study = study_of(module, packages)
        for line, target in imports(module, source, is_pkg, known):
            t_top = top_name(target)
            where = f"{path}:{line}: {module} imports {target}"
            if rank(t_top) is None:
                out.append(f"{where} (knowtune.{t_top} is in no layer)")
                continue
            if top in HELPERS and t_top not in HELPER_MAY_IMPORT | {top, ""}:
                out.append(f"{where} (the helpers settings/models/provenance may import only errors, files, matching)")
            elif t_top != top and rank(t_top) > rank(top):
                out.append(f"{where} (a lower layer imports a higher one: {top or 'knowtune'} < {t_top})")
            if top == "data" and t_top in DATA_MUST_NOT_IMPORT:
                out.append(f"{where} (the data layer imports no stage: probe, train, evaluate, curate, update, studies)")
            if top == "memory" and target != "knowtune.errors":
                out.append(f"{where} (memory.py imports no knowtune module but knowtune.errors)")
            if t_top == "studies" and top not in ("studies", "cli", "__main__"):
                out.append(f"{where} (only knowtune/studies/ and knowtune/cli/ import knowtune.studies)")
            if top == "studies" and t_top == "studies":
                target_study = study_of(target, packages)
                shared = target.split(".")[2] in STUDY_SHARED if target.count(".") >= 2 else False
                if own_study is not None and not (shared or target_study == own_study):
                    out.append(f"{where} (a study package imports only knowtune.studies.{{registry,common,stats,verdicts}} and itself)")
                elif own_study is None and target_study is not None:
                    out.append(f"{where} (the studies' shared modules import no study package)")
    return out


def test_the_package_keeps_its_layers():
    tree = read_tree()
    assert "knowtune.studies.registry" in tree and "knowtune.memory" in tree and len(tree) > 40
    found = violations(tree)
    assert not found, "layering violations:\n" + "\n".join(found)


def test_every_top_level_name_is_in_a_layer():
    tops = {top_name(m) for m in read_tree()}
    assert tops == set(LAYERS) | HELPERS | {"", "__main__"}, tops ^ (set(LAYERS) | HELPERS | {"", "__main__"})


def _tree(**modules: str) -> dict[str, tuple[str, bool, str]]:
    """A made-up tree: `data__formats="..."` is knowtune/data/formats.py; `studies__x__` is a package."""
    out = {"knowtune": ("", True, "knowtune/__init__.py")}
    for key, source in modules.items():
        is_pkg = key.endswith("__") and key != "__main__"
        name = "knowtune." + (key if key == "__main__" else key.rstrip("_").replace("__", "."))
        out[name] = (source, is_pkg, name.replace(".", "/") + ("/__init__.py" if is_pkg else ".py"))
        parts = name.split(".")
        for i in range(2, len(parts)):  # every parent is a package
            parent = ".".join(parts[:i])
            out.setdefault(parent, ("", True, parent.replace(".", "/") + "/__init__.py"))
    return out


@pytest.mark.parametrize("modules, rule", [
    ({"errors": "", "data__formats": "from knowtune.probe.slick import CATEGORIES", "probe__slick": ""},
     "a lower layer imports a higher one: data < probe"),
    ({"data__formats": "def f():\n    import knowtune.train.examples\n", "train__examples": ""},  # inside a function
     "the data layer imports no stage"),
    ({"data__formats": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from knowtune.evaluate.qa import x\n",
      "evaluate__qa": ""}, "the data layer imports no stage"),
    ({"engine__base": "from ..probe import config", "probe__config": ""},  # relative
     "a lower layer imports a higher one: engine < probe"),
    ({"memory": "from knowtune.files import atomic_write_json", "files": ""}, "memory.py imports no knowtune module but knowtune.errors"),
    ({"settings": "from knowtune.data import load_qa", "data__": ""}, "helpers settings/models/provenance may import only"),
    ({"models": "from knowtune.settings import validated", "settings": ""}, "helpers settings/models/provenance may import only"),
    ({"report__tables": "from knowtune.studies.stats import Finding", "studies__stats": ""},
     "only knowtune/studies/ and knowtune/cli/ import knowtune.studies"),
    ({"train__fit": "import importlib\nimportlib.import_module('knowtune.studies.registry')", "studies__registry": ""},
     "only knowtune/studies/ and knowtune/cli/ import knowtune.studies"),
    ({"studies__a__": "", "studies__a__study": "from knowtune.studies.b.findings import x", "studies__b__findings": ""},
     "a study package imports only"),
    ({"studies__a__": "", "studies__a__study": "from knowtune.studies import b", "studies__b__": ""}, "a study package imports only"),
    ({"studies__a__": "", "studies__a__study": "from ...studies.b import findings", "studies__b__findings": ""},
     "a study package imports only"),
    ({"studies__common": "from knowtune.studies.a.config import C", "studies__a__config": ""},
     "the studies' shared modules import no study package"),
    ({"gadgets": ""}, "knowtune.gadgets is in no layer"),
])
def test_each_rule_catches_its_violation(modules, rule):
    found = violations(_tree(**modules))
    assert len(found) >= 1 and any(rule in v for v in found), found


def test_what_the_rules_allow():
    ok = _tree(
        errors="", files="from knowtune.errors import DataError", settings="from knowtune.errors import ConfigError",
        memory="from knowtune.errors import KnowtuneError", data__formats="from knowtune.files import stable_int\nfrom . import records",
        data__records="", probe__config="from knowtune.settings import load_preset\nfrom knowtune.engine import SamplingParams",
        engine__="", studies__registry="import knowtune.studies as root", studies__stats="", studies__common="",
        studies__a__="from knowtune.studies.registry import register\nfrom knowtune.studies.a.config import C",
        studies__a__config="from knowtune.probe.config import ProbeConfig",
        studies__a__study="from knowtune.studies import common, stats\nfrom .config import C\nfrom knowtune.studies.a import config",
        cli__="from knowtune.cli import study\nfrom knowtune.cli.app import main", cli__app="def main():\n    from knowtune import files\n",
        cli__study="from knowtune.cli.app import study_app\nfrom knowtune.studies.registry import discover",
        __main__="from knowtune.cli import main",
    )
    assert violations(ok) == []
