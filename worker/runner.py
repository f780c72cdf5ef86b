"""Running claimed jobs: the part of a worker that is the same in embedded and Celery mode.

A run claims its jobs in SQL (so a job runs under one lease at a time), answers all of
them in one engine call (their windows share forward batches), and writes each job's
answers or its failure. The SQL job table is the source of truth: a job whose run is
cut short (worker killed) keeps its lease until the sweeper hands it out again.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from docqa.storage.errors import NotFound
from docqa.worker.heartbeat import Heartbeat

if TYPE_CHECKING:  # the engine (numpy, the tokenizer) loads only when there is work to answer
    from docqa.worker.engine import Engine, QAResult

log = logging.getLogger(__name__)


def worker_name() -> str:
    """'host:pid': stored with each job a process claims."""
    return f"{socket.gethostname()}:{os.getpid()}"


def dead_local_workers(names) -> list[str]:
    """The worker names of this host whose process no longer exists.

    Their jobs need not wait for the lease to run out: nobody is working on them.
    """
    host = socket.gethostname()
    dead = []
    for name in names:
        h, _, pid = name.rpartition(":")
        if h != host or not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            dead.append(name)
        except PermissionError:  # alive, owned by someone else
            pass
    return dead


@dataclass
class RunStats:
    claimed: int = 0
    done: int = 0
    failed: int = 0
    answers: int = 0
    forwards: int = 0  # model forward calls this run made (its jobs' windows share them)
    windows: int = 0
    skipped: list[int] = field(default_factory=list)  # not claimable: done, failed, or leased elsewhere


class JobRunner:
    """Claims, answers and records jobs with one engine and one repository."""

    def __init__(
        self,
        repo,
        engine: Engine,
        *,
        lease_seconds: float,
        max_jobs: int = 64,
        max_attempts: int | None = None,
        name: str | None = None,
    ):
        self.repo = repo
        self.max_attempts = max_attempts
        self.engine = engine
        self.lease_seconds = lease_seconds
        self.max_jobs = max_jobs
        self.name = name if name is not None else worker_name()

    @classmethod
    def from_settings(cls, repo, engine: Engine, settings) -> "JobRunner":
        """A runner with the lease, batch size and attempts of `settings`."""
        return cls(
            repo,
            engine,
            lease_seconds=settings.lease_seconds,
            max_jobs=settings.worker_batch_jobs,
            max_attempts=settings.max_attempts,
        )

    def run(self, job_ids: list[int], *, fill: bool = True) -> RunStats:
        """Run the given jobs; with `fill`, top the batch up with other queued jobs of this model.

        Filling is what lets single-job messages share forwards: while one batch runs,
        newly queued jobs wait in SQL and the next run takes them all. Their own
        messages, when they arrive, find them done and are acknowledged.
        """
        stats = RunStats()
        claimed = self.repo.claim(
            job_ids, worker=self.name, lease_seconds=self.lease_seconds, max_attempts=self.max_attempts
        )
        got = {c.job_id for c in claimed}
        stats.skipped = [j for j in job_ids if j not in got]
        if fill and len(claimed) < self.max_jobs:
            claimed += self.repo.claim_queued(
                limit=self.max_jobs - len(claimed),
                model=self.engine.model_id,
                revision=self.engine.revision or "",
                worker=self.name,
                lease_seconds=self.lease_seconds,
                max_attempts=self.max_attempts,
            )
        stats.claimed = len(claimed)
        runnable = []
        for job in claimed:
            if job.model != self.engine.model_id or (job.revision or "") != (self.engine.revision or ""):
                self.repo.fail(
                    job.job_id,
                    f"this job asks for model {job.model!r}"
                    f"{' revision ' + repr(job.revision) if job.revision else ''}, but the worker that "
                    f"took it serves {self.engine.model_label!r}: run a worker with --model {job.model}",
                )
                stats.failed += 1
            else:
                runnable.append(job)
        forwards, windows = self.engine.forward_calls, self.engine.windows_run
        # Leases are renewed while the batch computes, so a batch slower than one lease
        # is not taken back and run twice.
        with Heartbeat(
            self.repo, worker=self.name, job_ids=[j.job_id for j in runnable], lease_seconds=self.lease_seconds
        ):
            answered = self._answer(runnable) if runnable else []
            stats.forwards = self.engine.forward_calls - forwards
            stats.windows = self.engine.windows_run - windows
            done = [(job.job_id, result.answers) for job, result in zip(runnable, answered) if result.ok]
            # One transaction for the whole batch's answers; a job whose answers the store
            # refuses (offset contract, NaN score) fails alone with the reason.
            refused = self.repo.complete_many(done, model_label=self.engine.model_label) if done else {}
        for job, result in zip(runnable, answered):
            if not result.ok:
                self.repo.fail(job.job_id, result.error)
                stats.failed += 1
            elif job.job_id in refused:
                error = refused[job.job_id]
                if isinstance(error, NotFound):  # deleted while it ran: nothing left to mark
                    log.warning("job %s disappeared while it ran; its answers were dropped", job.job_id)
                else:
                    self.repo.fail(job.job_id, f"answers could not be stored: {error}")
                stats.failed += 1
            else:
                stats.done += 1
                stats.answers += len(result.answers)
        return stats

    def _answer(self, jobs) -> list[QAResult]:
        """Answer all jobs together; if the shared run breaks, isolate the job that breaks it."""
        from docqa.worker.engine import QAItem, QAResult

        items = [QAItem(j.text, j.question, j.params) for j in jobs]
        try:
            return self.engine.run(items)
        except Exception:
            log.exception("a batch of %d jobs failed; running them one by one to find the cause", len(items))
        results = []
        for item in items:
            try:
                results.append(self.engine.run([item])[0])
            except Exception as exc:  # one job's failure must not take the others down
                results.append(QAResult(error=f"the model failed on this job: {type(exc).__name__}: {exc}"))
        return results
