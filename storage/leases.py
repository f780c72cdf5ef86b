"""Leases: the state machine that hands jobs to workers and takes them back.

queued -> running (claimed under a lease: worker name + leased_until) -> done | failed,
and running -> queued again when the lease runs out (the sweeper) or its worker is known
to be gone. Claims are exclusive: PostgreSQL locks candidate rows with `FOR UPDATE SKIP
LOCKED` in id order (no deadlocks, no double claims); SQLite write transactions run one
at a time. A job that used up `max_attempts` is failed with the reason instead of run
again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, false, or_, select, update
from sqlalchemy.orm import Session

from docqa.core.params import AnswerParams
from docqa.storage.columns import utcnow
from docqa.storage.models import Job, JobStatus, TextRow
from docqa.storage.parts import fail_parents_of
from docqa.storage.records import ClaimedJob
from docqa.storage.transactions import Transactions, chunks


def give_up_message(attempts: int, worker: str | None) -> str:
    """Why a job that kept losing its worker was marked failed.

    After its first loss a job runs alone (see `claim(fresh_only=...)`), so a job lost
    more than once took its worker down by itself.
    """
    alone = " (alone, after the first time: this job itself brings its worker down)" if attempts > 1 else ""
    return (
        f"gave up after {attempts} attempts: the worker process died or stopped renewing its "
        f"lease while running this job each time{alone} (last worker: "
        f"{worker if worker is not None else 'unknown'}); check that worker's log for a crash or an "
        "out-of-memory kill, e.g. a document too large for the worker's memory"
    )


def evidence(attempts: int, lost_in_batch: bool) -> int:
    """The losses that count against a job: its attempts, less a first one lost in a batch
    (a batch dies for any of its jobs, or for none: a killed or restarted worker). A job
    is failed as a worker-killer when this reaches max_attempts; after its first loss it
    runs alone, so every later loss is its own."""
    return attempts - (1 if lost_in_batch else 0)


def _within(candidates: Sequence[Any], max_windows: int, fit: bool = False) -> list[Any]:
    """The first candidates whose windows add up to at most `max_windows` (the first one
    whatever its size, unless `fit`)."""
    taken: list[Any] = []
    total = 0
    for row in candidates:
        n = row.n_windows or 1
        if (taken or fit) and total + n > max_windows:
            break
        taken.append(row)
        total += n
    return taken


def _lease_end(now: datetime | None, lease_seconds: float) -> tuple[datetime, datetime]:
    """(now, now + lease_seconds), now defaulting to the current UTC time."""
    if not lease_seconds > 0:
        raise ValueError(f"lease_seconds must be positive, got {lease_seconds!r}")
    start = utcnow() if now is None else now
    return start, start + timedelta(seconds=lease_seconds)


def _out_of_attempts(candidates: Sequence[Any], max_attempts: int | None) -> list[Any]:
    """The candidates whose `evidence` reached `max_attempts` (none without a maximum)."""
    if max_attempts is None:
        return []
    return [row for row in candidates if evidence(row.attempts, row.lost_in_batch) >= max_attempts]


def _mark_running(session: Session, ids: Sequence[int], *, worker: str, now: datetime, until: datetime) -> None:
    """Jobs `ids` become running under `worker` until `until`, one more attempt each."""
    for chunk in chunks(ids):
        session.execute(
            update(Job)
            .where(Job.id.in_(chunk))
            .values(
                status=JobStatus.RUNNING,
                attempts=Job.attempts + 1,
                worker=worker,
                started_at=now,
                leased_until=until,
                finished_at=None,
                error=None,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )


def _claimed_rows(session: Session, ids: Sequence[int]) -> list[Any]:
    """The columns a ClaimedJob needs of jobs `ids` (text not included)."""
    jobs: list[Any] = []
    for chunk in chunks(ids):
        jobs.extend(
            session.execute(
                select(Job.id, Job.text_id, Job.question, Job.model, Job.revision, Job.params, Job.attempts,
                       Job.n_windows, Job.parent_id, Job.window_start, Job.window_end).where(Job.id.in_(chunk))
            ).all()
        )
    return jobs


def _claimed_texts(session: Session, text_ids: Sequence[int]) -> dict[int, tuple[str, str]]:
    """text id -> (sha256, text): one copy of each text, however many of its jobs are claimed."""
    texts: dict[int, tuple[str, str]] = {}
    for chunk in chunks(text_ids):
        for text_id, digest, body in session.execute(
            select(TextRow.id, TextRow.sha256, TextRow.text).where(TextRow.id.in_(chunk))
        ):
            texts[text_id] = (digest, body)
    return texts


def _claimed_job(job: Any, texts: dict[int, tuple[str, str]], params_cache: dict[str, AnswerParams]) -> ClaimedJob:
    """A claimed job row with its text; parameters parsed once per distinct JSON (in params_cache)."""
    params = params_cache.get(job.params)
    if params is None:
        params = params_cache[job.params] = AnswerParams.model_validate_json(job.params)
    digest, body = texts[job.text_id]
    return ClaimedJob(
        job_id=job.id,
        text_id=job.text_id,
        sha256=digest,
        text=body,
        question=job.question,
        model=job.model,
        revision=job.revision if job.revision != "" else None,
        params=params,
        attempts=job.attempts,
        n_windows=job.n_windows,
        parent_id=job.parent_id,
        window_start=job.window_start,
        window_end=job.window_end,
    )


def _gone(now: datetime, dead: Sequence[str], expired: bool) -> Any:
    """The sweeper's condition: lease ran out (when `expired`) or held by a `dead` worker."""
    gone = Job.leased_until < now if expired else false()
    if dead:
        gone = or_(gone, Job.worker.in_(dead))
    return gone


