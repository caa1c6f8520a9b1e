"""`knowtune train` under `accelerate launch`: two processes (DDP over gloo on the CPU) train the run one
process trains, write one metrics.jsonl and one run directory; the shipped accelerate configs load."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_tiny_model
from safetensors.torch import load_file

from knowtune.errors import ConfigError
from knowtune.train.processes import (
    check_launch,
    per_device_batch,
    warn_one_cpu_process,
)

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = ["--set", "epochs=2", "--set", "batch_size=8", "--set", "learning_rate=3e-3"]  # 40 examples: 5 steps an epoch
# Two processes sum their gradients in another order than one process summing one batch: float32
# rounding (~1e-7 relative) that Adam's normalised steps carry through 10 steps. Measured here: 1e-6 at
# most. 1e-4 is a thirtieth of one Adam step (lr 3e-3), while the weights move by 3e-2 and a run with
# another global batch ends 5e-2 away (checked below, so the tolerance tells the two apart).
ATOL = 1e-4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(processes: int, args: list[str], tmp_path: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """`accelerate launch --multi_gpu --num_processes N -m knowtune ARGS` on the CPU: torchrun starts the N
    processes (accelerate's --cpu starts one unless given mpirun) and no GPU is visible, so they use gloo."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "HF_HOME": str(tmp_path / "hf"),  # no accelerate default_config.yaml of the user's
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), **(env or {})}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(free_port()), "-m", "knowtune", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "convergence" / "model.safetensors")


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_two_processes_train_what_one_trains(tiny_workdir, cli, tmp_path):
    w = tiny_workdir
    common = ["train", "--model", str(w / "model"), "--train", str(w / "train.jsonl"), "--dev", str(w / "dev.jsonl")]
    two = tmp_path / "two"
    res = launch(2, [*common, "--out", str(two), *SETTINGS], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("EARLY_STOP epoch") == 1  # printed by the main process alone
    assert json.loads((two / "train_config.json").read_text())["processes"] == 2
    assert sorted(p.name for p in two.iterdir()) == ["convergence", "early_stop", "metrics.jsonl", "predictions", "result.json",
                                                  "train_config.json"]
    rows = [json.loads(line) for line in (two / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and all("dev_accuracy" in r for r in rows)

    one = tmp_path / "one"
    assert cli(*common, "--out", str(one), *SETTINGS)[0] == 0
    one_rows = [json.loads(line) for line in (one / "metrics.jsonl").read_text().splitlines()]
    for a, b in zip(one_rows, rows, strict=True):  # the same steps: the same loss, fit and accuracy
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert (a["fit_by_group"], a["dev_accuracy"]) == (b["fit_by_group"], b["dev_accuracy"])
    base = load_file(w / "model" / "model.safetensors")
    assert max_difference(weights(one), base) > 100 * ATOL
    assert max_difference(weights(one), weights(two)) < ATOL

    other = tmp_path / "other"  # another global batch: outside the tolerance
    assert cli(*common, "--out", str(other), "--set", "epochs=2", "--set", "batch_size=4", "--set", "learning_rate=3e-3")[0] == 0
    assert max_difference(weights(other), weights(two)) > 100 * ATOL


def test_a_run_killed_in_one_process_resumes_in_two(tiny_workdir, cli, tmp_path):
    from knowtune.models import load_model
    from knowtune.train.examples import read_examples
    from knowtune.train.sft_config import SFTConfig
    from knowtune.train.sft_trainer import train_sft

    w = tiny_workdir
    common = ["train", "--model", str(w / "model"), "--train", str(w / "train.jsonl")]

    def die_in_epoch_2(model, epoch):
        if epoch == 2:
            raise KeyboardInterrupt  # stands in for a kill after epoch 1's checkpoint
        return {}

    killed = tmp_path / "killed"
    lm = load_model(str(w / "model"))
    cfg = SFTConfig(epochs=2, batch_size=8, learning_rate=3e-3)  # what SETTINGS say
    with pytest.raises(KeyboardInterrupt):
        # the same base model as the command records, so the resume guard sees the same run
        train_sft(lm.model, lm.tokenizer, read_examples(w / "train.jsonl"), cfg, killed, die_in_epoch_2, progress=False,
                  meta={"provenance": {"model": lm.fingerprint}})
    assert (killed / "checkpoints" / "checkpoint-5").exists()
    res = launch(2, [*common, "--out", str(killed), *SETTINGS], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resuming from the checkpoint of epoch 1 of 2" in res.stderr
    assert [json.loads(line)["epoch"] for line in (killed / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert json.loads((killed / "train_config.json").read_text())["processes"] == 1  # written once, by the first run
    whole = tmp_path / "whole"
    assert cli(*common, "--out", str(whole), *SETTINGS)[0] == 0
    assert max_difference(weights(whole), weights(killed)) < ATOL


def test_a_study_trains_under_two_processes(tiny_tokenizer, tmp_path):
    """The new-knowledge study's probe runs once (the main process first, the others read its cache), every
    training run writes its directory once, and the findings are printed once."""
    from studies.new_knowledge.test_study import write_dataset

    from knowtune.data.formats import qa_prompt
    from knowtune.train.examples import SFTExample
    from knowtune.train.sft_config import SFTConfig
    from knowtune.train.sft_trainer import train_sft

    rows = write_dataset(tmp_path / "qa.jsonl")
    model = make_tiny_model(tiny_tokenizer, seed=0)  # taught half the facts, so that there are Known and Unknown ones
    taught = [SFTExample(r["id"], qa_prompt(r["question"]), f" {r['answers'][0]}\n") for r in rows if int(r["id"][-1]) % 2 == 0]
    train_sft(model, tiny_tokenizer, taught, SFTConfig(epochs=40, learning_rate=3e-3, batch_size=8, checkpoint_every_epoch=False,
              save_weights=False), tmp_path / "teach", progress=False)
    model.save_pretrained(tmp_path / "model")
    tiny_tokenizer.save_pretrained(tmp_path / "model")
    settings = {"model": tmp_path / "model", "data": tmp_path / "qa.jsonl", "relations": "[cap,sym]", "ood_relations": "[lang]",
                "train_pool": "null", "dev_size": "null", "test_size": "null", "ood_test_size": "null", "size": 4, "seeds": "[0]",
                "probe.n_exemplar_sets": 2, "probe.n_samples": 8, "probe.temperature": 1.5, "probe.max_new_tokens": 4,
                "train.epochs": 2, "train.learning_rate": 1e-3, "train.batch_size": 4}
    args = ["study", "new-knowledge", "--out", str(tmp_path / "study")] + [f"--set={k}={v}" for k, v in settings.items()]
    res = launch(2, args, tmp_path, {"KNOWTUNE_CACHE": str(tmp_path / "cache")})
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("report: ") == 1
    [probe] = (tmp_path / "cache" / "probes").glob("*/probe.jsonl")
    ids = [json.loads(line)["id"] for line in probe.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 74  # every question probed once: 48 train, 8 dev, 12 test, 6 OOD
    runs = sorted((tmp_path / "study" / "runs" / "seed0").iterdir())
    assert len(runs) == 13
    for run in runs:
        assert json.loads((run / "train_config.json").read_text())["processes"] == 2
        assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_a_batch_that_does_not_split_over_the_processes_is_refused(tmp_path):
    assert per_device_batch(16, 4) == 4 and per_device_batch(16, 1) == 16
    with pytest.raises(ConfigError, match=r"key 'batch_size': 6 examples per step cannot be split evenly over 4 processes "
                                          r"\(accelerate launch --num_processes 4\); use a multiple of 4"):
        per_device_batch(6, 4)


@pytest.mark.parametrize("env, expect", [
    ({"ACCELERATE_USE_FSDP": "true"}, "FSDP and DeepSpeed ZeRO-3 shard the model over the processes"),
    ({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}, "FSDP and DeepSpeed ZeRO-3 shard"),
    ({"ACCELERATE_MIXED_PRECISION": "fp16"}, "mixed_precision 'fp16' differs from the training settings (bf16=False)"),
], ids=["fsdp", "zero3", "fp16"])
def test_what_the_trainer_cannot_honour_is_refused(env, expect, monkeypatch):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError, match=re.escape(expect)):
        check_launch(bf16=False)


def test_what_the_trainer_honours_passes(monkeypatch, tmp_path):
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    check_launch(bf16=True)
    ds = tmp_path / "ds.json"
    ds.write_text(json.dumps({"zero_optimization": {"stage": 2}}))
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", str(ds))
    check_launch(bf16=True)  # ZeRO-2 keeps the whole model on every process
    ds.write_text(json.dumps({"zero_optimization": {"stage": 3}}))
    with pytest.raises(ConfigError, match="ZeRO-3"):
        check_launch(bf16=True)


def test_an_uneven_last_batch_under_several_processes_is_said(capsys):
    from knowtune.train.sft_config import SFTConfig
    from knowtune.train.sft_trainer import _warn_uneven_last_step

    for n, processes in ((40, 2), (42, 1)):  # whole batches, or one process: the same steps as one process
        _warn_uneven_last_step(n, SFTConfig(batch_size=8), processes)
    assert capsys.readouterr().err == ""
    _warn_uneven_last_step(42, SFTConfig(batch_size=8), 2)
    assert "(42 examples) is not a multiple of batch_size 8: under 2 processes each epoch's last batch is filled up with 6" \
        in capsys.readouterr().err


def test_one_cpu_process_where_several_were_asked_is_said(monkeypatch, capsys):
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    warn_one_cpu_process(1)  # `accelerate launch --cpu` of one process: nothing to say
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")  # what accelerate sets when asked for --num_processes 2
    warn_one_cpu_process(1)
    assert "knowtune: warning: accelerate launch --cpu started one process only" in capsys.readouterr().err


@pytest.mark.parametrize("config", sorted((ROOT / "examples" / "accelerate").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_accelerate_configs_load(config):
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(config))
    assert cfg.compute_environment.value == "LOCAL_MACHINE" and cfg.num_processes >= 1
