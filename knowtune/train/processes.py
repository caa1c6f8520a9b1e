"""Training under `accelerate launch`: every process trains its share of each batch (DDP, FSDP or
DeepSpeed, from the user's accelerate config), and only the main one evaluates and writes files,
while the others wait at a barrier. Without `accelerate launch` there is one process, the main one."""

from __future__ import annotations

import os
from datetime import timedelta

import torch
from accelerate import PartialState

from knowtune.errors import ConfigError

# The other processes wait at a barrier while the main one computes an epoch's metrics (a test set
# with a 7B model can take an hour); torch's default of 30 minutes would end such a run.
BARRIER_TIMEOUT = timedelta(hours=6)


def use_cpu() -> bool:
    """Train on the CPU: no GPU here, or `accelerate launch --cpu` (which sets ACCELERATE_USE_CPU)."""
    return not torch.cuda.is_available() or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")


def process_state() -> PartialState:
    """This process's rank among those `accelerate launch` started, joining their process group on first use."""
    return PartialState(cpu=use_cpu(), timeout=BARRIER_TIMEOUT)


def per_device_batch(batch_size: int, processes: int) -> int:
    """Each process's share of `batch_size`, so that an optimizer step takes the same examples
    (batch_size × gradient_accumulation_steps) whatever the number of processes; refused when it
    does not divide evenly."""
    if batch_size % processes:
        raise ConfigError(f"training settings: key 'batch_size': {batch_size} examples per step cannot be split evenly "
                          f"over {processes} processes (accelerate launch --num_processes {processes}); "
                          f"use a multiple of {processes} or a number of processes that divides {batch_size}")
    return batch_size // processes
