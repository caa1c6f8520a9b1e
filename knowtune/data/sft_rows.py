"""A user's SFT set as question → short-answer rows: JSONL / JSON / Parquet files, a `datasets` directory
or a hub id, in the shapes people use — `{question, answer | answers}`, `{prompt, completion}`, Alpaca
`{instruction, input, output}`, `{messages: [...]}` — or named fields. A row that is not one question with
one short factual answer is kept with the reason it cannot be audited, never dropped silently."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from knowtune.data.validate import check_unique_ids
from knowtune.errors import DataError
from knowtune.files import iter_jsonl, read_json

SHAPES = ("messages", "alpaca", "prompt-completion", "qa", "fields")
MAX_ANSWER_WORDS = 8  # EntityQuestions-style answers are a name or a few words


@dataclass(frozen=True)
class SFTRow:
    """One row of the user's set: the question and answer it teaches, or `reason` it cannot be audited."""

    index: int  # position in the set (0-based)
    id: str
    shape: str  # one of SHAPES, or "unknown"
    question: str | None = None
    answers: tuple[str, ...] = ()  # the trained answer first, then any aliases
    relation: str | None = None
    system: str | None = None  # a `messages` row's system turn, kept for chat prompts
    reason: str | None = None  # why the row is not auditable; None when it is
    answer_key: str | None = None  # the field holding the answer ("messages": the assistant turn)
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def auditable(self) -> bool:
        """A single question with a single short answer."""
        return self.reason is None


@dataclass
class SFTRowSet:
    """The rows of one SFT set and where they came from."""

    source: str
    rows: list[SFTRow]

    def auditable(self) -> list[SFTRow]:
        """The rows the probe can judge."""
        return [r for r in self.rows if r.auditable]

    def not_auditable_counts(self) -> dict[str, int]:
        """How many rows are not auditable, per kind of reason (the reason up to its first colon)."""
        return dict(Counter(r.reason.split(":")[0] for r in self.rows if r.reason).most_common())


