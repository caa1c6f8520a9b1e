"""Edit data: CounterFact (EasyEdit split, ROME schema) and zsRE on the real files, the builtin
counterfactual set, and errors that name file, record and field."""

from __future__ import annotations

import json

import pytest
from conftest import SHARED_DATA

from knowtune.data import load_qa
from knowtune.data.edits import (
    EditExample,
    builtin_counterfacts,
    detect_edits,
    join_target,
    knowledge_pairs,
    load_edits,
)
from knowtune.errors import DataError
from knowtune.matching import is_correct, normalize_answer

CF = SHARED_DATA / "counterfact"
ZSRE = SHARED_DATA / "zsre"
ROME = CF / "rome_format_sample" / "counterfact_sample.json"
needs_cf = pytest.mark.skipif(not CF.exists(), reason=f"CounterFact copy not found at {CF}")
needs_zsre = pytest.mark.skipif(not ZSRE.exists(), reason=f"zsRE copy not found at {ZSRE}")

CF_RECORD = {"case_id": 10, "prompt": "BBC One, by", "target_new": "Sega", "subject": "BBC One", "ground_truth": "BBC",
             "rephrase_prompt": "BBC One is my favorite product out of everything owned by",
             "locality_prompt": "BBC Radio, by", "locality_ground_truth": "BBC"}
ZSRE_RECORD = {"subject": "Watts Humphrey", "src": "What university did Watts Humphrey attend?", "pred": "Trinity College",
               "rephrase": "What university did Watts Humphrey take part in?", "alt": "University of Michigan",
               "answers": ["Illinois Institute of Technology"], "loc": "nq question: who played desmond doss father in hacksaw ridge",
               "loc_ans": "Hugo Weaving", "cond": "x"}
ROME_RECORD = {"case_id": 0, "requested_rewrite": {"prompt": "The mother tongue of {} is", "relation_id": "P103",
               "target_new": {"str": "English", "id": "Q1860"}, "target_true": {"str": "French", "id": "Q150"},
               "subject": "Danielle Darrieux"},
               "paraphrase_prompts": ["Danielle Darrieux, a native", "Danielle Darrieux spoke the language"],
               "neighborhood_prompts": ["The mother tongue of Léon Blum is", "Michel Rocard is a native speaker of"]}


@needs_cf
@pytest.mark.parametrize("name, split", [("counterfact-train", "train"), ("counterfact-val", "dev"), ("counterfact-edit", "test")])
def test_counterfact_easyedit_reads_every_record(name, split):
    path = CF / f"{name}.json"
    raw = json.loads(path.read_text())
    ds = load_edits(str(path))
    assert detect_edits(str(path)) == "counterfact"
    assert len(ds) == len(raw) and not ds.skipped
    assert [e.id for e in ds.examples] == [f"cf/{r['case_id']}" for r in raw]
    assert {e.split for e in ds.examples} == {split}
    for e, r in zip(ds.examples, raw):
        assert (e.prompt, e.target_new, e.ground_truth) == (r["prompt"], r["target_new"], (r["ground_truth"],))
        assert e.rephrase_prompts == (r["rephrase_prompt"],)
        assert (e.locality_prompts, e.locality_answers) == ((r["locality_prompt"],), (r["locality_ground_truth"],))
        assert e.prompt_style == "completion" and e.subject in e.prompt


@needs_cf
def test_counterfact_rome_schema_agrees_with_the_easyedit_split():
    rome = load_edits(str(ROME))
    assert detect_edits(str(ROME)) == "counterfact-rome"
    assert len(rome) == len(json.loads(ROME.read_text())) == 5
    flat = {e.id: e for f in ("train", "val", "edit") for e in load_edits(f"counterfact:{CF}/counterfact-{f}.json").examples}
    first = rome.examples[0]
    assert first.prompt == "The mother tongue of Danielle Darrieux is"
    assert (first.target_new, first.ground_truth, first.relation) == ("English", ("French",), "P103")
    assert len(first.rephrase_prompts) == 2
    assert first.locality_answers == ("French",) * 10 and len(first.locality_prompts) == 10
    for e in rome.examples:  # data README §2b: the two schemas agree on every sample case
        f = flat[e.id]
        assert (e.prompt, e.target_new, e.ground_truth) == (f.prompt, f.target_new, f.ground_truth)
        assert f.locality_prompts[0] in e.locality_prompts


