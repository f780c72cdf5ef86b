"""Window-range parts: a job with more windows than one worker run takes is run as parts
that any worker can claim, and answered once the last part is done.

A part is a job row (`parent_id`, `window_start`, `window_end`): it is claimed, leased,
renewed, fenced, requeued and failed exactly as a job is, so every rule of the reliability
model holds per range. Parts are never linked to documents or submissions: every surface
that reports jobs sees the parent only. States:

    parent claimed -> split: parts queued; parent RUNNING with no worker and no lease
                     (nothing claims, renews or expires it)
    part done      -> its windows' candidates kept in `job_part_results`
    last part done -> the candidates of all parts, in window order, are merged into the
                     parent's answers (fenced by the parent's split state: one merge
                     wins), the parent is done, its parts are deleted
    a part failed  -> the parent fails with the part's reason; its parts are deleted

A finished part is durable: a worker killed mid-range loses only that range's lease.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import Row, and_, case, delete, func, select, update
from sqlalchemy.orm import Session, aliased

from docqa.core.params import AnswerParams
from docqa.storage.columns import utcnow
from docqa.storage.errors import LeaseLost, NotFound
from docqa.storage.models import Job, JobStatus, PartResult, TextRow
from docqa.storage.records import Fence
from docqa.storage.transactions import Transactions, chunks, rowcount


class SplitReady(NamedTuple):
    """A split job whose parts are all done: what merging its answers needs."""

    job_id: int
    attempts: int  # the parent's claim generation: the merge writes under Fence(None, {job_id: attempts})
    text_id: int
    text: str
    params: AnswerParams
    parts: list[bytes]  # each part's encoded windows, in window order


class SplitState(NamedTuple):
    """A split job's progress, for the sweeper and `status`."""

    job_id: int
    parts: int
    done: int


def part_digest(params_digest: str, start: int, end: int) -> str:
    """A part's identity digest: its parent's parameters and its window range, so parts
    never collide with each other or with any job a user asks for."""
    return hashlib.sha256(f"{params_digest}#windows {start}-{end}".encode()).hexdigest()


def split_fence(job_id: int, attempts: int) -> Fence:
    """The fence of a split job's merge: it holds while the job is running with no worker
    (split) under the claim that split it."""
    return Fence(None, {job_id: attempts})  # type: ignore[arg-type]