def read_raw_rows(spec: str | Path) -> tuple[str, list[dict]]:
    """(source, rows as dicts) from a .jsonl / .json / .parquet file, a `datasets.save_to_disk` directory
    (its `train` split, or its only one) or a hub dataset id (`owner/name`, split train)."""
    path = Path(spec)
    if path.suffix == ".jsonl":
        return str(path), [row for _, row in iter_jsonl(path)]
    if path.suffix == ".json":
        obj = read_json(path)
        if not isinstance(obj, list) or not all(isinstance(r, dict) for r in obj):
            raise DataError(f"{path}: expected a JSON list of objects, got {type(obj).__name__}")
        return str(path), obj
    if path.suffix == ".parquet":
        if not path.is_file():
            raise DataError(f"{path}: no such file")
        import pyarrow.parquet as pq

        try:
            return str(path), pq.read_table(path).to_pylist()
        except Exception as e:  # pyarrow raises several types for a file that is not Parquet
            raise DataError(f"{path}: not a readable Parquet file ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    if path.is_dir():
        return str(path), _from_disk(path)
    if path.exists():
        raise DataError(f"{path}: cannot tell the format; use .jsonl, .json, .parquet or a datasets directory")
    if str(spec).count("/") == 1 and not str(spec).startswith((".", "/")):
        return str(spec), _from_hub(str(spec))
    raise DataError(f"{spec}: no such file or directory")


def _from_disk(path: Path) -> list[dict]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except FileNotFoundError as e:
        raise DataError(f"{path}: not a datasets directory ({str(e).splitlines()[0]})") from None
    if isinstance(ds, datasets.DatasetDict):
        if "train" not in ds and len(ds) != 1:
            raise DataError(f"{path}: a DatasetDict without a 'train' split (has: {', '.join(ds)})")
        ds = ds["train"] if "train" in ds else next(iter(ds.values()))
    return ds.to_list()


def _from_hub(name: str) -> list[dict]:
    import datasets

    try:
        return datasets.load_dataset(name, split="train").to_list()
    except Exception as e:  # offline, no such dataset, no train split: datasets raises many types
        raise DataError(f"{name}: cannot load the hub dataset ({type(e).__name__}: {str(e).splitlines()[0]})") from None


def _text(row: dict, key: str) -> str | None:
    value = row.get(key)
    return value.strip() if isinstance(value, str) and value.strip() else None


def _answers(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return ()
    return tuple(a.strip() for a in value if isinstance(a, str) and a.strip())


def _messages(row: dict) -> tuple[str | None, str | None, str | None, str | None]:
    """(system, question, answer, reason) of a `messages` row: one user turn then one assistant turn."""
    msgs = row["messages"]
    if not isinstance(msgs, list) or not all(isinstance(m, dict) for m in msgs):
        return None, None, None, "messages: not a list of {role, content} objects"
    roles = [m.get("role") for m in msgs]
    system = _text(msgs[0], "content") if roles and roles[0] == "system" else None
    turns = msgs[1:] if roles and roles[0] == "system" else msgs
    users, assistants = roles.count("user"), roles.count("assistant")
    if users != 1 or assistants != 1 or len(turns) != 2:
        return None, None, None, f"multi-turn: {users} user and {assistants} assistant turns (audits need one of each)"
    if [m.get("role") for m in turns] != ["user", "assistant"]:
        return None, None, None, "multi-turn: the assistant turn does not answer the user turn"
    return system, _text(turns[0], "content"), _text(turns[1], "content"), None


ANSWER_KEYS = {"messages": "messages", "alpaca": "output", "prompt-completion": "completion"}


def _detect(row: dict, question_field: str | None, answer_field: str | None) -> tuple[str, str | None, tuple[str, ...], str | None, str | None]:
    """(shape, question, answers, system, reason) of one row."""
    if question_field or answer_field:
        q, a = question_field or "question", answer_field or "answer"
        if q not in row or a not in row:
            return "unknown", None, (), None, f"no question/answer fields: lacks {q if q not in row else a!r}"
        return "fields", _text(row, q), _answers(row[a]), None, None
    if "messages" in row:
        system, question, answer, reason = _messages(row)
        return "messages", question, (answer,) if answer else (), system, reason
    if "instruction" in row and "output" in row:
        extra = _text(row, "input")
        instruction = _text(row, "instruction")
        return "alpaca", f"{instruction} {extra}" if instruction and extra else instruction, _answers(row["output"]), None, None
    if "prompt" in row and "completion" in row:
        if not isinstance(row["prompt"], str):
            return "prompt-completion", None, (), None, "prompt-completion: a conversational prompt (use the messages shape)"
        return "prompt-completion", _text(row, "prompt"), _answers(row["completion"]), None, None
    if "question" in row and ("answer" in row or "answers" in row):
        value = row.get("answer") if row.get("answer") is not None else row.get("answers")
        return "qa", _text(row, "question"), _answers(value), None, None
    return "unknown", None, (), None, "no question/answer fields"


def _judge(question: str | None, answers: tuple[str, ...], max_words: int) -> str | None:
    """Why a question/answer pair is not auditable, or None."""
    if not question:
        return "empty question"
    if not answers:
        return "empty answer"
    if "\n" in answers[0]:
        return "multi-line answer: the probe's answers end at the first newline"
    words = len(answers[0].split())
    if words > max_words:
        return f"long answer: {words} words (more than {max_words})"
    return None


def read_sft_rows(spec: str | Path, question_field: str | None = None, answer_field: str | None = None,
                  relation_field: str | None = "relation", max_answer_words: int = MAX_ANSWER_WORDS) -> SFTRowSet:
    """Every row of an SFT set with its question and answer, or the reason it is not auditable.
    A set where no row has a usable shape is an error that names the fields the rows have."""
    source, raw = read_raw_rows(spec)
    if not raw:
        raise DataError(f"{source}: no records")
    rows = []
    for i, row in enumerate(raw):
        shape, question, answers, system, reason = _detect(row, question_field, answer_field)
        reason = reason or _judge(question, answers, max_answer_words)
        row_id = row.get("id", i)
        if not isinstance(row_id, (str, int)) or isinstance(row_id, bool):
            raise DataError(f"{source}, record {i}, field 'id': expected a string")
        relation = row.get(relation_field) if relation_field else None
        relation = relation.strip() if isinstance(relation, str) and relation.strip() else None
        key = (answer_field or "answer") if shape == "fields" else ANSWER_KEYS.get(shape)
        if shape == "qa":
            key = "answer" if row.get("answer") is not None else "answers"
        rows.append(SFTRow(i, str(row_id), shape, question, answers, relation, system, reason, key, row))
    if all(r.shape == "unknown" for r in rows):
        seen = sorted({k for row in raw for k in row})
        shown = ", ".join(seen[:12]) + (", …" if len(seen) > 12 else "")
        wanted = (f"'{question_field or 'question'}' and '{answer_field or 'answer'}'" if question_field or answer_field
                  else "question/answer(s), prompt/completion, instruction/input/output or messages")
        raise DataError(f"{source}: no row has {wanted} fields (the rows have: {shown or 'no fields'}); "
                        "name them with --question-field and --answer-field")
    check_unique_ids([r.id for r in rows], source)
    return SFTRowSet(source, rows)
