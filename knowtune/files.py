"""Atomic outputs, validated JSON/JSONL reading, fingerprints and run manifests."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import platform
import re
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from knowtune.errors import ConfigError, DataError, where


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write text to `path` via a temp file and rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:  # name the target, not the random temp file
        raise OSError(e.errno, f"cannot write ({e.strerror})", str(path)) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise OSError(e.errno, f"cannot write ({e.strerror})", str(path)) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_output_dir(path: str | Path) -> None:
    """Refuse, before any work, an output directory that cannot be one: an existing file, or a parent
    that is a file or may not be written. (The OS errors are shown as `PATH: WHY`, exit 1.)"""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(errno.EEXIST, "exists and is not a directory", str(path))
    parent = next(p for p in (path, *path.parents) if p.exists() or p == Path(p.anchor or "."))
    if not parent.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "Not a directory", str(parent))
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, "Permission denied", str(parent))


@contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Fill the yielded temp folder; on success it replaces `target` whole, so a reader sees the old
    directory or the complete new one (a failure removes the temp folder and keeps the old one)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        yield tmp
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_stale_temp(folder: str | Path) -> None:
    """Delete the temp files and folders (`.NAME.*.tmp`) that a killed atomic write left in `folder`.
    Call it only where one process owns the folder: another writer's temp file would vanish too."""
    for tmp in Path(folder).glob(".*.tmp"):
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write `obj` as indented JSON, atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


def atomic_write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    """Write rows as JSON lines, atomically."""
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_json(path: str | Path) -> Any:
    """Read a JSON file, raising DataError that names the file (and line) on failure."""
    path = Path(path)
    text = read_text(path)
    try:
        obj = _loads(text, path)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    if _SURROGATE_ESCAPE.search(text):  # a list's items are records, as the loaders of JSON lists number them
        for record, item in enumerate(obj) if isinstance(obj, list) else [(None, obj)]:
            _check_unicode(item, path, record)
    return obj


# An escaped UTF-16 surrogate (\ud800-\udfff): JSON allows a lone one, but UTF-8 text cannot hold it.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _loads(text: str, at: object) -> Any:
    """json.loads, with DataError naming `at` for JSON nested too deeply or an integer with too many digits."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise DataError(f"{at}: JSON nested too deeply") from None
    except ValueError as e:  # an integer beyond sys.get_int_max_str_digits() digits
        raise DataError(f"{at}: unreadable JSON ({str(e).split(':')[0]})") from None


def _check_unicode(obj: Any, path: Path, record: object) -> None:
    """Raise DataError naming file, record and field where a string or key in `obj` holds a lone surrogate."""
    stack: list[tuple[str | None, Any]] = [(None, obj)]
    while stack:
        field, node = stack.pop()
        if isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                raise DataError(f"{where(path, record, field)}: holds a lone UTF-16 surrogate escape "
                                "(\\ud800-\\udfff), which is not text") from None
        elif isinstance(node, dict):
            for key, value in reversed(node.items()):
                name = f"{field}.{key}" if field else key
                stack += [(name, value), (name, key)]
        elif isinstance(node, list):
            stack += [(f"{field or ''}[{i}]", value) for i, value in reversed(list(enumerate(node)))]


def why_missing(path: str | Path, what: str = "file") -> str:
    """Why an existing-looking `path` cannot be opened: a symbolic link loop, a link to nothing, or no such `what`."""
    try:
        os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "a symbolic link loop (the link leads back to itself)"
        if os.path.islink(path):
            return f"a symbolic link to a missing target ({os.readlink(path)})"
    return f"no such {what}"


def read_text(path: str | Path) -> str:
    """Read a UTF-8 text file, raising DataError for a missing, unreadable or mis-encoded file."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: {why_missing(path)}")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a file")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for each non-blank line; malformed lines raise DataError."""
    path = Path(path)
    # "\n" only: str.splitlines() would also split at U+2028, U+0085 ..., which JSON strings hold unescaped.
    for lineno, line in enumerate(read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        at = where(path, f"on line {lineno}")
        try:
            obj = _loads(line, at)
        except json.JSONDecodeError as e:
            raise DataError(f"{at}: malformed JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{at}: expected a JSON object, got {type(obj).__name__}")
        if _SURROGATE_ESCAPE.search(line):
            _check_unicode(obj, path, f"on line {lineno}")
        yield lineno, obj


class JsonlAppender:
    """Append-only JSONL output that survives a kill: each line is flushed and fsynced, and a
    torn last line (from a kill mid-write) is cut off when the file is reopened."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair()
        self._f = open(self.path, "a", encoding="utf-8")

    def _repair(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            with open(self.path, "r+b") as f:
                f.truncate(cut)

    def write_many(self, rows: Iterable[dict]) -> None:
        """Append rows and make them durable before returning."""
        self._f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        """Close the file."""
        self._f.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _brief(value: Any, limit: int = 160) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def first_difference(old: Any, new: Any, key: str) -> tuple[str, Any, Any]:
    """The dotted path below `key` where two JSON values first differ, and the two values there."""
    if isinstance(old, dict) and isinstance(new, dict):
        for k in sorted(set(old) | set(new), key=str):
            if old.get(k) != new.get(k):
                return first_difference(old.get(k), new.get(k), f"{key}.{k}")
    return key, old, new


def check_or_write_manifest(path: str | Path, manifest: dict, what: str, compare: Iterable[str] | None = None,
                            write: bool = True) -> None:
    """The resume guard of every run directory, called before anything there is reused: write
    `manifest` to `path` (unless `write` is False: the caller writes it last, as its completion mark),
    or, when an earlier run wrote one there, refuse unless the two agree on every key of `compare`
    (default: all), naming the first key that differs with both values. So a run never mixes its work
    with another's, and a finished run is never returned for changed settings or inputs."""
    path = Path(path)
    keys = list(manifest if compare is None else compare)
    if not path.exists():
        if write:
            atomic_write_json(path, manifest)
        return
    old = read_json(path)
    if not isinstance(old, dict) or not any(k in old for k in keys):  # e.g. a model's config.json, not a run's
        raise ConfigError(f"{path}: not a knowtune manifest of {what} (a file of something else, e.g. a model's "
                          "config.json); use another output directory")
    for key in keys:
        if old.get(key) != manifest[key]:
            where_, was, now = first_difference(old.get(key), manifest[key], key)
            raise ConfigError(f"{path}: this directory holds {what} with a different {where_} "
                              f"({_brief(was)} vs {_brief(now)}); use another output directory or delete it")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def fingerprint(obj: Any) -> str:
    """Short sha256 of an object's canonical JSON: equal inputs give equal fingerprints."""
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def stable_int(*parts: object) -> int:
    """A 63-bit integer from the parts' text: stable across runs and machines (unlike hash())."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def versions() -> dict[str, str]:
    """Versions of Python, the platform and the libraries a result depends on."""
    import importlib.metadata as md

    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for pkg in ("knowtune", "torch", "transformers", "peft", "accelerate", "gguf", "safetensors", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out