@needs_zsre
def test_zsre_reads_every_record():
    path = ZSRE / "zsre_mend_train-1k.json"
    raw = json.loads(path.read_text())
    ds = load_edits(str(path))
    assert detect_edits(str(path)) == "zsre"
    # every record is read: the two with an empty `alt` are listed, not silently lost
    assert len(ds) + len(ds.skipped) == len(raw) == 1000
    assert [s.split(",")[1].strip() for s in ds.skipped] == ["record 534", "record 723"]
    assert all("field 'alt'" in s for s in ds.skipped)
    by_id = {e.id: e for e in ds.examples}
    assert by_id["zsre_mend_train-1k/174"].target_new == "Captain Universe"  # published as " Captain Universe"
    assert all(not e.locality_prompts[0].startswith("nq question:") for e in ds.examples)
    assert {e.split for e in ds.examples} == {"train"}

    sample = load_edits(f"zsre:{ZSRE / 'zsre_mend_eval_sample.json'}")
    assert len(sample) == 5 and {e.split for e in sample.examples} == {"test"}
    e = sample.examples[0]
    assert (e.prompt, e.target_new, e.ground_truth) == (ZSRE_RECORD["src"], "University of Michigan", ("Illinois Institute of Technology",))
    assert e.rephrase_prompts == (ZSRE_RECORD["rephrase"],)
    assert (e.locality_prompts, e.locality_answers) == (("who played desmond doss father in hacksaw ridge",), ("Hugo Weaving",))


def _write(tmp_path, name, records):
    path = tmp_path / name
    path.write_text(json.dumps(records))
    return path


def _without(d: dict, key: str) -> dict:
    return {k: v for k, v in d.items() if k != key}


@pytest.mark.parametrize("records, match", [
    ([CF_RECORD, _without({**CF_RECORD, "case_id": 11}, "target_new")], r"bad\.json, record case_id 11, field 'target_new': missing"),
    ([{**CF_RECORD, "subject": 3}], r"bad\.json, record case_id 10, field 'subject': expected a string, got int"),
    ([{**CF_RECORD, "locality_ground_truth": "  "}], r"bad\.json, record case_id 10, field 'locality_ground_truth': empty"),
    ([_without(CF_RECORD, "case_id") | {"src": 1}], r"bad\.json, record 0: cannot tell the edit format"),
    ([CF_RECORD, CF_RECORD], r"bad\.json, record cf/10, field 'id': duplicate id"),
    ([ROME_RECORD | {"requested_rewrite": {**ROME_RECORD["requested_rewrite"], "target_true": {"id": "Q150"}}}],
     r"bad\.json, record case_id 0, field 'requested_rewrite\.target_true\.str': missing"),
    ([ROME_RECORD | {"requested_rewrite": {**ROME_RECORD["requested_rewrite"], "target_new": "English"}}],
     r"bad\.json, record case_id 0, field 'requested_rewrite\.target_new': expected an object, got str"),
    ([ROME_RECORD | {"requested_rewrite": {**ROME_RECORD["requested_rewrite"], "prompt": "The mother tongue is"}}],
     r"bad\.json, record case_id 0, field 'requested_rewrite\.prompt': no '\{\}' placeholder"),
    ([ROME_RECORD | {"neighborhood_prompts": ["ok", ""]}], r"bad\.json, record case_id 0, field 'neighborhood_prompts': item 1 is empty"),
    ([ZSRE_RECORD, ZSRE_RECORD | {"answers": []}], r"bad\.json, record 1, field 'answers': no answers"),
    ([ZSRE_RECORD | {"loc": ["q"]}], r"bad\.json, record 0, field 'loc': expected a string, got list"),
    ([ZSRE_RECORD | {"alt": None}], r"bad\.json, record 0, field 'alt': missing"),
    ([ZSRE_RECORD, 7], r"bad\.json, record 1: expected a JSON object, got int"),
    ({"records": []}, r"bad\.json: expected a JSON list of records, got dict"),
])
def test_bad_records_name_file_record_and_field(tmp_path, records, match):
    with pytest.raises(DataError, match=match):
        load_edits(str(_write(tmp_path, "bad.json", records)))