class Parts(Transactions):
    """Splitting jobs into window-range parts, recording parts, finding merges to do."""

    def split_job(self, job_id: int, ranges: Sequence[tuple[int, int]], *, fence: Fence) -> list[int]:
        """Replace `fence`'s claim of job `job_id` by parts over `ranges` (window index
        ranges, end exclusive, in order): the parts are queued, fresh, with the job's
        priority; the job stays running with no worker and no lease until they are merged.
        Returns the part ids. Raises LeaseLost when the claim no longer holds, NotFound
        for an unknown job. Earlier parts of the job (a failed split that was retried)
        are deleted first."""
        if not ranges:
            raise ValueError("a split needs at least one window range")
        now = utcnow()
        with self._write() as session:
            stmt = select(Job).where(Job.id == job_id)
            if self._postgres:
                stmt = stmt.with_for_update(key_share=True)
            job = session.execute(stmt).scalar_one_or_none()
            if job is None:
                raise NotFound(f"job {job_id} does not exist")
            if not fence.holds(job.status, job.worker, job_id, job.attempts):
                raise LeaseLost(job_id, job.status, job.worker)
            session.execute(delete(Job).where(Job.parent_id == job_id))
            rows = [
                {"text_id": job.text_id, "question": job.question, "question_sha256": job.question_sha256,
                 "model": job.model, "revision": job.revision, "params": job.params,
                 "params_digest": part_digest(job.params_digest, start, end), "status": JobStatus.QUEUED,
                 "attempts": 0, "created_at": now, "updated_at": now, "n_windows": end - start,
                 "parent_id": job_id, "window_start": start, "window_end": end, "priority": job.priority}
                for start, end in ranges
            ]
            ids = list(session.execute(self._insert(Job).values(rows).returning(Job.id)).scalars())
            session.execute(update(Job).where(Job.id == job_id)
                            .values(worker=None, leased_until=None, updated_at=now)
                            .execution_options(synchronize_session=False))
        return sorted(ids)

    def prioritize(self, job_ids: Sequence[int], priority: int) -> int:
        """Raise the priority of those jobs (and of their parts) that are still queued to at
        least `priority`: a caller now waits for them. Returns the rows changed."""
        changed = 0
        with self._write() as session:
            for chunk in chunks(sorted(set(job_ids))):
                mine = (Job.id.in_(chunk)) | (Job.parent_id.in_(chunk))
                changed += rowcount(session.execute(
                    update(Job).where(mine, Job.status == JobStatus.QUEUED, Job.priority < priority)
                    .values(priority=priority).execution_options(synchronize_session=False))) or 0
        return changed

    def complete_parts(self, results: Sequence[tuple[int, bytes]], *, fence: Fence) -> tuple[dict, list[int]]:
        """Record finished parts (part id, encoded windows) under `fence`, in one transaction.
        Returns (refused: part id -> LeaseLost or NotFound, parents whose parts are now all
        done)."""
        now = utcnow()
        with self._write() as session:
            rows = self._lock_parts(session, [r[0] for r in results])
            refused, kept = _check_parts(results, rows, fence)
            if kept:
                self._store_parts(session, kept, now)
            parents = sorted({rows[p].parent_id for p, _ in kept})
        return refused, [s.job_id for s in self.split_states(parents) if s.done == s.parts]

    def _lock_parts(self, session: Session, ids: list[int]) -> dict[int, Row]:
        """The rows of jobs `ids` by id, locked in id order on PostgreSQL."""
        lock = select(Job.id, Job.status, Job.worker, Job.attempts, Job.parent_id).where(
            Job.id.in_(ids)).order_by(Job.id)
        if self._postgres:
            lock = lock.with_for_update(key_share=True)
        return {row.id: row for row in session.execute(lock)}

    def _store_parts(self, session: Session, kept: list[tuple[int, bytes]], now: datetime) -> None:
        """Keep each part's windows (replacing earlier ones) and mark the parts done."""
        ids = [p for p, _ in kept]
        session.execute(delete(PartResult).where(PartResult.job_id.in_(ids)))
        session.execute(self._insert(PartResult).values(
            [{"job_id": p, "data": d, "created_at": now} for p, d in kept]))
        session.execute(update(Job).where(Job.id.in_(ids))
                        .values(status=JobStatus.DONE, finished_at=now, leased_until=None, updated_at=now)
                        .execution_options(synchronize_session=False))

    def split_states(self, parent_ids: Iterable[int] | None = None) -> list[SplitState]:
        """Split jobs (running, no worker, with parts): their parts and how many are done.
        All of them, or those of `parent_ids`."""
        done = func.sum(case((Job.status == JobStatus.DONE, 1), else_=0))
        stmt = select(Job.parent_id, func.count(), done).where(Job.parent_id.is_not(None)).group_by(Job.parent_id)
        out: list[SplitState] = []
        with self._read() as session:
            if parent_ids is None:
                out = [SplitState(job_id=p, parts=n, done=int(d or 0))
                       for p, n, d in session.execute(stmt.order_by(Job.parent_id))]
            else:
                for chunk in chunks(sorted(set(parent_ids))):
                    out += [SplitState(job_id=p, parts=n, done=int(d or 0))
                            for p, n, d in session.execute(stmt.where(Job.parent_id.in_(chunk)))]
        return sorted(out)

    def split_ready(self, job_id: int) -> SplitReady | None:
        """What merging split job `job_id` needs, once all its parts are done (else None)."""
        with self._read() as session:
            parent = session.execute(select(Job.attempts, Job.text_id, Job.status, Job.worker, Job.params, TextRow.text)
                                     .join(TextRow, TextRow.id == Job.text_id).where(Job.id == job_id)).one_or_none()
            if parent is None or parent.status != JobStatus.RUNNING or parent.worker is not None:
                return None
            parts = session.execute(
                select(Job.status, PartResult.data).outerjoin(PartResult, PartResult.job_id == Job.id)
                .where(Job.parent_id == job_id).order_by(Job.window_start)
            ).all()
        if not parts or any(status != JobStatus.DONE or data is None for status, data in parts):
            return None
        return SplitReady(job_id=job_id, attempts=parent.attempts, text_id=parent.text_id, text=parent.text,
                          params=AnswerParams.model_validate_json(parent.params),
                          parts=[data for _status, data in parts])

    def drop_parts(self, job_id: int) -> int:
        """Delete the parts of a job that is no longer split (done or failed); returns how many."""
        with self._write() as session:
            status = session.execute(select(Job.status).where(Job.id == job_id)).scalar_one_or_none()
            if status not in (JobStatus.DONE, JobStatus.FAILED):
                return 0
            return rowcount(session.execute(delete(Job).where(Job.parent_id == job_id))) or 0

    def unsplit_orphans(self) -> list[int]:
        """Jobs left running with no worker and no parts (a split whose parts are gone) go
        back to queued; returns their ids. The sweeper's safety net: splitting, failing and
        merging never leave a job so."""
        now = utcnow()
        part = aliased(Job)
        stranded = and_(Job.status == JobStatus.RUNNING, Job.worker.is_(None), Job.parent_id.is_(None),
                        ~select(part.id).where(part.parent_id == Job.id).exists())
        with self._write() as session:
            ids = list(session.execute(select(Job.id).where(stranded)).scalars())
            for chunk in chunks(ids):
                session.execute(update(Job).where(Job.id.in_(chunk), stranded)
                                .values(status=JobStatus.QUEUED, leased_until=None, updated_at=now)
                                .execution_options(synchronize_session=False))
        return ids


