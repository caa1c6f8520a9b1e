"""The bad-input sweep: every row of docs/bad-inputs.md is one parameter of `test_bad_input`, which runs
the real `knowtune` entry point and checks the answer is one `knowtune: error:` line on stderr naming
what and where, the documented exit code, no traceback and no output written. Then the memory checks
that refuse out-of-memory-sized requests up front."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
from conftest import make_tiny_model

from knowtune.errors import ConfigError
from knowtune.memory import (
    Estimate,
    available_bytes,
    check_fits,
    lora_parameters,
    probe_estimate,
    training_estimate,
)
from knowtune.train.sft_config import SFTConfig


class Row(NamedTuple):
    """One row of docs/bad-inputs.md: the command ({d} fixtures, {model} the tiny model, {out} a fresh
    output path) and what the error line must contain."""

    id: str
    command: str
    expect: tuple[str, ...]
    code: int = 2
    subprocess: bool = False  # run `python -m knowtune` in a child (a fresh process reads HF_HUB_OFFLINE)
    small_machine: bool = False  # pretend the machine has 1 MiB free


ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False
ROWS = [
    # files: missing, empty, unreadable, the wrong kind
    Row("missing-file", "probe --data {d}/missing.jsonl --out {out}", ("missing.jsonl: no such file",)),
    Row("empty-file", "data show {d}/empty.jsonl", ("empty.jsonl: no records",)),
    Row("directory-for-a-file", "probe --data {d}/adir.jsonl --out {out}", ("adir.jsonl: is a directory, expected a file",)),
    Row("unreadable-file", "data show {d}/locked.jsonl", ("locked.jsonl: cannot read (Permission denied)",)),
    Row("unknown-data-format", "data show {d}/notes.txt", ("notes.txt: cannot tell the format; use a prefix such as jsonl:",)),
    Row("unknown-dataset-name", "data show entityquestionz", ("entityquestionz: no such file or directory (and not a known dataset",)),
    Row("empty-probe-records", "evaluate --model {model} --records {d}/empty.jsonl", ("empty.jsonl: no probe records",)),
    Row("empty-training-set", "train --model {model} --train {d}/empty.jsonl --out {out}", ("empty.jsonl: no training examples",)),
    Row("output-path-is-a-file", "probe --model {model} --limit 2 --out {d}/notes.txt", ("notes.txt: exists and is not a directory",), code=1),
    # malformed JSON / JSONL / CSV
    Row("malformed-jsonl-line", "probe --data {d}/malformed.jsonl --out {out}", ("malformed.jsonl, record on line 2: malformed JSON",)),
    Row("jsonl-line-not-an-object", "curate --probe {d}/notobject.jsonl --size 1 --out {out}",
        ("notobject.jsonl, record on line 2: expected a JSON object, got list",)),
    Row("malformed-json-file", "evaluate --edits {d}/cf_malformed.json", ("cf_malformed.json: malformed JSON at line 1, column",)),
    Row("json-not-a-list", "update --model {model} --edits counterfact:{d}/cf_notlist.json --out {out}",
        ("cf_notlist.json: expected a JSON list of records, got dict",)),
    Row("edit-format-unknown", "evaluate --edits {d}/cf_unknown.json", ("cf_unknown.json, record 0: cannot tell the edit format from its keys (foo)",)),
    Row("csv-wrong-column-count", "probe-mc --model {model} --data {d}/mmlu_cols --out {out}",
        ("astronomy_test.csv, record on line 2: expected 6 columns (question,A,B,C,D,answer), got 4",)),
    Row("csv-bad-answer-letter", "probe-mc --model {model} --data {d}/mmlu_letter --out {out}",
        ("astronomy_test.csv, record on line 1, field 'answer': 'E' is not one of A, B, C, D",)),
    Row("entityquestions-malformed", "data show {d}/eq_bad", ("P17.test.json: malformed JSON at line 1",)),
    # encodings
    Row("latin-1-file", "data show {d}/latin1.jsonl", ("latin1.jsonl: not UTF-8 text (byte 46)",)),
    Row("utf-16-file", "probe --data {d}/utf16.jsonl --out {out}", ("utf16.jsonl: not UTF-8 text (byte 0)",)),
    Row("utf-8-bom", "data show {d}/bom.jsonl", ("bom.jsonl, record on line 1: malformed JSON (Unexpected UTF-8 BOM",)),
    Row("lone-surrogate-escape", "data show {d}/surrogate.jsonl", ("surrogate.jsonl, record on line 1, field 'question'", "surrogate")),
    # records: missing or empty fields, wrong types, duplicate ids
    Row("missing-question", "probe --data {d}/noquestion.jsonl --out {out}", ("noquestion.jsonl, record q1, field 'question': missing",)),
    Row("empty-answers", "data show {d}/emptyanswers.jsonl", ("emptyanswers.jsonl, record q1, field 'answers': no answers",)),
    Row("answer-not-a-string", "probe --data {d}/intanswer.jsonl --out {out}",
        ("intanswer.jsonl, record q1, field 'answers': answer 1 is int, not a string",)),
    Row("duplicate-ids", "data show {d}/dupids.jsonl", ("dupids.jsonl, record q1, field 'id': duplicate id",)),
    Row("probe-record-without-category", "evaluate --model {model} --records {d}/probe_nocat.jsonl",
        ("probe_nocat.jsonl, record on line 1, field 'category': missing",)),
    Row("unknown-category", "curate --probe {d}/probe_badcat.jsonl --size 1 --out {out}",
        ("probe_badcat.jsonl, record on line 1, field 'category': unknown 'Known'",)),
    Row("probe-records-duplicate-ids", "curate --probe {d}/probe_dup.jsonl --size 1 --out {out}", ("probe_dup.jsonl", "q1", "duplicate id")),
    Row("probe-record-answer-not-a-string", "evaluate --model {model} --records {d}/probe_intanswer.jsonl",
        ("probe_intanswer.jsonl", "field 'answers'", "not a string")),
    Row("edit-record-missing-field", "update --model {model} --edits {d}/edits_bad.jsonl --out {out}",
        ("edits_bad.jsonl, record e1, field 'target_new': missing",)),
    Row("training-row-of-neither-shape", "train --model {model} --train {d}/train_neither.jsonl --out {out}",
        ("train_neither.jsonl, record on line 1: a training row needs 'question' and an answer, or 'prompt' and 'target'",)),
    Row("training-row-missing-target", "train --model {model} --train {d}/train_prompt_only.jsonl --out {out}",
        ("train_prompt_only.jsonl, record on line 1, field 'target': missing",)),
    Row("audit-no-usable-fields", "audit --data {d}/train_neither.jsonl --out {out}",
        ("train_neither.jsonl: no row has question/answer(s), prompt/completion, instruction/input/output or messages fields "
         "(the rows have: id, text); name them with --question-field and --answer-field",)),
    Row("audit-no-auditable-rows", "audit --data {d}/audit_long.jsonl --out {out}",
        ("audit_long.jsonl: none of the 2 rows is auditable (1 long answer, 1 multi-turn)",)),
    Row("audit-exemplars-lack-a-relation", "audit --data {d}/probe_ok.jsonl --exemplars {d}/exemplars_p17.jsonl --out {out}",
        ("exemplars_p17.jsonl: relation 'P36' has 0 usable exemplars, needs at least k_shot=4",)),
    Row("set-size-beyond-the-pool", "curate --probe {d}/probe_ok.jsonl --size 1000000000000000000000000000000 --out {out}",
        ("--size 1000000000000000000000000000000 is more than the 4 probe records in", "probe_ok.jsonl")),
    # unknown names: relations, splits, presets, subjects, methods, dtypes
    Row("unknown-relation", "probe --relations P999 --out {out}", ("unknown relation 'P999' in 'builtin' (has: P17,",)),
    Row("unknown-split", "probe --split exemplars --out {out}", ("dataset 'builtin' has no split 'exemplars' (has: exemplar, train, dev, test)",)),
    Row("unknown-probe-preset", "probe --preset fast --out {out}", ("unknown preset 'fast' for the probe; choose one of paper, quick",)),
    Row("unknown-estimator", "probe --estimator fast --out {out}", ("probe settings: key 'estimator': Input should be 'sampled' or 'exact'",)),
    Row("mc-without-out", "evaluate --model {model} --mc builtin",
        ("--mc needs --out, the directory for predictions.jsonl and summary.json",)),
    Row("evaluate-two-sources", "evaluate --model {model} --mc builtin --records {d}/empty.jsonl --out {out}",
        ("give exactly one of --records (QA), --edits (edit metrics) and --mc (multiple choice)",)),
    Row("mc-unknown-scoring", "probe-mc --model {model} --scoring logits --out {out}", ("--scoring: 'logits' is not one of letter, cloze",)),
    Row("mc-unknown-cloze-norm", "evaluate --model {model} --mc builtin --scoring cloze --cloze-norm bytes --out {out}",
        ("--cloze-norm: 'bytes' is not one of sum, mean",)),
    Row("audit-unknown-export", "audit --data {d}/probe_ok.jsonl --export everything --out {out}",
        ("unknown --export 'everything'; choose one of filtered, idk, self-aligned or all",)),
    Row("unknown-study", "study slick --out {out}", ("unknown study 'slick'; choose one of flearning, new-knowledge, self-align",)),
    Row("unknown-study-preset", "study flearning --preset huge --out {out}", ("unknown preset 'huge' for study 'flearning'; choose one of cpu, paper, quick",)),
    Row("study-unknown-relation", "study new-knowledge --set relations=[P999] --out {out}", ("unknown relation 'P999' in 'builtin'",)),
    Row("study-unknown-subject", "study self-align --set train_subjects=[astronomy] --out {out}", ("unknown training subjects ['astronomy'] in 'builtin-mc'",)),
    Row("unknown-update-method", "update --model {model} --edits {d}/cf_notlist.json --method fl --out {out}",
        ("update settings: --method: Input should be 'ft', 'lora', 'flearning-ft', 'flearning-lora' or 'lora-ft'",)),
    Row("unknown-dtype", "probe --model {model} --dtype fp8 --limit 2 --out {out}", ("unknown dtype 'fp8'; choose one of float32, bfloat16, float16",)),
    # configs: unknown keys and wrong types, with the key path
    Row("set-without-equals", "probe --set k_shot --out {out}", ("override 'k_shot' is not key=value",)),
    Row("set-not-yaml", "study new-knowledge --set relations=[P17 --out {out}", ("override 'relations': '[P17' is not a YAML value",)),
    Row("probe-set-unknown-key", "probe --set shots=2 --out {out}", ("probe settings: key 'shots': Extra inputs are not permitted",)),
    Row("train-set-wrong-type", "train --model {model} --train {d}/probe_ok.jsonl --set epochs=abc --out {out}",
        ("training settings: key 'epochs': Input should be a valid integer",)),
    Row("new-knowledge-set-unknown-key", "study new-knowledge --set unknown_key=1 --out {out}", ("study config: key 'unknown_key': Extra inputs are not permitted",)),
    Row("new-knowledge-set-wrong-type", "study new-knowledge --set train.epochs=abc --out {out}", ("study config: key 'train.epochs': Input should be a valid integer",)),
    Row("flearning-set-unknown-key", "study flearning --set unknown_key=1 --out {out}", ("study config: key 'unknown_key': Extra inputs are not permitted",)),
    Row("flearning-set-wrong-type", "study flearning --set full.epochs=abc --out {out}", ("study config: key 'full.epochs': Input should be a valid integer",)),
    Row("selfalign-set-unknown-key", "study self-align --set unknown_key=1 --out {out}", ("study config: key 'unknown_key': Extra inputs are not permitted",)),
    Row("selfalign-set-wrong-type", "study self-align --set train.epochs=abc --out {out}", ("study config: key 'train.epochs': Input should be a valid integer",)),
    Row("selfalign-unknown-scoring", "study self-align --set probe.scoring=logits --out {out}",
        ("study config: key 'probe.scoring': Input should be 'letter' or 'cloze'",)),
    Row("update-set-unknown-nested-key", "update --model {model} --edits {d}/cf_notlist.json --set full.epochz=3 --out {out}",
        ("update settings: key 'full.epochz': Extra inputs are not permitted",)),
    Row("lora-targets-match-nothing", "train --model {model} --train {d}/probe_ok.jsonl --set method=lora --set lora_target_modules=[qkv] --out {out}",
        ("lora_target_modules ['qkv'] matches no layer of the model (its linear layers: down_proj, gate_proj, k_proj",)),
    Row("option-wrong-type", "probe --limit ten --out {out}", ("knowtune probe: Invalid value for '--limit'",)),
    Row("option-missing", "curate --probe {d}/probe_ok.jsonl --out {out}", ("knowtune curate: Missing option '--size'",), subprocess=True),
    # model specs
    Row("model-path-missing", "probe --model {d}/models/nope --limit 2 --out {out}", ("models/nope: model path does not exist",)),
    Row("model-dir-without-config", "probe --model {d}/noconfig --limit 2 --out {out}", ("noconfig: not a model directory (no config.json)",)),
    Row("model-dir-without-safetensors", "probe --model {d}/noweights --limit 2 --out {out}", ("noweights: no .safetensors weights",)),
    Row("corrupt-safetensors", "probe --model {d}/corrupt --limit 2 --out {out}", ("corrupt: corrupt or truncated safetensors",)),
    Row("pickle-weights-only", "train --model {d}/pickle --train {d}/probe_ok.jsonl --out {out}", ("pickle: no .safetensors weights", "pytorch_model.bin")),
    Row("truncated-gguf", "probe --model {d}/half.gguf --limit 2 --out {out}", ("half.gguf: not a readable GGUF file (truncated or corrupt",)),
    Row("hub-id-not-found", "probe --model nosuchowner/nosuchmodel --limit 2 --out {out}",
        ("nosuchowner/nosuchmodel: cannot load model",), subprocess=True),
    # out-of-memory-sized requests, refused before any work with the estimate
    Row("probe-too-large-for-memory", "probe --model {model} --limit 2 --set max_new_tokens=1000000000 --out {out}",
        ("probing needs ≈", "KV cache", "for batch 1 × 17 sequences × 10000", "available; lower --batch-size, n_samples or max_new_tokens")),
    Row("training-too-large-for-memory", "train --model {model} --train {d}/probe_ok.jsonl --set batch_size=10000000 --out {out}",
        ("training needs ≈", "gradients", "Adam state", "activations", "for batch 4 × ", "but this machine has", "available; lower batch_size"),
        small_machine=True),
    # second pass, by class (issue 17): strict values, checks before writing, malformed files, loaders, messages
    Row("set-yes-for-a-number", "train --model {model} --train {d}/probe_ok.jsonl --set epochs=yes --out {out}",
        ("training settings: key 'epochs': Input should be a valid integer (got 'yes')",)),
    Row("set-word-for-a-number", "train --model {model} --train {d}/probe_ok.jsonl --set learning_rate=inf --out {out}",
        ("training settings: key 'learning_rate': Input should be a valid number (got 'inf')",)),
    Row("set-number-for-a-boolean", "train --model {model} --train {d}/probe_ok.jsonl --set fit_bf16=1 --out {out}",
        ("training settings: key 'fit_bf16': Input should be a valid boolean (got 1)",)),
    Row("set-infinite-number", "probe --model {model} --limit 2 --set temperature=.inf --out {out}",
        ("probe settings: key 'temperature': must be a finite number, not inf",)),
    Row("set-boolean-in-a-list", "study flearning --set lambdas=[1,true] --out {out}", ("study config: key 'lambdas.1': λ must be a number, not true",)),
    Row("set-not-finite-in-a-list", "study flearning --set lr_grid.full=[.nan] --out {out}",
        ("study config: key 'lr_grid.full.0': must be a finite number, not nan",)),
    Row("lambda-not-finite", "update --model {model} --edits {d}/cf_notlist.json --lambda nan --out {out}",
        ("update settings: --lambda: must be a finite number, not nan",)),
    Row("set-empty-list", "study new-knowledge --set relations=[] --out {out}", ("study config: key 'relations': List should have at least 1 item",)),
    Row("settings-in-conflict", "study new-knowledge --set train_pool=2 --set size=3 --out {out}",
        ("study config: size (|D| = 3) is more than train_pool (2)",)),
    Row("unknown-scheduler", "train --model {model} --train {d}/probe_ok.jsonl --set lr_scheduler_type=cosine_annealing --out {out}",
        ("training settings: key 'lr_scheduler_type': unknown scheduler 'cosine_annealing'; choose one of linear, cosine,",)),
    Row("lora-target-not-a-regex", "train --model {model} --train {d}/probe_ok.jsonl --set method=lora --set lora_target_modules=(q --out {out}",
        ("training settings: key 'lora_target_modules': '(q' is not a valid regular expression",)),
    Row("probe-exemplar-pool-too-small", "probe --model {model} --data {d}/fewexemplars.jsonl --set k_shot=3 --out {out}",
        ("relation 'P36' has 1 exemplars in split 'exemplar', needs at least k=3",)),
    Row("probe-mc-out-is-a-file", "probe-mc --model {model} --out {d}/notes.txt", ("notes.txt: exists and is not a directory",), code=1),
    Row("model-config-without-type", "probe --model {d}/emptyconfig --limit 2 --out {out}",
        ("emptyconfig/config.json, field 'model_type': missing",)),
    Row("model-tokenizer-corrupt", "probe --model {d}/badtokenizer --limit 2 --out {out}", ("badtokenizer/tokenizer.json: malformed JSON",)),
    Row("model-meta-wrong-shape", "train --model {d}/badmeta --train {d}/probe_ok.jsonl --out {out}",
        ("badmeta/knowtune_meta.json: expected a JSON object, got list",)),
    Row("probe-sidecar-wrong-shape", "curate --probe {d}/sidecar/probe.jsonl --size 1 --out {out}",
        ("sidecar/manifest.json, field 'provenance': expected a JSON object, got list",)),
    Row("mmlu-no-test-questions", "probe-mc --model {model} --data {d}/mmlu_notest --out {out}",
        ("mmlu_notest: no test questions (splits found: dev)",)),
    Row("mmlu-empty-option", "probe-mc --model {model} --data {d}/mmlu_emptyoption --out {out}",
        ("astronomy_test.csv, record on line 1, field 'C': empty option",)),
    Row("entityquestions-template-without-slot", "data show {d}/eq_noslot",
        ("relation_query_templates.json, field 'P17': a template must be a string with an [X] slot",)),
    Row("symlink-loop", "data show {d}/loop.jsonl", ("loop.jsonl: a symbolic link loop",)),
    Row("edits-prefix-without-path", "update --model {model} --edits counterfact: --out {out}",
        ("'counterfact:': no path after the counterfact: prefix; give counterfact:PATH",)),
    Row("edits-prefix-over-suffix", "evaluate --model {model} --edits zsre:{d}/zsre_one.jsonl",
        ("zsre_one.jsonl: expected a JSON list of records, got dict",)),
    Row("out-holds-a-model", "probe --model {model} --limit 2 --out {d}/tiny",
        ("tiny/config.json: not a knowtune manifest of a probe (a file of something else",)),
    Row("evaluate-out-is-a-directory", "evaluate --model {model} --records {d}/probe_ok.jsonl --out {d}/adir.jsonl",
        ("adir.jsonl: is a directory, expected a file",), code=1),
    # engines: chosen by name, options checked against the engine, shards of a data-parallel probe
    Row("unknown-engine", "probe --engine nope --limit 2 --out {out}", ("--engine 'nope': no such engine; choose one of hf, vllm",)),
    Row("vllm-not-installed", "probe --engine vllm --limit 2 --out {out}",
        ("--engine vllm: the vllm package is not installed", "knowtune[vllm]", "engines: hf, vllm")),
    Row("vllm-option-on-hf-engine", "probe --engine hf --engine-set tensor_parallel_size=2 --limit 2 --out {out}",
        ("--engine-set tensor_parallel_size: the hf engine takes no engine options (vllm takes tensor_parallel_size,",)),
    Row("engine-data-parallel", "probe --engine hf --engine-set data_parallel_size=2 --limit 2 --out {out}",
        ("--engine-set data_parallel_size=2: vLLM runs data parallel only across processes", "--shard i/n")),
    Row("engine-for-logit-scoring", "evaluate --model {model} --mc builtin --engine vllm --out {out}",
        ("--engine vllm: --mc scores the options' logits through transformers; the engine serves --records and the exact edit protocol",)),
    Row("exact-on-vllm", "probe --engine vllm --estimator exact --limit 2 --out {out}",
        ("--engine vllm: the exact estimator scores under teacher forcing through transformers; use --engine hf, or --estimator sampled",)),
    Row("shard-out-of-range", "probe --shard 2/2 --limit 2 --out {out}", ("--shard '2/2': expected i/n with 0 <= i < n",)),
]
SKIP_AS_ROOT = {"unreadable-file"}  # root reads a file whatever its permissions
NEEDS_NO_VLLM = {"vllm-not-installed"}  # in the vllm environment that command would run


def _jsonl(*rows: dict) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def _copy_model(src: Path, dst: Path, files: tuple[str, ...]) -> Path:
    dst.mkdir()
    for name in files:
        shutil.copy(src / name, dst / name)
    return dst


def _truncated_gguf(path: Path) -> None:
    """A small valid GGUF file cut in half."""
    import numpy as np
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), "llama")
    writer.add_tensor("token_embd.weight", np.zeros((64, 16), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory, tiny_tokenizer) -> Path:
    """Every bad file of the table, and a tiny model, in one directory."""
    d = tmp_path_factory.mktemp("bad")
    model = d / "tiny"
    make_tiny_model(tiny_tokenizer).save_pretrained(model)
    tiny_tokenizer.save_pretrained(model)
    q = {"id": "q1", "relation": "P36", "question": "What is the capital of France?", "answers": ["Paris"]}
    p = {**q, "category": "Unknown"}
    texts = {
        "empty.jsonl": "", "locked.jsonl": _jsonl(q), "notes.txt": "Paris is the capital of France.\n",
        "malformed.jsonl": _jsonl(q) + '{"question": \n', "notobject.jsonl": _jsonl(p) + '["a"]\n',
        "bom.jsonl": "\ufeff" + _jsonl(q), "surrogate.jsonl": '{"id": "q1", "question": "Q\\ud800?", "answers": ["a"]}\n',
        "noquestion.jsonl": _jsonl({k: v for k, v in q.items() if k != "question"}),
        "emptyanswers.jsonl": _jsonl({**q, "answers": []}), "intanswer.jsonl": _jsonl({**q, "answers": ["Paris", 7]}),
        "dupids.jsonl": _jsonl(q, {**q, "question": "Which city is the capital of France?"}),
        "probe_nocat.jsonl": _jsonl(q), "probe_badcat.jsonl": _jsonl({**p, "category": "Known"}),
        "probe_dup.jsonl": _jsonl(p, p), "probe_intanswer.jsonl": _jsonl({**p, "answers": [42]}),
        "probe_ok.jsonl": _jsonl(*[{**p, "id": f"q{i}"} for i in range(4)]),
        "cf_malformed.json": '[{"case_id": 1,', "cf_notlist.json": '{"case_id": 1}', "cf_unknown.json": '[{"foo": 1}]',
        "edits_bad.jsonl": _jsonl({"id": "e1", "subject": "France", "prompt": "The capital of France is"}),
        "train_neither.jsonl": _jsonl({"id": "n1", "text": "Paris is the capital of France."}),
        "train_prompt_only.jsonl": _jsonl({"prompt": "Q: What is the capital of France?\nA:", "group": "capitals"}),
        "exemplars_p17.jsonl": _jsonl(*[{"relation": "P17", "question": f"Which country is Lyon {i} in?", "answer": "France"}
                                         for i in range(4)]),
        "audit_long.jsonl": _jsonl({**q, "answers": ["Paris, on the Seine, is the capital and largest city of France"]},
                                   {"messages": [{"role": "user", "content": "Hi"}, {"role": "user", "content": "Capital of France?"},
                                                 {"role": "assistant", "content": "Paris"}]}),
        "mmlu_cols/astronomy_test.csv": "What?,a,b,c,d,A\nWhy?,a,b,c\n", "mmlu_letter/astronomy_test.csv": "What?,a,b,c,d,E\n",
        "eq_bad/P17.test.json": "[{",
        "fewexemplars.jsonl": _jsonl({**q, "id": "e1", "split": "exemplar"}, {**q, "id": "t1", "split": "test"}),
        "sidecar/probe.jsonl": _jsonl(p), "sidecar/manifest.json": '{"provenance": [1]}',
        "mmlu_notest/astronomy_dev.csv": "What?,a,b,c,d,A\n", "mmlu_emptyoption/astronomy_test.csv": "What?,a,b, ,d,A\n",
        "eq_noslot/P17.test.json": json.dumps([{"question": "Which country is Lyon located in?", "answers": ["France"]}]),
        "eq_noslot/relation_query_templates.json": '{"P17": "Which country is it located in?"}',
        "zsre_one.jsonl": _jsonl({"subject": "France", "src": "capital?", "answers": ["Paris"]}),
    }
    for name, text in texts.items():
        (d / name).parent.mkdir(exist_ok=True)
        (d / name).write_text(text, encoding="utf-8")
    (d / "locked.jsonl").chmod(0)
    (d / "latin1.jsonl").write_bytes(json.dumps({**q, "question": "Où est Zürich?"}, ensure_ascii=False).encode("latin-1") + b"\n")
    (d / "utf16.jsonl").write_bytes(_jsonl(q).encode("utf-16"))
    (d / "adir.jsonl").mkdir()
    tok_files = ("config.json", "tokenizer.json", "tokenizer_config.json")
    (d / "noconfig").mkdir()
    _copy_model(model, d / "noweights", tok_files)
    corrupt = _copy_model(model, d / "corrupt", tok_files)
    (corrupt / "model.safetensors").write_bytes((model / "model.safetensors").read_bytes()[:5000])
    from safetensors.torch import load_file

    pickled = _copy_model(model, d / "pickle", tok_files)
    torch.save(load_file(model / "model.safetensors"), pickled / "pytorch_model.bin")
    _truncated_gguf(d / "half.gguf")
    model_files = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
    (_copy_model(model, d / "emptyconfig", model_files) / "config.json").write_text("{}")
    badtok = _copy_model(model, d / "badtokenizer", model_files)
    (badtok / "tokenizer.json").write_text((badtok / "tokenizer.json").read_text()[:200])
    (_copy_model(model, d / "badmeta", model_files) / "knowtune_meta.json").write_text("[1]")
    (d / "loop.jsonl").symlink_to(d / "loop.jsonl")
    return d


@pytest.fixture
def cli(cli, monkeypatch, tmp_path):
    """conftest's `cli`, taking the args as a list, with a cache of its own and the builtin model out of reach."""
    from transformers.utils import logging as hf_logging

    monkeypatch.setenv("KNOWTUNE_CACHE", str(tmp_path / "cache"))

    def refuse_builtin():  # a row that got this far would load the real 135M model: fail fast instead
        pytest.fail("this command reached the builtin model")

    monkeypatch.setattr("knowtune.models.builtin_gguf", refuse_builtin)
    hf_logging.disable_progress_bar()  # "Loading weights" bars are not error lines

    def run(args: list[str]) -> tuple[int, str, str]:
        return cli(*args)

    yield run
    hf_logging.enable_progress_bar()