def test_documented_records_load_without_the_shared_copies(tmp_path):
    cf = load_edits(str(_write(tmp_path, "cf-val.json", [CF_RECORD]))).examples[0]
    assert (cf.id, cf.prompt, cf.target_new, cf.ground_truth, cf.split) == ("cf/10", "BBC One, by", "Sega", ("BBC",), "dev")
    rome = load_edits(str(_write(tmp_path, "rome.json", [ROME_RECORD]))).examples[0]
    assert (rome.prompt, rome.target_new, rome.ground_truth, rome.relation) == (
        "The mother tongue of Danielle Darrieux is", "English", ("French",), "P103")
    assert rome.rephrase_prompts == tuple(ROME_RECORD["paraphrase_prompts"]) and rome.locality_answers == ("French", "French")
    zsre = load_edits(str(_write(tmp_path, "z.json", [ZSRE_RECORD | {"alt": " University of Michigan "}]))).examples[0]
    assert (zsre.id, zsre.target_new, zsre.locality_prompts) == (
        "z/0", "University of Michigan", ("who played desmond doss father in hacksaw ridge",))


def test_specs_and_detection(tmp_path):
    path = _write(tmp_path, "mine.json", [ZSRE_RECORD])
    assert detect_edits(f"counterfact:{path}") == "counterfact"  # the prefix wins over the content
    with pytest.raises(DataError, match=r"mine\.json, record 0, field 'case_id': missing"):
        load_edits(f"counterfact:{path}")
    with pytest.raises(DataError, match=r"nope\.json: no such file"):
        load_edits(str(tmp_path / "nope.json"))
    with pytest.raises(DataError, match=r"only\.json: no usable records \(1 left out\)"):
        load_edits(str(_write(tmp_path, "only.json", [ZSRE_RECORD | {"alt": " "}])))


def test_targets_follow_their_prompt_after_one_space():
    ex = EditExample("cf/10", "BBC One", "BBC One, by", "Sega", ("BBC",), ("r",), ("BBC Radio, by",), ("BBC",))
    assert join_target(ex.prompt, ex.target_new) == "BBC One, by Sega"
    assert knowledge_pairs([ex], "new") == [("BBC One, by", " Sega")]
    assert knowledge_pairs([ex], "old") == [("BBC One, by", " BBC")]
    with pytest.raises(DataError, match="1 locality prompts but 0 answers"):
        EditExample("x", "s", "p", "t", ("g",), (), ("l",), ())


def test_builtin_counterfacts_edit_known_facts_deterministically():
    data = load_qa("builtin")
    known = [e.id for e in data.split("test")[::7]]  # spread over every relation
    ds = builtin_counterfacts(known, seed=3, n_locality=2)
    assert [e.id for e in ds.examples] == [e.id for e in data.examples if e.id in set(known)]
    assert builtin_counterfacts(list(reversed(known)), seed=3, n_locality=2).examples == ds.examples
    assert [e.target_new for e in builtin_counterfacts(known, seed=4).examples] != [e.target_new for e in ds.examples]
    facts = {e.id: e for e in data.examples}
    edited_subjects = {normalize_answer(facts[i].subject) for i in known}
    objects = {(e.relation, e.answers[0]) for e in data.examples}
    for ex in ds.examples:
        fact, templates = facts[ex.id], data.templates[facts[ex.id].relation]
        assert ex.prompt == "Q: " + templates[0].replace("{subject}", fact.subject) + "\nA:"
        assert ex.rephrase_prompts == ("Q: " + templates[1].replace("{subject}", fact.subject) + "\nA:",)
        assert ex.ground_truth == fact.answers and ex.split == fact.split and ex.prompt_style == "qa"
        assert (fact.relation, ex.target_new) in objects and not is_correct(ex.target_new, fact.answers)
        assert len(ex.locality_prompts) == 2
        for prompt, answer in zip(ex.locality_prompts, ex.locality_answers):
            loc = next(e for e in data.examples if f"Q: {e.question}\nA:" == prompt)
            assert loc.id not in known and normalize_answer(loc.subject) not in edited_subjects
            assert loc.relation != fact.relation and answer == loc.answers[0]
    with pytest.raises(DataError, match=r"builtin facts: no fact with id 'P17/atlantis'"):
        builtin_counterfacts(known + ["P17/atlantis"])