def _batch_first(lost: Sequence[Any]) -> list[int]:
    """Ids of the jobs lost for the first time together with others of their worker."""
    in_batch = {w for w, n in Counter(row.worker for row in lost).items() if n > 1}
    return [row.id for row in lost if row.worker in in_batch and row.attempts == 1]


def _triage(lost: Sequence[Any], max_attempts: int) -> tuple[list[int], list[Any], list[int]]:
    """The sweeper's verdicts on `lost` jobs: (ids lost first in a batch, rows out of attempts,
    ids to requeue)."""
    batch_first = _batch_first(lost)
    exhausted = [row for row in lost
                 if evidence(row.attempts, row.lost_in_batch or row.id in batch_first) >= max_attempts]
    out = {row.id for row in exhausted}
    return batch_first, exhausted, [row.id for row in lost if row.id not in out]


def _requeue(session: Session, ids: Sequence[int], batch_first: list[int], now: datetime) -> None:
    """Jobs `ids` go back to queued; those in `batch_first` are marked lost_in_batch."""
    for chunk in chunks(ids):
        session.execute(
            update(Job)
            .where(Job.id.in_(chunk))
            .values(status=JobStatus.QUEUED, leased_until=None, updated_at=now,
                    lost_in_batch=Job.lost_in_batch | Job.id.in_(batch_first))
            .execution_options(synchronize_session=False)
        )


