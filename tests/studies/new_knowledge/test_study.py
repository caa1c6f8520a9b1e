"""The whole SliCK recipe end to end on a tiny random model and a small JSONL dataset."""

from __future__ import annotations

import json

from conftest import make_tiny_model

from knowtune.data.formats import qa_prompt
from knowtune.studies.new_knowledge.study import run_study
from knowtune.studies.registry import get_study
from knowtune.train.examples import SFTExample
from knowtune.train.sft_config import SFTConfig
from knowtune.train.sft_trainer import train_sft


def write_dataset(path) -> list[dict]:
    rows = []
    for rel, n in (("cap", 40), ("sym", 40), ("lang", 16)):
        for i in range(n):
            split = "exemplar" if i < 6 else "dev" if i < 10 else "test" if i < 16 else "train"
            rows.append({"id": f"{rel}{i}", "relation": rel, "subject": f"s{i}", "question": f"What is the {rel} of s{i}?",
                         "answers": [f"a{i % 7}"], "popularity": i, "split": split})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def test_slick_recipe_end_to_end(tiny_tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("KNOWTUNE_CACHE", str(tmp_path / "cache"))
    model_dir = tmp_path / "model"
    rows = write_dataset(tmp_path / "qa.jsonl")
    # A random model knows nothing, and a study needs Known and Unknown facts: teach it half of them first.
    model = make_tiny_model(tiny_tokenizer, seed=0)
    taught = [SFTExample(r["id"], qa_prompt(r["question"]), f" {r['answers'][0]}\n") for r in rows if int(r["id"][-1]) % 2 == 0]
    train_sft(model, tiny_tokenizer, taught, SFTConfig(epochs=40, learning_rate=3e-3, batch_size=8, checkpoint_every_epoch=False,
              save_weights=False), tmp_path / "teach", progress=False)
    model.save_pretrained(model_dir)
    tiny_tokenizer.save_pretrained(model_dir)
    cfg = get_study("new-knowledge").load_config("quick", {
        "model": str(model_dir), "data": str(tmp_path / "qa.jsonl"), "relations": "[cap, sym]", "ood_relations": "[lang]",
        "train_pool": "null", "dev_size": "null", "test_size": "null", "ood_test_size": "null", "size": "4",
        "seeds": "[0, 1]", "probe.n_exemplar_sets": "2", "probe.n_samples": "8", "probe.temperature": "1.5", "probe.max_new_tokens": "4",
        "train.epochs": "2", "train.learning_rate": "1e-3", "train.batch_size": "4",
    })
    results = run_study(cfg, tmp_path / "study", progress=False)
    assert (tmp_path / "study" / "report.html").read_text().startswith("<!doctype html>")
    saved = json.loads((tmp_path / "study" / "results.json").read_text())
    assert saved["sizes"] == {"train": 48, "dev": 8, "test": 12, "ood": 6}
    assert len(saved["findings"]) == 7
    for f in saved["findings"]:
        assert set(f) >= {"claim", "paper", "this_run", "estimate", "ci", "verdict", "rule", "detectable"}
        assert f["verdict"] in ("reproduced", "contradicted", "inconclusive")
        assert f["estimate"] is None or f["ci"][0] <= f["estimate"] <= f["ci"][1]
    assert sum(f["ci"] is not None for f in saved["findings"]) >= 6  # every finding but, maybe, a degenerate one
    assert saved["schema_version"] == 2 and saved["bootstrap"]["replicates"] > 0
    # the per-question outputs the findings were computed from stay in the run directories
    run = tmp_path / "study" / "runs" / "seed0" / "D_50"
    answers = [json.loads(line) for line in (run / "predictions" / "epoch1.jsonl").read_text().splitlines()]
    assert {a["part"] for a in answers} == {"dev", "test", "ood"} and len([a for a in answers if a["part"] == "test"]) == 12
    assert len((run / "predictions" / "fit_epoch2.jsonl").read_text().splitlines()) == 4
    assert "outcomes" not in saved["runs"]["seed0"]["D_50"]
    # rerunning on the finished directory rebuilds results.json and the report from the stored outputs
    (tmp_path / "study" / "results.json").unlink()
    again = run_study(cfg, tmp_path / "study", progress=False)
    assert [f["ci"] for f in again["findings"]] == [f["ci"] for f in saved["findings"]]
    assert set(saved["runs"]["seed0"]) >= {"D_0", "D_100", "D_Natural", "D_IDK"}
    assert results["aggregate"]["linear_model"]["test"]["pooled"]["n_points"] > 0
