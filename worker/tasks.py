"""Celery tasks and worker-process set-up. Tasks stay thin: parse, delegate, report.

Per process (after fork): one engine (model loaded once), one database engine, one
sweeper thread, and torch's thread count set from the worker's concurrency and the
cores this process may use, so processes do not oversubscribe the CPU.
"""

from __future__ import annotations

import logging
import os
import threading

from celery import signals

from docqa.worker.app import TASK_NAME, app, send_jobs
from docqa.core.message import JobMessage

log = logging.getLogger(__name__)

_runtime = None
_runtime_pid = None
_concurrency = 1


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def torch_threads(concurrency: int, cores: int | None = None, override: int | None = None) -> int:
    """Intra-op threads per worker process: the cores shared out, at least one.

    `override` (Settings.torch_threads) wins when given.
    """
    if override is not None:
        return max(1, override)
    cores = usable_cores() if cores is None else cores
    return max(1, cores // max(1, concurrency))


class Runtime:
    """What one worker process holds: settings, engine, repository, runner, sweeper."""

    def __init__(self, settings) -> None:
        import torch

        from docqa.storage.db import ensure_schema, make_engine, session_factory
        from docqa.storage.repository import Repository
        from docqa.worker.engine import Engine
        from docqa.worker.runner import JobRunner

        self.settings = settings
        threads = torch_threads(_concurrency, override=settings.torch_threads)
        torch.set_num_threads(threads)
        db = make_engine(settings.database_url)
        ensure_schema(db)
        self.repo = Repository(session_factory(db))
        self.engine = Engine.from_settings(settings).warm_up()
        self.runner = JobRunner.from_settings(self.repo, self.engine, settings)
        log.info(
            "docqa worker process %s ready: model %s on %s, %d torch threads, %d tokens a forward",
            os.getpid(), self.engine.model_label, self.engine.device, threads, self.engine.batch_tokens,
        )
        self._stop = threading.Event()
        self._sweeper = threading.Thread(target=self._sweep_forever, name="docqa-sweeper", daemon=True)
        self._sweeper.start()

    def sweep(self) -> list[int]:
        """Requeue jobs whose lease ran out (their worker died); fail those out of attempts."""
        from docqa.worker.runner import dead_local_workers

        dead = dead_local_workers(self.repo.running_workers())
        ids = self.repo.requeue_expired(max_attempts=self.settings.max_attempts, dead_workers=dead)
        chunk = self.settings.worker_batch_jobs
        for i in range(0, len(ids), chunk):
            send_jobs(app, ids[i : i + chunk], self.settings.queue)
        if ids:
            log.warning("requeued %d job(s) whose lease ran out: %s", len(ids), ids[:20])
        return ids

    def _sweep_forever(self) -> None:
        interval = max(1.0, self.settings.lease_seconds / 4)
        while not self._stop.wait(interval):
            try:
                self.sweep()
            except Exception:  # a sweep that fails (database away) is tried again next time
                log.exception("sweeper pass failed")


def runtime() -> Runtime:
    """This process's runtime, created on first use after fork."""
    global _runtime, _runtime_pid
    if _runtime is None or _runtime_pid != os.getpid():
        _runtime = Runtime(app.docqa_settings)
        _runtime_pid = os.getpid()
    return _runtime


@signals.worker_init.connect
def _remember_concurrency(sender=None, **_kwargs) -> None:
    global _concurrency
    _concurrency = int(getattr(sender, "concurrency", 1) or 1)


@signals.worker_process_init.connect
def _load_in_child(**_kwargs) -> None:
    runtime()  # load the model when the pool process starts, not on its first message


@signals.worker_ready.connect
def _load_in_solo(sender=None, **_kwargs) -> None:
    pool = getattr(sender, "pool_cls", None)
    name = getattr(pool, "__module__", "") if pool is not None else ""
    if "solo" in name or "thread" in name:
        runtime()


@app.task(name=TASK_NAME, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_jobs(message: dict) -> dict:
    msg = JobMessage.model_validate(message)
    stats = runtime().runner.run(msg.job_ids)
    log.info(
        "docqa run: message jobs %s: claimed %d, done %d, failed %d, answers %d, skipped %d, "
        "windows %d in %d forwards",
        msg.job_ids[:5], stats.claimed, stats.done, stats.failed, stats.answers, len(stats.skipped),
        stats.windows, stats.forwards,
    )
    return {"done": stats.done, "failed": stats.failed}
