"""Processes that start their work at one moment, as several workers or commands starting
on one store do (processes, not threads: Alembic and SQLite's file locks are per process)."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable


def exit_codes(target: Callable, args: tuple, n: int = 4, timeout: float = 60, *,
               numbered: bool = False) -> list[int | None]:
    """Fork `n` processes running `target(*args, start)` (numbered: `target(*args, i, start)`
    with i = 0 .. n-1), where `start` is an Event each waits on; set it once all have
    started and return their exit codes."""
    context = multiprocessing.get_context("fork")
    start = context.Event()
    procs = [context.Process(target=target, args=(*args, *((i,) if numbered else ()), start)) for i in range(n)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(timeout)
    return [p.exitcode for p in procs]
