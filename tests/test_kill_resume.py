"""Kill and resume: `knowtune probe` and `knowtune train` run as subprocesses, are killed with SIGKILL
at random points (fixed seeds) and re-run; the final outputs must equal an uninterrupted run's, no
completed work may be redone, and no output may ever be seen half-written."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

CLI = [sys.executable, "-c", "from knowtune.cli import main; main()"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
def complete_lines(path: Path) -> list[dict]:
    """The records a reader may use: every newline-terminated line, each of which must parse."""
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines() if line.strip()]


def assert_nothing_half_written(out: Path) -> None:
    """Every JSON output that a later run reads parses. Exempt: hidden temp files, and a checkpoint
    folder the Trainer was still writing (no whole trainer_state.json), which resume discards."""
    for path in out.rglob("*.json"):
        rel = path.relative_to(out).parts
        if any(part.startswith(".") for part in rel):
            continue
        if rel[0] == "checkpoints" and checkpoint_epoch_of(out / rel[0] / rel[1]) is None:
            continue
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise AssertionError(f"{path} is half-written: {e}") from None


def checkpoint_epoch_of(folder: Path) -> int | None:
    """The epoch of a checkpoint folder whose trainer_state.json is whole, else None."""
    try:
        return round(json.loads((folder / "trainer_state.json").read_text())["epoch"])
    except (OSError, ValueError):
        return None


def run_until(args: list[str], kill_when, delay: float = 0.0, timeout: float = 300) -> tuple[bool, str]:
    """Run the CLI; SIGKILL it `delay` s after `kill_when()` first holds. Returns (killed, stderr)."""
    proc = subprocess.Popen(CLI + args, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if kill_when():
            time.sleep(delay)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return True, proc.stderr.read()
            break
        time.sleep(0.001)
    _, err = proc.communicate(timeout=max(deadline - time.monotonic(), 1))
    assert proc.returncode == 0, err
    return False, err


def finish(args: list[str]) -> str:
    """Run the CLI to the end and return its stderr."""
    done = subprocess.run(CLI + args, env=ENV, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    return done.stderr


def reference_run(template: list[str], workdir: Path, tmp_path: Path) -> tuple[list[str], Path, Path]:
    """The command's arguments, and the output folders of an uninterrupted run (done now) and of the killed one."""
    args = [a.format(w=workdir) for a in template] + ["--model", str(workdir / "model")]
    finish(args + ["--out", str(tmp_path / "ref")])
    return args, tmp_path / "ref", tmp_path / "killed"


def kill_chain(args: list[str], out: Path, durable, triggers, rng: random.Random, resume_message) -> list[str]:
    """Run `args` again and again, each run killed by a trigger drawn from `triggers`, until one run
    finishes. Each restart must report resuming from exactly the work that was durable at the kill
    (`durable()`): nothing completed is redone. Returns the names of the kill points that fired."""
    fired, expected = [], 0
    while True:
        name, make_condition, delay = rng.choice(triggers)
        condition = make_condition()
        killed, err = run_until(args, condition, delay=rng.uniform(0, delay))
        if expected:
            assert resume_message(expected) in err, err
        else:
            assert "resuming" not in err, err
        if not killed:
            return fired
        fired.append(name)
        assert_nothing_half_written(out)
        expected = durable()


PROBE_ARGS = ["probe", "--data", "{w}/qa.jsonl", "--preset", "quick", "--split", "test", "--batch-size", "4",
              "--chunk-size", "16", "--set", "max_new_tokens=8"]


@pytest.mark.parametrize("seed", [0, 1])
def test_killed_probe_resumes_to_identical_records(tiny_workdir, tmp_path, seed):
    args, ref, out = reference_run(PROBE_ARGS, tiny_workdir, tmp_path)
    records = out / "probe.jsonl"

    def count() -> int:
        return len(complete_lines(records))

    def after(n: int):
        def make():
            target = count() + n
            return lambda: count() >= target
        return make

    triggers = [("after 1 more chunk", after(1), 0.0), ("mid-chunk", after(1), 0.4), ("after 2 more chunks", after(17), 0.2)]
    fired = kill_chain(args + ["--out", str(out)], out, count, triggers, random.Random(seed),
                       lambda n: f"resuming, {n} of 80 questions already probed")
    print(f"kill points: {fired}")
    assert len(fired) >= 3, fired
    final = complete_lines(records)
    assert len(final) == len({r["id"] for r in final}) == 80  # each question probed exactly once
    assert {r["id"]: r for r in final} == {r["id"]: r for r in complete_lines(ref / "probe.jsonl")}
    assert json.loads((out / "summary.json").read_text()) == json.loads((ref / "summary.json").read_text())
    assert not list(out.glob(".*.tmp"))


TRAIN_ARGS = ["train", "--train", "{w}/train.jsonl", "--dev", "{w}/dev.jsonl", "--test", "{w}/test.jsonl",
              "--set", "epochs=4", "--set", "batch_size=4", "--set", "learning_rate=3e-3", "--set", "eval_batch_size=8"]


def checkpoint_epoch(out: Path) -> int:
    """The epoch of the newest complete checkpoint, else 0."""
    return max([e for f in (out / "checkpoints").glob("checkpoint-*") if (e := checkpoint_epoch_of(f)) is not None], default=0)


@pytest.mark.parametrize("seed", [0, 1])
def test_killed_training_resumes_to_identical_metrics(tiny_workdir, tmp_path, seed):
    args, ref, out = reference_run(TRAIN_ARGS, tiny_workdir, tmp_path)
    metrics = out / "metrics.jsonl"

    def next_epoch():
        target = len(complete_lines(metrics)) + 1
        return lambda: len(complete_lines(metrics)) >= target

    def mid_save():
        done = {p.name for p in (out / "checkpoints").glob("checkpoint-*")}
        return lambda: any(p.name not in done and not (p / "trainer_state.json").exists()
                           for p in (out / "checkpoints").glob("checkpoint-*"))

    triggers = [("right after an epoch's metrics", next_epoch, 0.0), ("while a checkpoint is written", mid_save, 0.0),
                ("during the next epoch", next_epoch, 0.6)]
    fired = kill_chain(args + ["--out", str(out)], out, lambda: checkpoint_epoch(out), triggers, random.Random(seed),
                       lambda e: f"resuming from the checkpoint of epoch {e} of 4")
    print(f"kill points: {fired}")
    assert len(fired) >= 3, fired
    got, want = complete_lines(metrics), complete_lines(ref / "metrics.jsonl")
    assert [m["epoch"] for m in got] == list(range(1, 5))
    for a, b in zip(got, want):
        assert a["fit_by_group"] == b["fit_by_group"] and a["dev_accuracy"] == b["dev_accuracy"]
        assert a["test"] == b["test"]
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
    assert json.loads((out / "result.json").read_text())["early_stop_epoch"] == json.loads((ref / "result.json").read_text())["early_stop_epoch"]
    assert not list(out.glob(".*.tmp")) and not (out / "checkpoints").exists()