class Leases(Transactions):
    """Claiming jobs, renewing and expiring their leases."""

    def claim(
        self,
        job_ids: Iterable[int],
        *,
        worker: str,
        lease_seconds: float,
        max_attempts: int | None = None,
        now: datetime | None = None,
        fresh_only: bool = False,
        max_windows: int | None = None,
        fit: bool = False,
    ) -> list[ClaimedJob]:
        """Take the given jobs that are free to run; return them (by job id) with their text.

        A job is free when it is queued, or running under a lease that ran out (its
        worker is presumed dead). Each claimed job becomes running under `worker` until
        now + lease_seconds, and its attempts grow by one. Jobs done, failed, running
        under a live lease, or being claimed by another transaction right now are left
        out; no two callers ever get the same job from one free state.

        With max_attempts, a free job that already had that many attempts is not run
        again but marked failed (a message redelivered after its worker died).

        With fresh_only, only jobs never claimed before (attempts 0) are taken: a job
        whose worker died holding it is a suspect, run alone so it cannot take innocent
        batch-mates down with it.

        With max_windows, only the first free jobs (by id) whose windows fit in that many
        (at least one, unless `fit`) are taken; the others stay queued.
        """
        now, until = _lease_end(now, lease_seconds)
        ids = sorted(set(job_ids))
        if not ids:
            return []
        free = or_(
            Job.status == JobStatus.QUEUED,
            and_(Job.status == JobStatus.RUNNING, Job.leased_until < now),
        )
        if fresh_only:
            free = and_(free, Job.attempts == 0)
        with self._write() as session:
            candidates: list[Any] = []
            for chunk in chunks(ids):
                candidates.extend(self._lock_free(session, and_(Job.id.in_(chunk), free)))
            if max_windows is not None:
                candidates = _within(candidates, max_windows, fit)
            return self._take(session, candidates, worker=worker, now=now, until=until, max_attempts=max_attempts)

    def claim_queued(
        self,
        *,
        limit: int,
        model: str,
        revision: str | None,
        worker: str,
        lease_seconds: float,
        max_attempts: int | None = None,
        now: datetime | None = None,
        max_windows: int | None = None,
        min_priority: int | None = None,
        fit: bool = False,
    ) -> list[ClaimedJob]:
        """Take up to `limit` fresh queued jobs of one model, oldest first (with `min_priority`:
        highest priority first), as `claim` does; with `max_windows`, only as many as fit in that many windows
        (a job without a plan counts one; the first job is taken whatever its size, unless
        `fit`); with `min_priority`, only jobs of at least that priority.

        For topping up a batch with work whose messages have not arrived yet. `revision`
        None or "" means the model without a revision, as in `add_jobs`. Jobs another
        transaction is claiming right now are skipped, never waited for.
        """
        now, until = _lease_end(now, lease_seconds)
        if limit < 1:
            return []
        of_model = and_(
            Job.status == JobStatus.QUEUED,
            Job.attempts == 0,  # suspects (their worker died holding them) run alone
            Job.model == model,
            Job.revision == ("" if revision is None else revision),
        )
        if min_priority is not None:
            of_model = and_(of_model, Job.priority >= min_priority)
        with self._write() as session:
            candidates = self._lock_free(session, of_model, limit=limit, by_priority=min_priority is not None)
            if max_windows is not None:
                candidates = _within(candidates, max_windows, fit)
            return self._take(session, candidates, worker=worker, now=now, until=until, max_attempts=max_attempts)

    def _lock_free(self, session: Session, condition: Any, *, limit: int | None = None,
                   by_priority: bool = False) -> list[Any]:
        """(id, attempts, worker) of the jobs matching `condition`, locked for this transaction.

        PostgreSQL locks the rows in id order and skips rows another transaction holds,
        so concurrent claimers neither deadlock nor wait; SQLite needs no row locks (the
        write transaction began IMMEDIATE, so it is the only writer).
        """
        stmt = select(Job.id, Job.attempts, Job.worker, Job.lost_in_batch, Job.n_windows).where(condition)
        stmt = stmt.order_by(Job.priority.desc(), Job.id) if by_priority else stmt.order_by(Job.id)
        if limit is not None:
            stmt = stmt.limit(limit)
        if self._postgres:
            stmt = stmt.with_for_update(skip_locked=True, key_share=True)
        return list(session.execute(stmt).all())

    def _take(
        self,
        session: Session,
        candidates: Sequence[Any],
        *,
        worker: str,
        now: datetime,
        until: datetime,
        max_attempts: int | None,
    ) -> list[ClaimedJob]:
        """Mark locked candidates running under `worker` (or failed, when out of attempts); load them."""
        exhausted = _out_of_attempts(candidates, max_attempts)
        if exhausted:
            self._give_up(session, exhausted, now)
        out = {row.id for row in exhausted}
        take = [row.id for row in candidates if row.id not in out]
        _mark_running(session, take, worker=worker, now=now, until=until)
        jobs = _claimed_rows(session, take)
        texts = _claimed_texts(session, sorted({job.text_id for job in jobs}))
        params_cache: dict[str, AnswerParams] = {}
        return [_claimed_job(job, texts, params_cache) for job in sorted(jobs, key=lambda row: row.id)]

    def extend_lease(
        self,
        job_ids: Iterable[int],
        *,
        worker: str,
        lease_seconds: float,
        now: datetime | None = None,
    ) -> list[int]:
        """Push the lease of jobs `worker` is still running to now + lease_seconds; return those ids.

        For batches that may outlive a lease. Jobs no longer running under this worker
        (requeued by the sweeper, or claimed by another) are left alone and not returned.
        """
        now, until = _lease_end(now, lease_seconds)
        ids = sorted(set(job_ids))
        extended: list[int] = []
        with self._write() as session:
            for chunk in chunks(ids):
                result = session.execute(
                    update(Job)
                    .where(Job.id.in_(chunk), Job.status == JobStatus.RUNNING, Job.worker == worker)
                    .values(leased_until=until, updated_at=now)
                    .returning(Job.id)
                    .execution_options(synchronize_session=False)
                )
                extended.extend(result.scalars())
        return sorted(extended)

    def release(self, job_ids: Iterable[int], *, worker: str, now: datetime | None = None) -> list[int]:
        """Hand back jobs `worker` claimed but could not finish through no fault of theirs (the
        store or broker failed mid-run): queued again, the claim's attempt undone. Returns
        the ids handed back; jobs no longer running under `worker` are left alone."""
        now = utcnow() if now is None else now
        ids = sorted(set(job_ids))
        released: list[int] = []
        with self._write() as session:
            for chunk in chunks(ids):
                result = session.execute(
                    update(Job)
                    .where(Job.id.in_(chunk), Job.status == JobStatus.RUNNING, Job.worker == worker)
                    .values(
                        status=JobStatus.QUEUED,
                        attempts=Job.attempts - 1,
                        leased_until=None,
                        updated_at=now,
                    )
                    .returning(Job.id)
                    .execution_options(synchronize_session=False)
                )
                released.extend(result.scalars())
        return sorted(released)

    def requeue_expired(
        self, *, max_attempts: int, now: datetime | None = None, dead_workers: Iterable[str] = (),
        given_up: list[int] | None = None, expired: bool = True,
    ) -> list[int]:
        """The sweeper: running jobs whose lease ran out go back to queued; return their ids.

        Jobs held by `dead_workers` (worker names known to be gone, e.g. a process of
        this host that no longer exists) count as expired whatever their lease says; with
        expired=False only those (a sweeper just back from a store outage lets the other
        workers renew their leases first). The caller re-enqueues the returned ids. A job
        lost in a batch for the first time is marked lost_in_batch (no evidence against
        it); a job whose `evidence` reaches `max_attempts` is marked failed instead, with
        the reason and its last worker; their ids are appended to `given_up` when the
        caller passes a list (for its failed-jobs count).
        """
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        now = utcnow() if now is None else now
        gone = _gone(now, sorted(set(dead_workers)), expired)
        with self._write() as session:
            lost = self._lock_gone(session, gone)
            batch_first, exhausted, requeue = _triage(lost, max_attempts)
            if exhausted:
                self._give_up(session, exhausted, now)
            _requeue(session, requeue, batch_first, now)
        if given_up is not None:  # only once the transaction committed
            given_up.extend(row.id for row in exhausted)
        return requeue

    def _lock_gone(self, session: Session, gone: Any) -> list[Any]:
        """(id, attempts, worker, lost_in_batch) of the running jobs matching `gone`, by id,
        locked for this transaction on PostgreSQL."""
        stmt = (
            select(Job.id, Job.attempts, Job.worker, Job.lost_in_batch)
            .where(Job.status == JobStatus.RUNNING, gone)
            .order_by(Job.id)
        )
        if self._postgres:
            # A job a worker is completing right now is not expired for long: skip it.
            stmt = stmt.with_for_update(skip_locked=True, key_share=True)
        return list(session.execute(stmt).all())

    def running_workers(self) -> list[str]:
        """Names of the workers holding running jobs."""
        stmt = select(Job.worker).where(Job.status == JobStatus.RUNNING, Job.worker.is_not(None)).distinct()
        with self._read() as session:
            return sorted(name for name in session.execute(stmt).scalars() if name is not None)

    def _give_up(self, session: Session, rows: Sequence[Any], now: datetime) -> None:
        errors = {row.id: give_up_message(row.attempts, row.worker) for row in rows}
        session.execute(
            update(Job),
            [{"id": row.id, "status": JobStatus.FAILED, "error": errors[row.id], "finished_at": now,
              "leased_until": None, "updated_at": now} for row in rows],
        )
        fail_parents_of(session, list(errors), errors, now)  # a part given up fails its job
