"""Training under `accelerate launch`: every process trains its share of each batch (DDP, or DeepSpeed
ZeRO-1/2, from the user's accelerate config), and only the main one evaluates and writes files, while
the others wait at a barrier. Without `accelerate launch` there is one process, the main one."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import torch
from accelerate import PartialState

from knowtune.errors import ConfigError
from knowtune.provenance import warn

# The other processes wait at a barrier while the main one computes an epoch's metrics (a test set
# with a 7B model can take an hour); torch's default of 30 minutes would end such a run.
BARRIER_TIMEOUT = timedelta(hours=6)


def use_cpu() -> bool:
    """Train on the CPU: no GPU here, or `accelerate launch --cpu` (which sets ACCELERATE_USE_CPU)."""
    return not torch.cuda.is_available() or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")


def process_state() -> PartialState:
    """This process's rank among those `accelerate launch` started, joining their process group on first use."""
    return PartialState(cpu=use_cpu(), timeout=BARRIER_TIMEOUT)


def warn_one_cpu_process(processes: int) -> None:
    """Say so when `accelerate launch --cpu --num_processes N` started this one process alone: accelerate
    runs several CPU processes only through mpirun (--mpirun_hostfile) and otherwise starts one, with
    MASTER_ADDR set for the N it was asked for; torchrun (--multi_gpu) runs them on a machine without GPUs."""
    if processes == 1 and os.environ.get("ACCELERATE_USE_CPU", "").lower() == "true" and "MASTER_ADDR" in os.environ:
        warn("accelerate launch --cpu started one process only (several CPU processes need --mpirun_hostfile); "
             "on a machine without GPUs, `accelerate launch --multi_gpu --num_processes N` starts N")


def _zero_stage() -> int | None:
    """The DeepSpeed ZeRO stage `accelerate launch` passes on: from its config, or the DeepSpeed JSON it names."""
    if stage := os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE"):
        return int(stage)
    if path := os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE"):
        return json.loads(Path(path).read_text(encoding="utf-8")).get("zero_optimization", {}).get("stage")
    return None


def check_launch(bf16: bool) -> None:
    """Refuse what an accelerate config asks for that this trainer cannot honour or would not record:
    parameters sharded over the processes (FSDP, DeepSpeed ZeRO-3), since the per-epoch metrics run the
    whole model on the main process alone, and a mixed precision the training settings do not say."""
    env = os.environ.get
    if env("ACCELERATE_USE_FSDP", "").lower() == "true" or (env("ACCELERATE_USE_DEEPSPEED", "").lower() == "true" and _zero_stage() == 3):
        raise ConfigError("accelerate config: FSDP and DeepSpeed ZeRO-3 shard the model over the processes, but knowtune "
                          "computes each epoch's metrics on the whole model in the main process; use DDP or ZeRO-1/2")
    precision = env("ACCELERATE_MIXED_PRECISION", "no")
    if precision not in ("no", "bf16" if bf16 else "no"):
        raise ConfigError(f"accelerate config: mixed_precision {precision!r} differs from the training settings (bf16={bf16}); "
                          f"set mixed_precision: 'no' there and --set bf16=true here for bf16")


def per_device_batch(batch_size: int, processes: int) -> int:
    """Each process's share of `batch_size`, so that an optimizer step takes the same examples
    (batch_size × gradient_accumulation_steps) whatever the number of processes; refused when it
    does not divide evenly."""
    if batch_size % processes:
        raise ConfigError(f"training settings: key 'batch_size': {batch_size} examples per step cannot be split evenly "
                          f"over {processes} processes (accelerate launch --num_processes {processes}); "
                          f"use a multiple of {processes} or a number of processes that divides {batch_size}")
    return batch_size // processes