def run_child(args: list[str], tmp_path: Path) -> tuple[int, str, str]:
    """Run `python -m knowtune ARGS` in a fresh process, offline, with its own cache."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "OMP_NUM_THREADS": "1",
           "KNOWTUNE_CACHE": str(tmp_path / "cache")}
    res = subprocess.run([sys.executable, "-m", "knowtune", *args], check=False, capture_output=True, text=True, env=env, timeout=300)
    return res.returncode, res.stdout, res.stderr


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input(row: Row, fixtures: Path, cli, monkeypatch, tmp_path):
    if row.id in SKIP_AS_ROOT and ROOT:
        pytest.skip("root can read a file with no permissions")
    if row.id in NEEDS_NO_VLLM and importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    if row.small_machine:
        monkeypatch.setattr("knowtune.memory.available_bytes", lambda device: 2**20)
    out = tmp_path / "out"
    args = row.command.format(d=fixtures, model=fixtures / "tiny", out=out).split()
    code, stdout, stderr = run_child(args, tmp_path) if row.subprocess else cli(args)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("knowtune: error: "), stderr
    for part in row.expect:
        assert part in lines[0], lines[0]
    assert code == row.code, lines[0]
    assert "Traceback" not in stdout + stderr
    assert not out.exists() or not any(out.iterdir()), "a refused command wrote output"


def test_debug_shows_the_traceback(fixtures, tmp_path):
    code, _, stderr = run_child(["--debug", "data", "show", str(fixtures / "malformed.jsonl")], tmp_path)
    assert code != 0
    assert "Traceback (most recent call last)" in stderr and "knowtune.errors.DataError" in stderr


def test_the_table_documents_every_row():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "bad-inputs.md").read_text(encoding="utf-8")
    assert re.findall(r"^\| `([a-z0-9-]+)`:", doc, re.MULTILINE) == [r.id for r in ROWS]


# Memory estimates ---------------------------------------------------------------------------------

V = 300  # the tiny tokenizer's vocabulary
TINY_PARAMS = 2 * 64 * V + 2 * (64 * 64 + 64 * 32 + 64 * 32 + 64 * 64 + 3 * 64 * 128 + 2 * 64) + 64  # embed, head, 2 layers, norm


@pytest.fixture(scope="module")
def tiny(tiny_tokenizer):
    assert len(tiny_tokenizer) == V
    return make_tiny_model(tiny_tokenizer)


def test_training_estimate_by_hand(tiny):
    est = training_estimate(tiny, batch=8, seq_len=20)
    per_token = 2 * (9 * 64 + 4 * 128) * 4 + V * 4 * 2  # 2 layers of saved float32 activations, then logits + gradient
    assert est.parts == {"weights": 4 * TINY_PARAMS, "gradients": 4 * TINY_PARAMS, "Adam state": 8 * TINY_PARAMS,
                         "activations": 8 * 20 * per_token}
    lora = training_estimate(tiny, batch=8, seq_len=20, lora=(16, SFTConfig().lora_target_modules))
    adapters = 2 * 16 * ((64 + 64) + (64 + 32) + (64 + 32) + (64 + 64) + 3 * (64 + 128))  # r·(in + out) per linear layer
    assert lora.parts == {"weights": 4 * (TINY_PARAMS + adapters), "gradients": 4 * adapters, "Adam state": 8 * adapters,
                          "activations": 8 * 20 * per_token}


@pytest.mark.parametrize("targets", ["all-linear", ["q_proj", "v_proj"], r".*\.(gate|up)_proj"])
def test_lora_parameters_match_peft(tiny_tokenizer, targets):
    from peft import LoraConfig, get_peft_model

    model = make_tiny_model(tiny_tokenizer)
    mine = lora_parameters(model, 8, targets)
    peft_model = get_peft_model(model, LoraConfig(r=8, target_modules=targets, task_type="CAUSAL_LM"))
    assert mine == peft_model.get_nb_trainable_parameters()[0]


def test_activation_estimate_is_close_to_what_autograd_saves(tiny):
    """The saved tensors of one forward pass with labels, counted by storage, against the estimate."""
    params = {p.untyped_storage().data_ptr() for p in tiny.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.untyped_storage().data_ptr() not in params:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    ids = torch.randint(0, V, (8, 20))
    tiny.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        tiny(input_ids=ids, labels=ids)
    tiny.eval()
    estimate = training_estimate(tiny, 8, 20).parts["activations"]
    assert sum(saved.values()) <= estimate <= 1.5 * sum(saved.values())


def test_probe_estimate_by_hand(tiny):
    est = probe_estimate(tiny, batch=4, n_samples=16, seq_len=100)
    kv = 4 * 17 * 100 * 2 * 2 * 2 * 16 * 4  # batch × sequences × tokens × layers × (K, V) × kv heads × head dim × float32
    assert est.parts == {"weights": 4 * TINY_PARAMS, "KV cache": kv}


def test_a_huge_batch_is_refused_with_the_estimate(tiny):
    with pytest.raises(ConfigError) as e:
        check_fits(training_estimate(tiny, batch=10**7, seq_len=64), tiny)
    message = str(e.value)
    assert message.startswith("training needs ≈ ") and " GiB (weights 0.0, gradients 0.0, Adam state 0.0, activations " in message
    assert "for batch 10000000 × 64 tokens) but this machine has " in message and "available; lower batch_size" in message
    check_fits(training_estimate(tiny, batch=16, seq_len=64), tiny)  # a normal request passes


def test_the_loaded_weights_count_as_available(tiny, monkeypatch):
    est = Estimate("training", {"weights": 4 * TINY_PARAMS, "activations": 1000}, "batch 1 × 1 tokens", "", torch.device("cpu"))
    monkeypatch.setattr("knowtune.memory.available_bytes", lambda device: 2000)
    check_fits(est, tiny)  # the weights are in memory already: only the activations must fit
    monkeypatch.setattr("knowtune.memory.available_bytes", lambda device: 500)
    with pytest.raises(ConfigError, match=r"but this machine has .* available"):
        check_fits(est, tiny)


def test_available_memory_is_known_here():
    assert available_bytes(torch.device("cpu")) > 0


def test_lora_targets_that_match_nothing(tiny):
    with pytest.raises(ConfigError, match=r"lora_target_modules \['attn'\] matches no layer .* q_proj, up_proj, v_proj\)"):
        lora_parameters(tiny, 8, ["attn"])


def test_large_but_harmless_requests_are_not_refused(fixtures, cli, tmp_path):
    """A batch larger than the questions or examples never forms, so it is not refused."""
    model = str(fixtures / "tiny")
    code, _, err = cli(["probe", "--model", model, "--limit", "2", "--preset", "quick", "--batch-size", "10000000",
                        "--out", str(tmp_path / "probe")])
    assert code == 0 and (tmp_path / "probe" / "probe.jsonl").exists(), err
    code, _, err = cli(["train", "--model", model, "--train", str(fixtures / "probe_ok.jsonl"), "--set", "epochs=1",
                        "--set", "batch_size=10000000", "--out", str(tmp_path / "train")])
    assert code == 0 and (tmp_path / "train" / "metrics.jsonl").exists(), err
