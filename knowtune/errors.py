"""knowtune's own error type: a one-line message naming what is wrong and where."""


class KnowtuneError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits non-zero."""


class DataError(KnowtuneError):
    """Bad input data: names the file, record and field at fault."""


class ModelError(KnowtuneError):
    """A model spec that cannot be loaded."""


class ConfigError(KnowtuneError):
    """A bad setting: unknown preset, relation, key or value."""


def shown(value: object) -> str:
    """Text of a value for a one-line message: as is when printable, else its repr (escaped, quoted)."""
    text = str(value)
    return text if text.isprintable() else repr(text)


def where(path: object, record: object | None = None, field: str | None = None) -> str:
    """Format a location as 'FILE, record R, field F' for error messages."""
    out = str(path)
    if record is not None:
        out += f", record {shown(record)}"
    if field is not None:
        out += f", field '{field}'" if field.isprintable() else f", field {field!r}"
    return out
