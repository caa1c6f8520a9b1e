"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import multiprocessing as mp


def run_in_process(target, args) -> dict:
    """Run `target(args, queue)` in a fresh spawned process (its own peak RSS) and return what it puts."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result
