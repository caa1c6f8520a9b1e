"""Data-parallel probing: shards merged by id equal one unsharded run; a merge refuses gaps and overlaps."""

from __future__ import annotations

import json

import pytest
from test_slick import make_dataset, probe

from knowtune.engine import HFTreeEngine
from knowtune.errors import ConfigError
from knowtune.probe.config import probe_config
from knowtune.probe.shards import merge_probes, parse_shard, shard_examples
from knowtune.probe.slick import load_records, run_probe


def probe_shard(model, tok, out, qs, text):
    part, shard = shard_examples(qs, text)
    cfg = probe_config("quick", {"n_exemplar_sets": "3", "n_samples": "6", "max_new_tokens": "6", "seed": "0"})
    run_probe(HFTreeEngine(model, tok, batch_size=4), make_dataset(), part, cfg, out, {"spec": "tiny"}, progress=False, shard=shard)
    return part


def test_merged_shards_equal_an_unsharded_run(tiny_model, tiny_tokenizer, tmp_path):
    ds = make_dataset()
    qs = ds.split("test")
    probe(tiny_model, tiny_tokenizer, tmp_path / "whole", qs)
    parts = [probe_shard(tiny_model, tiny_tokenizer, tmp_path / f"s{i}", qs, f"{i}/3") for i in range(3)]
    assert sorted(e.id for p in parts for e in p) == sorted(e.id for e in qs)  # each question in one shard
    summary = merge_probes([tmp_path / f"s{i}" for i in (2, 0, 1)], ds, tmp_path / "merged")
    whole = {r.id: r for r in load_records(tmp_path / "whole" / "probe.jsonl")}
    merged = {r.id: r for r in load_records(tmp_path / "merged" / "probe.jsonl")}
    assert merged == whole
    assert summary["categories"] == json.loads((tmp_path / "whole" / "summary.json").read_text())["categories"]
    assert summary["engine"]["name"] == "hf" and summary["engine"]["reproducible"]


def test_merge_refuses_missing_repeated_and_unfinished_shards(tiny_model, tiny_tokenizer, tmp_path):
    ds = make_dataset()
    qs = ds.split("test")
    for i in range(2):
        probe_shard(tiny_model, tiny_tokenizer, tmp_path / f"s{i}", qs, f"{i}/2")
    with pytest.raises(ConfigError, match=r"shards must be 0..1 once each \(missing \[1\], repeated none\)"):
        merge_probes([tmp_path / "s0"], ds, tmp_path / "m")
    with pytest.raises(ConfigError, match=r"missing none, repeated \[0\]"):
        merge_probes([tmp_path / "s0", tmp_path / "s0", tmp_path / "s1"], ds, tmp_path / "m")
    (tmp_path / "s1" / "summary.json").unlink()  # as if killed before the end
    with pytest.raises(ConfigError, match="has not finished"):
        merge_probes([tmp_path / "s0", tmp_path / "s1"], ds, tmp_path / "m")
    probe(tiny_model, tiny_tokenizer, tmp_path / "plain", qs)
    with pytest.raises(ConfigError, match="probed without --shard"):
        merge_probes([tmp_path / "plain"], ds, tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_a_shard_resumes_and_refuses_another_shard_in_its_directory(tiny_model, tiny_tokenizer, tmp_path):
    qs = make_dataset().split("test")
    probe_shard(tiny_model, tiny_tokenizer, tmp_path, qs, "0/2")
    probe_shard(tiny_model, tiny_tokenizer, tmp_path, qs, "0/2")  # resumes: nothing left to do
    with pytest.raises(ConfigError, match="different"):
        probe_shard(tiny_model, tiny_tokenizer, tmp_path, qs, "1/2")


@pytest.mark.parametrize("text", ["2/2", "a/b", "1", "-1/2", "0/0"])
def test_parse_shard_refuses(text):
    with pytest.raises(ConfigError, match="expected i/n"):
        parse_shard(text)


def test_shard_and_merge_commands(cli, tiny_workdir, tmp_path):
    """`knowtune probe --shard i/n` twice and `knowtune probe-merge`: the merged run equals `knowtune probe`'s."""
    common = ["--model", str(tiny_workdir / "model"), "--data", str(tiny_workdir / "qa.jsonl"), "--preset", "quick",
              "--limit", "6", "--set", "max_new_tokens=4"]
    assert cli("probe", *common, "--out", str(tmp_path / "whole"))[0] == 0
    for i in range(2):
        assert cli("probe", *common, "--shard", f"{i}/2", "--out", str(tmp_path / f"s{i}"))[0] == 0
    code, out, err = cli("probe-merge", str(tmp_path / "s0"), str(tmp_path / "s1"), "--data", str(tiny_workdir / "qa.jsonl"),
                         "--out", str(tmp_path / "merged"))
    assert code == 0, err
    whole = {r.id: r for r in load_records(tmp_path / "whole" / "probe.jsonl")}
    assert {r.id: r for r in load_records(tmp_path / "merged" / "probe.jsonl")} == whole and len(whole) == 6
    config = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert config["engine"]["name"] == "hf" and config["questions"]["count"] == 6 and len(config["shards"]) == 2
