"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import multiprocessing as mp
from queue import Empty


def run_in_process(target, args) -> dict:
    """Run `target(args, queue)` in a fresh spawned process (its own peak RSS) and return what it puts."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(args, queue))
    proc.start()
    while True:  # a child that dies (an exception, the OOM killer) never puts: fail instead of waiting forever
        try:
            result = queue.get(timeout=5)
            break
        except Empty:
            if not proc.is_alive():
                try:  # it may have put just before exiting
                    result = queue.get(timeout=1)
                    break
                except Empty:
                    raise RuntimeError(f"{target.__name__} exited with code {proc.exitcode} before returning a result") from None
    proc.join()
    return result
