"""Curated copies of a user's audited SFT set, in the user's own shape, in TRL's conversational
`messages` shape, or as a `datasets` dataset on disk:

* `filtered`: D_Known, the set without its Unknown rows;
* `idk`: D_IDK, Unknown rows answered with an "I don't know" string;
* `self-aligned`: rows the model answers wrong relabelled with the model's own greedy answer.

Rows that were not auditable are kept as they are (the audit says nothing about them); in the
`messages` and `datasets` formats a row with no question/answer to convert is left out and counted.
"""

from __future__ import annotations

from pathlib import Path

from knowtune.curate.new_knowledge_sets import filter_known, relabel_idk
from knowtune.data.formats import ABSTENTION
from knowtune.data.sft_rows import SFTRow
from knowtune.errors import ConfigError
from knowtune.files import atomic_dir, atomic_write_jsonl
from knowtune.probe.records import ProbeRecord

EXPORTS = ("filtered", "idk", "self-aligned")
FORMATS = ("jsonl", "messages", "datasets")


def curated_labels(kind: str, records: list[ProbeRecord], idk: str = ABSTENTION) -> dict[str, str | None]:
    """id → the label an audited row trains on in export `kind` (None: its own answer); ids left out are dropped."""
    if kind == "filtered":
        return {r.id: None for r in filter_known(records)}
    if kind == "idk":
        return {r.id: r.label for r in relabel_idk(records, idk)}
    if kind == "self-aligned":
        # the model's answer replaces a wrong one; an empty answer (nothing generated) has nothing to align to
        return {r.id: r.extra["greedy_answer"] if not r.extra["answer_correct"] and r.extra["greedy_answer"] else None
                for r in records}
    raise ConfigError(f"unknown export {kind!r}; choose one of {', '.join(EXPORTS)} or all")


def _replaced(old: object, label: str) -> object:
    """`label` in the form of the value it replaces: a list stays a list, leading whitespace stays."""
    if isinstance(old, list):
        return [label]
    if isinstance(old, str):
        return old[: len(old) - len(old.lstrip())] + label
    return label


def own_shape(row: SFTRow, label: str | None) -> dict:
    """The row as the user wrote it, with its answer replaced by `label` when one is given."""
    out = dict(row.raw)
    if label is None:
        return out
    if row.shape == "messages":
        out["messages"] = [*row.raw["messages"][:-1], {**row.raw["messages"][-1], "content": label}]
    else:
        out[row.answer_key] = _replaced(row.raw.get(row.answer_key), label)
    return out


def messages_shape(row: SFTRow, label: str | None) -> dict | None:
    """TRL's conversational shape {messages: [system?, user, assistant]}; None for a row with nothing to convert."""
    if row.shape == "messages" and isinstance(row.raw.get("messages"), list):
        return {"messages": own_shape(row, label)["messages"]}
    if not row.question or not row.answers:
        return None
    system = [{"role": "system", "content": row.system}] if row.system else []
    return {"messages": [*system, {"role": "user", "content": row.question},
                         {"role": "assistant", "content": label if label is not None else row.answers[0]}]}


def export_rows(kind: str, fmt: str, rows: list[SFTRow], records: list[ProbeRecord], idk: str = ABSTENTION) -> tuple[list[dict], dict]:
    """The rows of one export in one format, and counts of what it did."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    labels = curated_labels(kind, records, idk)
    audited = {r.id for r in records}
    out, counts = [], {"rows": 0, "relabelled": 0, "dropped_unknown": 0, "kept_not_audited": 0, "left_out_unconvertible": 0}
    for row in rows:
        if row.id in audited and row.id not in labels:
            counts["dropped_unknown"] += 1
            continue
        label = labels.get(row.id)
        counts["relabelled"] += label is not None
        counts["kept_not_audited"] += row.id not in audited
        shaped = own_shape(row, label) if fmt == "jsonl" else messages_shape(row, label)
        if shaped is None:
            counts["left_out_unconvertible"] += 1
            continue
        out.append(shaped)
    counts["rows"] = len(out)
    return out, counts


def write_export(kind: str, fmt: str, rows: list[SFTRow], records: list[ProbeRecord], out_dir: str | Path,
                 idk: str = ABSTENTION) -> dict:
    """Write `<out_dir>/export_<kind>.jsonl` (own shape), `.messages.jsonl` or the `export_<kind>/`
    datasets directory, atomically; returns what was written."""
    shaped, counts = export_rows(kind, fmt, rows, records, idk)
    out_dir = Path(out_dir)
    stem = f"export_{kind.replace('-', '_')}"
    if fmt == "datasets":
        import datasets

        path = out_dir / stem
        with atomic_dir(path) as tmp:
            datasets.Dataset.from_list(shaped).save_to_disk(str(tmp))
    else:
        path = out_dir / (f"{stem}.jsonl" if fmt == "jsonl" else f"{stem}.messages.jsonl")
        atomic_write_jsonl(path, shaped)
    return {"export": kind, "format": fmt, "path": str(path), **counts, **({"idk": idk} if kind == "idk" else {})}
