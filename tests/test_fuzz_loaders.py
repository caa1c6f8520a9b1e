"""Fuzzing every loader of user files (hypothesis, derandomized): random bytes, random JSON and
near-valid records (a valid record with one or two fields dropped, nulled, retyped or replaced) either
load into something the next stage can use, or raise knowtune's own error with a one-line message that
names the file — never any other exception. Then one plain test per bug the fuzzing found."""

from __future__ import annotations

import copy
import csv
import io
import json
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from knowtune.data import load_qa
from knowtune.data.edit_records import (
    read_edit_records,
    resolve_edits,
    write_edit_records,
)
from knowtune.data.edits import EditDataset, EditExample, detect_edits, load_edits
from knowtune.data.multiple_choice import (
    CONVERTED_HEADER,
    load_mc,
    load_mmlu,
    read_mmlu_csv,
)
from knowtune.data.records import QADataset, chance_rate
from knowtune.errors import DataError, KnowtuneError
from knowtune.files import atomic_write_jsonl, iter_jsonl, read_json, read_text
from knowtune.matching import is_correct
from knowtune.probe.slick import load_records, popularity_bins
from knowtune.studies.registry import get_study
from knowtune.train.examples import answer_label

FUZZ = settings(
    deadline=None, derandomize=True, database=None, max_examples=150,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# ---------------------------------------------------------------- strategies

ODD_TEXT = ["", " ", "\t", "\x00", "a\nb", "\r", "\u2028", "\x85", "\ud800", "\udc00", "💥", "[X]", "{}",
            "nq question: ", "HighlyKnown", "A", "0", "test"]
TEXT = st.text(max_size=10) | st.sampled_from(ODD_TEXT)
NUMBERS = st.integers() | st.floats() | st.sampled_from([2**63, -(2**64), 10**400, -(10**400), 1e308, -0.0])
JSON = st.recursive(
    st.none() | st.booleans() | NUMBERS | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=10,
)
# Literals json.dumps never writes (too deep, too many digits, non-finite, lone surrogate escapes),
# put in place of MARK after dumping.
MARK = "\x00raw\x00"
RAW = ["[" * 5000 + "]" * 5000, "9" * 5000, "1e999", "-1e999", "NaN", "Infinity", '"\\ud800"', '"x\\uDFFF"',
       '"\\u2028"', '"\\ud83d\\ude00"']


def dump(obj: Any, ascii_only: bool, raw: str) -> bytes:
    """JSON bytes of obj with `raw` where MARK stands; an unescaped lone surrogate becomes invalid UTF-8."""
    text = json.dumps(obj, ensure_ascii=ascii_only).replace(json.dumps(MARK), raw)
    return text.encode("utf-8", "surrogatepass")


def _slots(node: Any) -> list[tuple[Any, Any]]:
    """Every (container, key) pair below node, depth first."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    out = []
    for key, value in list(items):
        out.append((node, key))
        out.extend(_slots(value))
    return out


@st.composite
def near_valid(draw: st.DrawFn, valid: dict) -> dict:
    """A valid record with one or two fields (at any depth) dropped, nulled, retyped or replaced."""
    rec = copy.deepcopy(valid)
    for _ in range(draw(st.integers(1, 2))):
        node, key = draw(st.sampled_from(_slots(rec)))
        op = draw(st.sampled_from(["drop", "null", "wrap", "first", "text", "number", "empty", "raw", "json", "add"]))
        value = node.get(key) if isinstance(node, dict) else node[key]
        if op == "drop":
            del node[key]
        elif op == "wrap":
            node[key] = [value]
        elif op == "first":  # a list or object becomes its first item, a scalar its text
            items = list(value.values()) if isinstance(value, dict) else value if isinstance(value, list) else [str(value)]
            node[key] = items[0] if items else None
        elif op == "add":
            rec[draw(TEXT)] = draw(JSON)
        else:
            node[key] = {
                "null": lambda: None, "text": lambda: draw(TEXT), "number": lambda: draw(NUMBERS), "raw": lambda: MARK,
                "json": lambda: draw(JSON), "empty": lambda: copy.deepcopy(draw(st.sampled_from(["", " ", [], {}, [[]], [""]]))),
            }[op]()
    return rec


@st.composite
def records(draw: st.DrawFn, make: Callable[[int], dict]) -> list:
    """0-4 records, a third of them near-valid (valid ones numbered so their ids are unique)."""
    return [draw(near_valid(make(i))) if draw(st.integers(0, 2)) == 0 else make(i) for i in range(draw(st.integers(0, 4)))]


def _corrupt(draw: st.DrawFn, data: bytes) -> bytes:
    """Usually data as is; sometimes with one byte replaced by 0-2 random bytes."""
    if not data or draw(st.integers(0, 3)):
        return data
    i = draw(st.integers(0, len(data) - 1))
    return data[:i] + draw(st.binary(max_size=2)) + data[i + 1 :]


@st.composite
def json_file(draw: st.DrawFn, make: Callable[[int], dict]) -> bytes:
    """Random bytes, a random JSON value, or a JSON list of (near-)valid records."""
    kind = draw(st.sampled_from(["bytes", "json", "records", "records", "records"]))
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    obj = draw(JSON) if kind == "json" else draw(records(make))
    return _corrupt(draw, dump(obj, draw(st.booleans()), draw(st.sampled_from(RAW))))


@st.composite
def jsonl_file(draw: st.DrawFn, make: Callable[[int], dict]) -> bytes:
    """Random bytes, or JSON lines of (near-)valid records mixed with random values, bytes and blank lines."""
    if draw(st.integers(0, 5)) == 0:
        return draw(st.binary(max_size=64))
    ascii_only, raw = draw(st.booleans()), draw(st.sampled_from(RAW))
    lines = [dump(r, ascii_only, raw) for r in draw(records(make))]
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):
        junk = draw(st.sampled_from(["json", "bytes", "blank"]))
        line = dump(draw(JSON), ascii_only, raw) if junk == "json" else draw(st.binary(max_size=16)) if junk == "bytes" else b""
        lines.insert(draw(st.integers(0, len(lines))), line)
    return _corrupt(draw, draw(st.sampled_from([b"\n", b"\r\n"])).join(lines) + draw(st.sampled_from([b"", b"\n"])))


CELLS = st.text(max_size=8) | st.sampled_from(
    ["", " ", ",", '"', '""', "a,b", "x\ny", "\r", "\x00", "\ufeff", "A", " B ", "d", "E", "0", "3", "4", "-1", "\ud800"]
)


@st.composite
def csv_file(draw: st.DrawFn) -> bytes:
    """Random bytes, or MMLU-like CSV rows (valid, one cell changed, or random) with or without a header."""
    if draw(st.integers(0, 4)) == 0:
        return draw(st.binary(max_size=64))
    header = draw(st.sampled_from([None, None, CONVERTED_HEADER, ["question", "A", "B"]]))
    answers = ["0", "1", "2", "3"] if header == CONVERTED_HEADER else ["A", "B", "C", "D"]
    rows: list[list[str]] = [] if header is None else [list(header)]
    for i in range(draw(st.integers(0, 4))):
        row = [f"What is {i} + 2?", "1", "2", str(i + 2), "x", draw(st.sampled_from(answers))]
        change = draw(st.sampled_from(["none", "none", "none", "cell", "drop", "add", "random"]))
        if change == "random":
            row = draw(st.lists(CELLS, max_size=8))
        elif change == "drop":
            del row[draw(st.integers(0, 5))]
        elif change == "add":
            row.insert(draw(st.integers(0, 6)), draw(CELLS))
        elif change == "cell":  # e.g. an answer outside A-D, an empty question, a quote or newline in a cell
            row[draw(st.integers(0, 5))] = draw(CELLS)
        rows.append(row)
    quoting = draw(st.sampled_from(["raw", csv.QUOTE_MINIMAL, csv.QUOTE_ALL]))
    if quoting == "raw":  # no quoting at all: commas, quotes and newlines in cells split and glue rows
        text = "\n".join(",".join(r) for r in rows)
    else:
        buf = io.StringIO()
        csv.writer(buf, quoting=quoting).writerows(rows)
        text = buf.getvalue()
    return _corrupt(draw, text.encode("utf-8", "surrogatepass"))


# ---------------------------------------------------------------- valid records of each format


def qa_record(i: int) -> dict:
    """A valid generic QA JSONL record."""
    return {"id": f"q{i}", "question": f"What is the capital of Peru {i}?", "answers": ["Lima", "Lima city"],
            "relation": "P36", "subject": "Peru", "popularity": 12.5, "split": ["train", "exemplar", "test"][i % 3]}


def eq_record(i: int) -> dict:
    """A valid EntityQuestions record."""
    return {"question": f"Which country is Lyon {i} located in?", "answers": ["France"]}


def cf_record(i: int) -> dict:
    """A valid CounterFact record, EasyEdit split."""
    return {"case_id": i, "prompt": "BBC One, by", "target_new": "Sega", "subject": "BBC One", "ground_truth": "BBC",
            "rephrase_prompt": "BBC One is owned by", "locality_prompt": "BBC Radio, by", "locality_ground_truth": "BBC"}


def rome_record(i: int) -> dict:
    """A valid CounterFact record, ROME schema."""
    return {"case_id": i, "requested_rewrite": {"prompt": "The mother tongue of {} is", "relation_id": "P103",
            "target_new": {"str": "English", "id": "Q1860"}, "target_true": {"str": "French", "id": "Q150"},
            "subject": "Danielle Darrieux"}, "paraphrase_prompts": ["Danielle Darrieux, a native"],
            "neighborhood_prompts": ["The mother tongue of Léon Blum is"]}


def zsre_record(i: int) -> dict:
    """A valid zsRE record, MEND format."""
    return {"subject": "Watts Humphrey", "src": "What university did Watts Humphrey attend?", "alt": "University of Michigan",
            "answers": ["Illinois Institute of Technology"], "rephrase": "What university did Watts Humphrey take part in?",
            "loc": "nq question: who played desmond doss father in hacksaw ridge", "loc_ans": "Hugo Weaving"}


def edit_record(i: int) -> dict:
    """A valid line of knowtune's own edit file."""
    return {"id": f"cf/{i}", "subject": "BBC One", "prompt": "BBC One, by", "target_new": "Sega", "ground_truth": ["BBC"],
            "rephrase_prompts": ["BBC One is owned by"], "locality_prompts": ["BBC Radio, by"],
            "locality_answers": ["BBC"], "relation": "P127", "split": "test", "prompt_style": "completion"}


def probe_record(i: int) -> dict:
    """A valid SliCK probe record (as `probe.jsonl` or a curated set holds)."""
    return {"id": f"P17/{i}", "relation": "P17", "subject": "Lyon", "question": "Which country is Lyon located in?",
            "answers": ["France"], "popularity": 3.0, "split": "train", "greedy": ["France"], "greedy_correct": [True],
            "sample_correct": [2], "samples": [{"France": 2}], "p_greedy": 1.0, "p_sample": 0.5,
            "category": ["HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown"][i % 4], "label": "France"}


EDIT_FORMATS = {"counterfact": cf_record, "counterfact-rome": rome_record, "zsre": zsre_record}

# ---------------------------------------------------------------- the property


def outcome(load: Callable[[], Any], where: Path | str) -> Any:
    """The loader's result, or None when it raised a KnowtuneError, whose message must be one printable
    line naming `where`. Any other exception propagates and fails the test."""
    try:
        result = load()
    except KnowtuneError as e:
        message = str(e)
        assert "\n" not in message and "\r" not in message, message
        message.encode("utf-8")  # the CLI can print it
        assert str(where) in message, message
        event("raises KnowtuneError")
        return None
    event("loads")
    return result


def _fresh(tmp_path: Path) -> Path:
    """A new empty directory under tmp_path (hypothesis runs many examples in one test)."""
    return Path(tempfile.mkdtemp(dir=tmp_path))


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    """data written to a new file `name` in a fresh directory."""
    path = _fresh(tmp_path) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def usable_qa(ds: QADataset) -> None:
    """What the probe does with a loaded QA dataset: fingerprint it and write its examples as strict JSON."""
    ds.fingerprint()
    json.dumps([e.to_dict() for e in ds.examples], ensure_ascii=False, allow_nan=False).encode("utf-8")
    chance_rate(ds.examples)
    popularity_bins(ds.examples)


def usable_edits(ds: EditDataset, tmp_path: Path) -> None:
    """What the F-Learning study does with loaded edits: fingerprint them, write edits.jsonl and read it back."""
    ds.fingerprint()
    path = _fresh(tmp_path) / "edits.jsonl"
    write_edit_records(path, ds.examples)
    assert read_edit_records(path).examples == ds.examples


# ---------------------------------------------------------------- fuzz tests


@settings(FUZZ, max_examples=150)
@given(data=st.binary(max_size=64) | jsonl_file(qa_record) | json_file(eq_record))
def test_fuzz_file_readers(tmp_path, data):
    path = write(tmp_path, "any.json", data)
    outcome(lambda: read_text(path), path)
    outcome(lambda: read_json(path), path)
    outcome(lambda: list(iter_jsonl(path)), path)


@settings(FUZZ, max_examples=200)
@given(data=jsonl_file(qa_record), prefixed=st.booleans())
def test_fuzz_qa_jsonl(tmp_path, data, prefixed):
    path = write(tmp_path, "qa.jsonl", data)
    ds = outcome(lambda: load_qa(f"jsonl:{path}" if prefixed else str(path)), path)
    if ds is not None:
        usable_qa(ds)


TEMPLATES = st.none() | st.binary(max_size=32) | st.dictionaries(
    st.sampled_from(["P17", "P36", "P19"]), JSON | st.just("Which country is [X] located in?"), max_size=3
).map(lambda d: dump(d, True, ""))


@settings(FUZZ, max_examples=150)
@given(
    files=st.dictionaries(st.sampled_from(["P17.train.json", "P17.dev.json", "P36.test.json", "sub/P19.train.json"]),
                          json_file(eq_record), min_size=1, max_size=2),
    templates=TEMPLATES,
)
def test_fuzz_entityquestions_directory(tmp_path, files, templates):
    root = _fresh(tmp_path)
    for name, data in files.items():
        (root / name).parent.mkdir(exist_ok=True)
        (root / name).write_bytes(data)
    if templates is not None:
        (root / "relation_query_templates.json").write_bytes(templates)
    ds = outcome(lambda: load_qa(str(root)), root)
    if ds is not None:
        usable_qa(ds)


@settings(FUZZ, max_examples=200)
@given(
    fmt=st.sampled_from(sorted(EDIT_FORMATS)),
    name=st.sampled_from(["edits.json", "zsre_mend_eval.json", "counterfact-train.json"]),
    prefix=st.sampled_from([None, *sorted(EDIT_FORMATS)]),
    data=st.data(),
)
def test_fuzz_edit_files(tmp_path, fmt, name, prefix, data):
    path = write(tmp_path, name, data.draw(json_file(EDIT_FORMATS[fmt])))
    spec = f"{prefix}:{path}" if prefix else str(path)
    outcome(lambda: detect_edits(spec), path)
    ds = outcome(lambda: resolve_edits(spec), path)
    if ds is not None:
        usable_edits(ds, tmp_path)


@settings(FUZZ, max_examples=150)
@given(data=jsonl_file(edit_record))
def test_fuzz_edit_records(tmp_path, data):
    path = write(tmp_path, "edits.jsonl", data)
    ds = outcome(lambda: resolve_edits(str(path)), path)
    if ds is not None:
        usable_edits(ds, tmp_path)


@settings(FUZZ, max_examples=200)
@given(
    data=csv_file(),
    name=st.sampled_from(["abstract_algebra_dev.csv", "anatomy_test.csv", "my subject_val.csv", "notes.csv"]),
    layout=st.sampled_from(["auto", "auto", "auto", "original", "converted", "other"]),
)
def test_fuzz_mmlu_csv(tmp_path, data, name, layout):
    path = write(tmp_path, name, data)
    questions = outcome(lambda: read_mmlu_csv(path, layout), path)
    for q in questions or []:
        assert q.answer_letter in "ABCD" and len(q.options) == 4
        json.dumps(q.to_dict(), ensure_ascii=False).encode("utf-8")


@settings(FUZZ, max_examples=100)
@given(
    files=st.dictionaries(st.sampled_from(["anatomy_dev.csv", "anatomy_test.csv", "sub/anatomy_test.csv",
                                           "virology_val.csv", "notes.csv"]), csv_file(), min_size=1, max_size=3),
    one_file=st.booleans(),
)
def test_fuzz_mmlu_directory(tmp_path, files, one_file):
    root = _fresh(tmp_path)
    for name, data in files.items():
        (root / name).parent.mkdir(exist_ok=True)
        (root / name).write_bytes(data)
    target = root / min(files) if one_file else root
    ds = outcome(lambda: load_mc(f"mmlu:{target}"), target)
    if ds is not None:
        ds.fingerprint()
        ds.domains()
        assert load_mmlu(target).fingerprint() == ds.fingerprint()


@settings(FUZZ, max_examples=150)
@given(data=jsonl_file(probe_record))
def test_fuzz_probe_records(tmp_path, data):
    path = write(tmp_path, "probe.jsonl", data)
    rows = outcome(lambda: load_records(path), path)
    if rows:  # what curate, train and evaluate do with the records
        popularity_bins(rows)
        sorted({r.id for r in rows})
        Counter((r.relation, r.category) for r in rows)
        assert all(isinstance(answer_label(r.to_dict()), str) and is_correct(r.answers[0], r.answers) for r in rows)
        assert all(isinstance(r.question, str) for r in rows)


STUDIES = ("new-knowledge", "flearning", "self-align")
OVERRIDE_VALUES = st.integers(-2, 64).map(str) | st.text(max_size=10) | st.sampled_from(
    ["[", "{a: 1", "!!python/object/apply:os.getcwd []", "9" * 5000, "[" * 1000, "1e999", ".nan", "a\tb", "- a\n- b",
     "&a [*a]", "2020-01-01", "~", "{1: 2}", "[1, [2]]", "'", "@x", "%"]
)


@settings(FUZZ, max_examples=100)
@given(
    study=st.sampled_from(sorted(STUDIES)),
    overrides=st.dictionaries(
        st.sampled_from(["size", "seeds", "batch_size", "probe.k_shot", "probe.n_samples", "probe", "size.x", "model"]) | TEXT,
        OVERRIDE_VALUES, max_size=2,
    ),
)
def test_fuzz_study_config_overrides(study, overrides):
    outcome(lambda: get_study(study).load_config("quick", overrides), "")


# ---------------------------------------------------------------- the bugs the fuzzing found, one test each


def test_json_nested_too_deeply_is_a_data_error(tmp_path):
    (tmp_path / "P17.train.json").write_text("[" * 5000 + "]" * 5000)
    with pytest.raises(DataError, match=r"P17\.train\.json: JSON nested too deeply$"):
        load_qa(str(tmp_path))
    (tmp_path / "qa.jsonl").write_text('{"question": "Q?", "answers": ' + "[" * 5000 + "]" * 5000 + "}\n")
    with pytest.raises(DataError, match=r"qa\.jsonl, record on line 1: JSON nested too deeply$"):
        load_qa(str(tmp_path / "qa.jsonl"))


def test_integer_with_too_many_digits_is_a_data_error(tmp_path):
    path = tmp_path / "cf.json"
    path.write_text('[{"case_id": ' + "9" * 5000 + ', "prompt": "BBC One, by", "target_new": "Sega"}]')
    with pytest.raises(DataError, match=r"cf\.json: unreadable JSON \(Exceeds the limit \(4300 digits\)"):
        load_edits(str(path))


@pytest.mark.parametrize("popularity", ["1e999", "-1e999", "NaN", "1" + "0" * 400])
def test_popularity_must_be_a_finite_number(tmp_path, popularity):
    path = tmp_path / "qa.jsonl"
    path.write_text(f'{{"id": "q0", "question": "Q?", "answers": ["a"], "popularity": {popularity}}}\n')
    with pytest.raises(DataError, match=r"qa\.jsonl, record q0, field 'popularity': expected a finite number, got (-?inf|nan)$"):
        load_qa(str(path))


def test_lone_surrogate_escapes_name_record_and_field(tmp_path):
    # JSON may escape half a UTF-16 pair; it loaded, then fingerprints and atomic writes hit UnicodeEncodeError.
    (tmp_path / "qa.jsonl").write_text('{"question": "Q?", "answers": ["ok", "x\\ud800"]}\n')
    with pytest.raises(DataError, match=r"qa\.jsonl, record on line 1, field 'answers\[1\]': holds a lone UTF-16 surrogate"):
        load_qa(str(tmp_path / "qa.jsonl"))
    (tmp_path / "P17.train.json").write_text('[{"question": "A?", "answers": ["a"]}, {"question": "B\\uDC00?", "answers": ["b"]}]')
    with pytest.raises(DataError, match=r"P17\.train\.json, record 1, field 'question': holds a lone UTF-16 surrogate"):
        load_qa(str(tmp_path))
    (tmp_path / "rome.json").write_text(json.dumps([rome_record(0) | {"requested_rewrite": {"subject\ud800": "x"}}]))
    with pytest.raises(DataError, match=r"rome\.json, record 0, field 'requested_rewrite\.subject\\ud800': holds"):
        load_edits(str(tmp_path / "rome.json"))
    (tmp_path / "ok.jsonl").write_text('{"question": "Q \\ud83d\\ude00?", "answers": ["a"]}\n')  # a whole pair is fine
    assert load_qa(str(tmp_path / "ok.jsonl")).examples[0].question == "Q \U0001f600?"


@pytest.mark.parametrize("char", ["\u2028", "\u2029", "\x85"])
def test_jsonl_lines_split_only_at_newlines(tmp_path, char):
    # json.dumps(ensure_ascii=False) leaves these unescaped, and str.splitlines() split a record at them.
    edit = EditExample(id="cf/1", subject="BBC One", prompt=f"BBC{char}One, by", target_new="Sega", ground_truth=("BBC",),
                       rephrase_prompts=(), locality_prompts=(), locality_answers=())
    write_edit_records(tmp_path / "edits.jsonl", [edit])
    assert read_edit_records(tmp_path / "edits.jsonl").examples == [edit]
    atomic_write_jsonl(tmp_path / "rows.jsonl", [{"a": char}, {"b": 1}])
    assert list(iter_jsonl(tmp_path / "rows.jsonl")) == [(1, {"a": char}), (2, {"b": 1})]


def test_entityquestions_empty_file_is_a_data_error(tmp_path):
    (tmp_path / "P17.train.json").write_text("[]")
    with pytest.raises(DataError, match=r"P17\.train\.json: no records$"):
        load_qa(str(tmp_path))


def test_messages_stay_on_one_line(tmp_path):
    (tmp_path / "qa.jsonl").write_text('{"id": "a\\nb", "question": "", "answers": ["a"]}\n')
    with pytest.raises(DataError, match=r"qa\.jsonl, record 'a\\nb', field 'question': empty$"):
        load_qa(str(tmp_path / "qa.jsonl"))
    (tmp_path / "edits.json").write_text('[{"x\\ny": 1}]')
    with pytest.raises(DataError, match=r"edits\.json, record 0: cannot tell the edit format from its keys \('x\\ny'\)"):
        load_edits(str(tmp_path / "edits.json"))
    (tmp_path / "edits.jsonl").write_text(json.dumps(edit_record(0) | {"id": "a\nb", "prompt_style": "chat"}) + "\n")
    with pytest.raises(DataError, match=r"edits\.jsonl, record 'a\\nb': edit 'a\\nb': prompt_style 'chat'"):
        read_edit_records(tmp_path / "edits.jsonl")


@pytest.mark.parametrize("field, value, message", [
    ("id", ["P17/0"], "field 'id': expected a string, got list"),
    ("relation", None, "field 'relation': missing"),
    ("question", 7, "field 'question': expected a string, got int"),
    ("answers", [["France"]], "field 'answers': answer 0 is list, not a string"),
    ("popularity", "high", "field 'popularity': expected a number, got str"),
    ("label", 1, "field 'label': expected a string, got int"),
    ("category", "Known", "field 'category': unknown 'Known'"),
])
def test_probe_records_check_the_fields_later_stages_use(tmp_path, field, value, message):
    # They loaded, then curate / train / evaluate failed with TypeError (unhashable id, -popularity, ...).
    path = tmp_path / "probe.jsonl"
    path.write_text(json.dumps(probe_record(0)) + "\n" + json.dumps(probe_record(1) | {field: value}) + "\n")
    with pytest.raises(DataError, match=rf"probe\.jsonl, record on line 2, {message}$".replace("(", r"\(").replace(")", r"\)")):
        load_records(path)


def test_probe_records_read_a_bare_answer_as_a_list(tmp_path):
    # As the QA loaders read it; curation took answers[0], the first letter of a bare string.
    (tmp_path / "probe.jsonl").write_text(json.dumps(probe_record(0) | {"answers": "France"}) + "\n")
    record = load_records(tmp_path / "probe.jsonl")[0]
    assert record.answers == ("France",) and record.to_dict()["answers"] == ["France"]