def _check_parts(results: Sequence[tuple[int, bytes]], rows: dict[int, Row], fence: Fence,
                 ) -> tuple[dict[int, Exception], list[tuple[int, bytes]]]:
    """(refused: part id -> NotFound or LeaseLost, the results `fence` may record)."""
    refused: dict[int, Exception] = {}
    kept = []
    for part_id, data in results:
        row = rows.get(part_id)
        if row is None or row.parent_id is None:
            refused[part_id] = NotFound(f"part {part_id} does not exist")
        elif not fence.holds(row.status, row.worker, part_id, row.attempts):
            refused[part_id] = LeaseLost(part_id, row.status, row.worker)
        else:
            kept.append((part_id, data))
    return refused, kept


def fail_parents_of(session: Session, part_ids: Sequence[int], errors: dict[int, str], now) -> None:
    """In the caller's transaction: the parents of the failed parts among `part_ids` fail with
    the part's reason, and all their parts are deleted. `errors`: part id -> its error."""
    rows: list[Row] = []
    for chunk in chunks(sorted(set(part_ids))):
        rows += session.execute(select(Job.id, Job.parent_id, Job.window_start, Job.window_end)
                                .where(Job.id.in_(chunk), Job.parent_id.is_not(None))).all()
    for part_id, parent_id, start, end in rows:
        error = (f"its windows {start}-{end - 1} (run as one part of a split job) failed: "
                 f"{errors.get(part_id, 'no reason recorded')}")
        session.execute(update(Job).where(Job.id == parent_id, Job.status != JobStatus.DONE)
                        .values(status=JobStatus.FAILED, error=error, finished_at=now, leased_until=None,
                                worker=None, updated_at=now)
                        .execution_options(synchronize_session=False))
        session.execute(delete(Job).where(Job.parent_id == parent_id))
