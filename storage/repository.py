"""All reads and writes of the store, as short transactions safe under concurrency.

Many producer and worker processes may use one database at once, on PostgreSQL or on
SQLite. What keeps them correct:

- Idempotent inserts: documents are unique by sha256 and jobs by their identity;
  `INSERT ... ON CONFLICT DO NOTHING` (both dialects) then a lookup, so two producers
  submitting the same thing get the same ids and neither fails.
- Claims are exclusive: PostgreSQL locks the candidate rows with `FOR UPDATE SKIP
  LOCKED` in id order (no deadlocks, no double claims); SQLite write transactions start
  with `BEGIN IMMEDIATE`, so they run one at a time.
- Answers are replaced, never appended: `complete` deletes and inserts a job's answers
  in one transaction, so a job run twice (at-least-once delivery) has one set of rows.

Times are timezone-aware UTC from this host's clock: leases assume the hosts' clocks
agree to well within a lease (NTP). Lengths of time are in seconds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Engine, and_, delete, func, or_, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from docqa.storage.db import SQLITE_BEGIN_OPTION, session_factory
from docqa.storage.errors import NotFound
from docqa.storage.identity import check_storable, text_sha256
from docqa.storage.models import AnswerRow, Document, Job, JobStatus
from docqa.storage.records import (
    ClaimedJob,
    DocumentRecord,
    Failure,
    JobRecord,
    ResultRecord,
    StoredDocument,
    StoredJob,
)
from docqa.storage.columns import utcnow
from docqa.core.answer import Answer
from docqa.core.params import AnswerParams

# Ids per IN (...) list or rows per multi-row INSERT: far below SQLite's and
# PostgreSQL's bound-parameter limits.
CHUNK = 500
# PostgreSQL advisory lock held while a job's answers are written, so answer ids become
# visible in increasing order (see `iter_results`).
PG_ANSWERS_LOCK_KEY = 0x646F6361  # "doca"

T = TypeVar("T")


def _chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def give_up_message(attempts: int, worker: str | None) -> str:
    """Why a job that kept losing its worker was marked failed."""
    return (
        f"gave up after {attempts} attempts: a worker died or timed out while running this "
        f"job each time (last worker: {worker if worker is not None else 'unknown'}); "
        "check that worker's log for a crash or out-of-memory kill, or raise the lease "
        "if the job is just slow"
    )


class Repository:
    """The store's operations. Each method is one short transaction; no data is cached.

    Methods that change a job raise NotFound for an unknown id; getters return None.
    """

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions
        self._dialect: str | None = None

    @classmethod
    def from_engine(cls, engine: Engine) -> Repository:
        return cls(session_factory(engine))

    # -- transactions -------------------------------------------------------------

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with self._sessions() as session:
            self._remember_dialect(session)
            yield session

    @contextmanager
    def _write(self) -> Iterator[Session]:
        """A transaction that commits on success. On SQLite it holds the write lock from BEGIN."""
        with self._sessions() as session, session.begin():
            session.connection(execution_options={SQLITE_BEGIN_OPTION: "IMMEDIATE"})
            self._remember_dialect(session)
            yield session

    def _remember_dialect(self, session: Session) -> None:
        if self._dialect is None:
            self._dialect = session.get_bind().dialect.name

    @property
    def _postgres(self) -> bool:
        return self._dialect == "postgresql"

    def _insert(self, entity: Any) -> Any:
        # The dialect's INSERT (ON CONFLICT support), imported for the one in use only.
        if self._postgres:
            from sqlalchemy.dialects import postgresql

            return postgresql.insert(entity)
        from sqlalchemy.dialects import sqlite

        return sqlite.insert(entity)

    # -- documents ----------------------------------------------------------------

    def add_document(
        self,
        text: str,
        *,
        source: str | None = None,
        external_id: str | None = None,
        metadata: Any = None,
    ) -> StoredDocument:
        """Store `text` exactly as given, once per distinct text; return (id, sha256, created).

        When the text is already stored, the existing row is returned unchanged (its
        first source, external id and metadata are kept) and created is False.
        Raises ValueError for text the store cannot keep unchanged (NUL, lone surrogates).
        """
        if not isinstance(text, str):
            raise TypeError(f"document text must be str, not {type(text).__name__}")
        check_storable(text, "document text")
        digest = text_sha256(text)
        with self._write() as session:
            stmt = (
                self._insert(Document)
                .values(
                    sha256=digest,
                    text=text,
                    source=source,
                    external_id=external_id,
                    meta=metadata,
                    length=len(text),
                    created_at=utcnow(),
                )
                .on_conflict_do_nothing(index_elements=[Document.sha256])
                .returning(Document.id)
            )
            new_id = session.execute(stmt).scalar_one_or_none()
            if new_id is not None:
                return StoredDocument(new_id, digest, True)
            # Lost the race or resubmitted: the row is committed (PostgreSQL waited for
            # the other insert before doing nothing), so this statement sees it.
            existing = session.execute(select(Document.id).where(Document.sha256 == digest)).scalar_one()
            return StoredDocument(existing, digest, False)

    def document(self, document_id: int) -> DocumentRecord | None:
        with self._read() as session:
            row = session.get(Document, document_id)
            if row is None:
                return None
            return DocumentRecord(
                id=row.id,
                sha256=row.sha256,
                text=row.text,
                source=row.source,
                external_id=row.external_id,
                meta=row.meta,
                length=row.length,
                created_at=row.created_at,
            )

    # -- jobs ---------------------------------------------------------------------

    def add_jobs(
        self,
        document_id: int,
        questions: Sequence[str],
        *,
        model: str,
        revision: str | None,
        params: AnswerParams,
    ) -> list[StoredJob]:
        """Create a queued job per question unless its identity exists; one (id, created) per question.

        The result is aligned with `questions`; a question repeated in the list gets the
        same id, created only at its first occurrence. Raises NotFound for an unknown
        document and ValueError for a question the store cannot keep unchanged.
        """
        if not isinstance(model, str) or not model:
            raise ValueError("model must be a non-empty string (hub id or local folder)")
        if not isinstance(params, AnswerParams):
            raise TypeError(f"params must be AnswerParams, not {type(params).__name__}")
        stored_revision = "" if revision is None else revision
        digests: list[str] = []
        for question in questions:
            if not isinstance(question, str):
                raise TypeError(f"questions must be str, not {type(question).__name__}")
            check_storable(question, "question")
            digests.append(text_sha256(question))
        if not digests:
            return []
        question_of = dict(zip(digests, questions))
        unique = list(dict.fromkeys(digests))
        params_json = params.canonical_json()
        params_digest = params.digest()
        identity = and_(
            Job.document_id == document_id,
            Job.model == model,
            Job.revision == stored_revision,
            Job.params_digest == params_digest,
        )
        ids: dict[str, int] = {}
        created: set[str] = set()
        with self._write() as session:
            if session.execute(select(Document.id).where(Document.id == document_id)).first() is None:
                raise NotFound(f"document {document_id} does not exist; store it before adding jobs")
            now = utcnow()
            for chunk in _chunks(unique):
                rows = [
                    {
                        "document_id": document_id,
                        "question": question_of[digest],
                        "question_sha256": digest,
                        "model": model,
                        "revision": stored_revision,
                        "params": params_json,
                        "params_digest": params_digest,
                        "status": JobStatus.QUEUED,
                        "attempts": 0,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for digest in chunk
                ]
                stmt = (
                    self._insert(Job)
                    .values(rows)
                    .on_conflict_do_nothing(
                        index_elements=[
                            Job.document_id,
                            Job.question_sha256,
                            Job.model,
                            Job.revision,
                            Job.params_digest,
                        ]
                    )
                    .returning(Job.question_sha256, Job.id)
                )
                for digest, job_id in session.execute(stmt):
                    ids[digest] = job_id
                    created.add(digest)
            missing = [digest for digest in unique if digest not in ids]
            for chunk in _chunks(missing):
                stmt = select(Job.question_sha256, Job.id).where(identity, Job.question_sha256.in_(chunk))
                for digest, job_id in session.execute(stmt):
                    ids[digest] = job_id
        result: list[StoredJob] = []
        for digest in digests:
            result.append(StoredJob(ids[digest], digest in created))
            created.discard(digest)
        return result

    def claim(
        self,
        job_ids: Iterable[int],
        *,
        worker: str,
        lease_seconds: float,
        max_attempts: int | None = None,
        now: datetime | None = None,
    ) -> list[ClaimedJob]:
        """Take the given jobs that are free to run; return them (by job id) with their document text.

        A job is free when it is queued, or running under a lease that ran out (its
        worker is presumed dead). Each claimed job becomes running under `worker` until
        now + lease_seconds, and its attempts grow by one. Jobs done, failed, running
        under a live lease, or being claimed by another transaction right now are left
        out; no two callers ever get the same job from one free state.

        With max_attempts, a free job that already had that many attempts is not run
        again but marked failed (a message redelivered after its worker died).
        """
        now, until = _lease_end(now, lease_seconds)
        ids = sorted(set(job_ids))
        if not ids:
            return []
        free = or_(
            Job.status == JobStatus.QUEUED,
            and_(Job.status == JobStatus.RUNNING, Job.leased_until < now),
        )
        with self._write() as session:
            candidates: list[Any] = []
            for chunk in _chunks(ids):
                candidates.extend(self._lock_free(session, and_(Job.id.in_(chunk), free)))
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
    ) -> list[ClaimedJob]:
        """Take up to `limit` queued jobs of one model, oldest first, as `claim` does.

        For topping up a batch with work whose messages have not arrived yet. `revision`
        None or "" means the model without a revision, as in `add_jobs`. Jobs another
        transaction is claiming right now are skipped, never waited for.
        """
        now, until = _lease_end(now, lease_seconds)
        if limit < 1:
            return []
        of_model = and_(
            Job.status == JobStatus.QUEUED,
            Job.model == model,
            Job.revision == ("" if revision is None else revision),
        )
        with self._write() as session:
            candidates = self._lock_free(session, of_model, limit=limit)
            return self._take(session, candidates, worker=worker, now=now, until=until, max_attempts=max_attempts)

    def _lock_free(self, session: Session, condition: Any, *, limit: int | None = None) -> list[Any]:
        """(id, attempts, worker) of the jobs matching `condition`, locked for this transaction.

        PostgreSQL locks the rows in id order and skips rows another transaction holds,
        so concurrent claimers neither deadlock nor wait; SQLite needs no row locks (the
        write transaction began IMMEDIATE, so it is the only writer).
        """
        stmt = select(Job.id, Job.attempts, Job.worker).where(condition).order_by(Job.id)
        if limit is not None:
            stmt = stmt.limit(limit)
        if self._postgres:
            stmt = stmt.with_for_update(skip_locked=True)
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
        exhausted = [row for row in candidates if max_attempts is not None and row.attempts >= max_attempts]
        if exhausted:
            self._give_up(session, exhausted, now)
        take = [row.id for row in candidates if not (max_attempts is not None and row.attempts >= max_attempts)]
        for chunk in _chunks(take):
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
        jobs: list[Any] = []
        for chunk in _chunks(take):
            jobs.extend(
                session.execute(
                    select(
                        Job.id,
                        Job.document_id,
                        Job.question,
                        Job.model,
                        Job.revision,
                        Job.params,
                        Job.attempts,
                    ).where(Job.id.in_(chunk))
                ).all()
            )
        # One copy of each document's text, however many of its jobs are claimed.
        documents: dict[int, tuple[str, str]] = {}
        doc_ids = sorted({job.document_id for job in jobs})
        for chunk in _chunks(doc_ids):
            for doc_id, digest, body in session.execute(
                select(Document.id, Document.sha256, Document.text).where(Document.id.in_(chunk))
            ):
                documents[doc_id] = (digest, body)
        params_cache: dict[str, AnswerParams] = {}
        claimed = []
        for job in sorted(jobs, key=lambda row: row.id):
            params = params_cache.get(job.params)
            if params is None:
                params = params_cache[job.params] = AnswerParams.model_validate_json(job.params)
            digest, body = documents[job.document_id]
            claimed.append(
                ClaimedJob(
                    job_id=job.id,
                    document_id=job.document_id,
                    sha256=digest,
                    text=body,
                    question=job.question,
                    model=job.model,
                    revision=job.revision if job.revision != "" else None,
                    params=params,
                    attempts=job.attempts,
                )
            )
        return claimed

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
            for chunk in _chunks(ids):
                result = session.execute(
                    update(Job)
                    .where(Job.id.in_(chunk), Job.status == JobStatus.RUNNING, Job.worker == worker)
                    .values(leased_until=until, updated_at=now)
                    .returning(Job.id)
                    .execution_options(synchronize_session=False)
                )
                extended.extend(result.scalars())
        return sorted(extended)

    def complete(self, job_id: int, answers: Sequence[Answer], *, model_label: str) -> None:
        """Store a job's answers (replacing any earlier ones) and mark it done, in one transaction.

        `model_label` is "model@revision" or the model alone. Refuses (ValueError, nothing
        written) answers whose ranks repeat, whose numbers are not finite, or whose
        offsets do not select their text in the stored document: the invariant
        `document.text[char_start:char_end] == answer.text` holds for every stored answer.
        A job that was marked failed meanwhile (its lease ran out) becomes done.
        Raises NotFound for a job that does not exist.
        """
        refused = self.complete_many([(job_id, answers)], model_label=model_label)
        if job_id in refused:
            error = refused[job_id]
            raise error

    def complete_many(
        self, results: Sequence[tuple[int, Sequence[Answer]]], *, model_label: str
    ) -> dict[int, ValueError | NotFound]:
        """`complete` for many jobs in one transaction (a worker's whole batch): one lock, one
        insert, one update, instead of a transaction per job.

        Jobs whose answers are refused (the checks of `complete`) or that do not exist are
        left untouched and returned with the error; every other job is stored and done.
        """
        if not isinstance(model_label, str) or not model_label:
            raise ValueError("model_label must be a non-empty string")
        refused: dict[int, ValueError | NotFound] = {}
        checked: dict[int, list[Answer]] = {}
        for job_id, answers in results:
            if job_id in checked or job_id in refused:
                raise ValueError(f"job {job_id} appears twice in one complete_many call")
            try:
                rows = [a if isinstance(a, Answer) else Answer.model_validate(a) for a in answers]
                _check_answers(job_id, rows)
            except ValueError as exc:
                refused[job_id] = exc
                continue
            checked[job_id] = rows
        if not checked:
            return refused
        now = utcnow()
        with self._write() as session:
            # In id order, so two workers completing overlapping batches cannot deadlock;
            # two deliveries of one job completing at once take turns here.
            lock = select(Job.id, Job.document_id).where(Job.id.in_(checked)).order_by(Job.id)
            if self._postgres:
                lock = lock.with_for_update()
            documents = dict(session.execute(lock).all())
            for job_id in list(checked):
                if job_id not in documents:
                    refused[job_id] = NotFound(f"job {job_id} does not exist")
                    del checked[job_id]
                elif checked[job_id]:
                    try:
                        _check_offsets(session, job_id, documents[job_id], checked[job_id])
                    except ValueError as exc:
                        refused[job_id] = exc
                        del checked[job_id]
            if not checked:
                return refused
            if self._postgres:
                session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_ANSWERS_LOCK_KEY})
            session.execute(delete(AnswerRow).where(AnswerRow.job_id.in_(checked)))
            rows = [
                {
                    "job_id": job_id,
                    "rank": a.rank,
                    "text": a.text,
                    "score": a.score,
                    "char_start": a.char_start,
                    "char_end": a.char_end,
                    "window_index": a.window_index,
                    "window_char_start": a.window_char_start,
                    "window_char_end": a.window_char_end,
                    "token_start": a.token_start,
                    "token_end": a.token_end,
                    "start_logit": a.start_logit,
                    "end_logit": a.end_logit,
                    "model": model_label,
                    "created_at": now,
                }
                for job_id in sorted(checked)
                for a in sorted(checked[job_id], key=lambda a: a.rank)
            ]
            for i in range(0, len(rows), CHUNK):
                session.execute(self._insert(AnswerRow).values(rows[i : i + CHUNK]))
            session.execute(
                update(Job)
                .where(Job.id.in_(checked))
                .values(status=JobStatus.DONE, error=None, finished_at=now, leased_until=None, updated_at=now)
                .execution_options(synchronize_session=False)
            )
        return refused

    def fail(self, job_id: int, error: str) -> bool:
        """Mark a job failed with `error` (a sentence a person can act on); return whether it changed.

        A job already done stays done (a late failure report from a stale delivery must
        not hide answers that exist); False is returned then.
        """
        if not isinstance(error, str) or not error.strip():
            raise ValueError("error must be a non-empty sentence saying what went wrong")
        now = utcnow()
        with self._write() as session:
            stmt = select(Job.status).where(Job.id == job_id)
            if self._postgres:
                stmt = stmt.with_for_update()
            status = session.execute(stmt).scalar_one_or_none()
            if status is None:
                raise NotFound(f"job {job_id} does not exist")
            if status == JobStatus.DONE:
                return False
            session.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(status=JobStatus.FAILED, error=error, finished_at=now, leased_until=None, updated_at=now)
                .execution_options(synchronize_session=False)
            )
            return True

    def requeue_expired(
        self, *, max_attempts: int, now: datetime | None = None, dead_workers: Iterable[str] = ()
    ) -> list[int]:
        """The sweeper: running jobs whose lease ran out go back to queued; return their ids.

        Jobs held by `dead_workers` (worker names known to be gone, e.g. a process of
        this host that no longer exists) count as expired whatever their lease says.
        The caller re-enqueues the returned ids. A job that already had `max_attempts`
        attempts is marked failed instead, with the reason and its last worker.
        """
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        now = utcnow() if now is None else now
        dead = sorted(set(dead_workers))
        gone = Job.leased_until < now
        if dead:
            gone = or_(gone, Job.worker.in_(dead))
        with self._write() as session:
            stmt = (
                select(Job.id, Job.attempts, Job.worker)
                .where(Job.status == JobStatus.RUNNING, gone)
                .order_by(Job.id)
            )
            if self._postgres:
                # A job a worker is completing right now is not expired for long: skip it.
                stmt = stmt.with_for_update(skip_locked=True)
            expired = session.execute(stmt).all()
            exhausted = [row for row in expired if row.attempts >= max_attempts]
            requeue = [row.id for row in expired if row.attempts < max_attempts]
            if exhausted:
                self._give_up(session, exhausted, now)
            for chunk in _chunks(requeue):
                session.execute(
                    update(Job)
                    .where(Job.id.in_(chunk))
                    .values(status=JobStatus.QUEUED, leased_until=None, updated_at=now)
                    .execution_options(synchronize_session=False)
                )
        return requeue

    def running_workers(self) -> list[str]:
        """Names of the workers holding running jobs."""
        stmt = select(Job.worker).where(Job.status == JobStatus.RUNNING, Job.worker.is_not(None)).distinct()
        with self._read() as session:
            return sorted(session.execute(stmt).scalars())

    def _give_up(self, session: Session, rows: Sequence[Any], now: datetime) -> None:
        session.execute(
            update(Job),
            [
                {
                    "id": row.id,
                    "status": JobStatus.FAILED,
                    "error": give_up_message(row.attempts, row.worker),
                    "finished_at": now,
                    "leased_until": None,
                    "updated_at": now,
                }
                for row in rows
            ],
        )

    # -- queries ------------------------------------------------------------------

    def job(self, job_id: int) -> JobRecord | None:
        with self._read() as session:
            row = session.get(Job, job_id)
            if row is None:
                return None
            return JobRecord(
                id=row.id,
                document_id=row.document_id,
                question=row.question,
                model=row.model,
                revision=row.revision if row.revision != "" else None,
                params=AnswerParams.model_validate_json(row.params),
                status=row.status,
                attempts=row.attempts,
                error=row.error,
                worker=row.worker,
                created_at=row.created_at,
                updated_at=row.updated_at,
                started_at=row.started_at,
                finished_at=row.finished_at,
                leased_until=row.leased_until,
            )

    def job_statuses(self, job_ids: Iterable[int]) -> dict[int, JobStatus]:
        """Status of each given job that exists (unknown ids are absent)."""
        ids = sorted(set(job_ids))
        statuses: dict[int, JobStatus] = {}
        with self._read() as session:
            for chunk in _chunks(ids):
                for job_id, status in session.execute(select(Job.id, Job.status).where(Job.id.in_(chunk))):
                    statuses[job_id] = status
        return statuses

    def queued_job_ids(
        self, limit: int | None = None, *, model: str | None = None, revision: str | None = None
    ) -> list[int]:
        """Ids of queued jobs, oldest first (ids grow with creation).

        With `model`, only that model's jobs: `revision` None or "" then means the model
        without a revision, as in `add_jobs`. Without `model`, all jobs (revision must
        then be None).
        """
        stmt = select(Job.id).where(Job.status == JobStatus.QUEUED).order_by(Job.id)
        if model is not None:
            stmt = stmt.where(Job.model == model, Job.revision == ("" if revision is None else revision))
        elif revision is not None:
            raise ValueError("a revision filter needs a model")
        if limit is not None:
            stmt = stmt.limit(limit)
        with self._read() as session:
            return list(session.execute(stmt).scalars())

    def counts(self) -> dict[str, int]:
        """Number of jobs per status; every status is present, in JobStatus order."""
        with self._read() as session:
            found = {status: n for status, n in session.execute(select(Job.status, func.count()).group_by(Job.status))}
        return {status.value: found.get(status, 0) for status in JobStatus}

    def failures(self, limit: int = 100) -> list[Failure]:
        """Failed jobs, by job id, with what identifies their document and why they failed."""
        stmt = (
            select(Job.id, Job.question, Job.error, Document.id, Document.external_id, Document.source)
            .join(Document, Job.document_id == Document.id)
            .where(Job.status == JobStatus.FAILED)
            .order_by(Job.id)
            .limit(limit)
        )
        with self._read() as session:
            rows = session.execute(stmt).all()
        return [
            Failure(
                job_id=job_id,
                document=_document_label(doc_id, external_id, source),
                question=question,
                error=error if error is not None else "failed without a recorded reason",
            )
            for job_id, question, error, doc_id, external_id, source in rows
        ]

    def answers_for_job(self, job_id: int) -> list[Answer]:
        """A job's stored answers, by rank (empty when it has none yet)."""
        with self._read() as session:
            rows = session.execute(
                select(AnswerRow).where(AnswerRow.job_id == job_id).order_by(AnswerRow.rank)
            ).scalars()
            return [
                Answer(
                    rank=r.rank,
                    text=r.text,
                    score=r.score,
                    char_start=r.char_start,
                    char_end=r.char_end,
                    window_index=r.window_index,
                    window_char_start=r.window_char_start,
                    window_char_end=r.window_char_end,
                    token_start=r.token_start,
                    token_end=r.token_end,
                    start_logit=r.start_logit,
                    end_logit=r.end_logit,
                )
                for r in rows
            ]

    def iter_results(
        self,
        *,
        document_id: int | None = None,
        job_id: int | None = None,
        after_answer_id: int = 0,
        batch: int = 500,
    ) -> Iterator[ResultRecord]:
        """Answers joined with their jobs and documents, by increasing answer id.

        Reads `batch` rows per short transaction, holding nothing open while the caller
        consumes them. To follow new results, poll again with after_answer_id set to the
        last answer_id seen: answer ids become visible in increasing order (SQLite writes
        one transaction at a time; on PostgreSQL `complete` serialises answer writes), so
        no answer is skipped. A job answered again gets new answer ids and shows up again.
        """
        if batch < 1:
            raise ValueError(f"batch must be at least 1, got {batch}")
        last = after_answer_id
        while True:
            stmt = (
                select(
                    AnswerRow,
                    Job.document_id,
                    Job.question,
                    Document.external_id,
                    Document.source,
                    Document.sha256,
                )
                .join(Job, AnswerRow.job_id == Job.id)
                .join(Document, Job.document_id == Document.id)
                .where(AnswerRow.id > last)
                .order_by(AnswerRow.id)
                .limit(batch)
            )
            if document_id is not None:
                stmt = stmt.where(Job.document_id == document_id)
            if job_id is not None:
                stmt = stmt.where(AnswerRow.job_id == job_id)
            with self._read() as session:
                rows = session.execute(stmt).all()
                records = [
                    ResultRecord(
                        answer_id=a.id,
                        document_id=doc_id,
                        document_external_id=external_id,
                        document_source=source,
                        sha256=digest,
                        job_id=a.job_id,
                        question=question,
                        rank=a.rank,
                        text=a.text,
                        score=a.score,
                        char_start=a.char_start,
                        char_end=a.char_end,
                        window_index=a.window_index,
                        window_char_start=a.window_char_start,
                        window_char_end=a.window_char_end,
                        token_start=a.token_start,
                        token_end=a.token_end,
                        start_logit=a.start_logit,
                        end_logit=a.end_logit,
                        model=a.model,
                    )
                    for a, doc_id, question, external_id, source, digest in rows
                ]
            yield from records
            if len(records) < batch:
                return
            last = records[-1].answer_id


def _lease_end(now: datetime | None, lease_seconds: float) -> tuple[datetime, datetime]:
    """(now, now + lease_seconds), now defaulting to the current UTC time."""
    if not lease_seconds > 0:
        raise ValueError(f"lease_seconds must be positive, got {lease_seconds!r}")
    start = utcnow() if now is None else now
    return start, start + timedelta(seconds=lease_seconds)


def _document_label(document_id: int, external_id: str | None, source: str | None) -> str:
    if external_id is not None and source is not None:
        return f"{external_id} ({source})"
    if external_id is not None:
        return external_id
    if source is not None:
        return source
    return f"document {document_id}"


def _check_answers(job_id: int, answers: Sequence[Answer]) -> None:
    ranks = [a.rank for a in answers]
    if len(set(ranks)) != len(ranks):
        raise ValueError(f"job {job_id}: answer ranks repeat ({sorted(ranks)}); each rank must appear once")
    for a in answers:
        if a.rank < 0:
            raise ValueError(f"job {job_id}: answer rank {a.rank} is negative; ranks are 0-based")
        for name in ("score", "start_logit", "end_logit"):
            value = getattr(a, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(
                    f"job {job_id}: answer rank {a.rank} has {name} {value}; the model produced "
                    "non-finite numbers (try float32 instead of float16)"
                )
        if not 0 <= a.char_start <= a.char_end:
            raise ValueError(
                f"job {job_id}: answer rank {a.rank} has offsets {a.char_start}:{a.char_end}; "
                "need 0 <= char_start <= char_end"
            )
        if len(a.text) != a.char_end - a.char_start:
            raise ValueError(
                f"job {job_id}: answer rank {a.rank} text has {len(a.text)} characters but its "
                f"offsets {a.char_start}:{a.char_end} span {a.char_end - a.char_start}"
            )


def _check_offsets(session: Session, job_id: int, document_id: int, answers: Sequence[Answer]) -> None:
    # substr counts characters (code points) on SQLite and on a UTF8 PostgreSQL
    # database, like Python str indices; only the answers' spans leave the database.
    columns = [Document.length] + [
        func.substr(Document.text, a.char_start + 1, a.char_end - a.char_start) for a in answers
    ]
    row = session.execute(select(*columns).where(Document.id == document_id)).one()
    length, spans = row[0], row[1:]
    for a, span in zip(answers, spans):
        if a.char_end > length:
            raise ValueError(
                f"job {job_id}: answer rank {a.rank} ends at character {a.char_end} but the "
                f"document has {length} characters"
            )
        if span != a.text:
            raise ValueError(
                f"job {job_id}: answer rank {a.rank} text {a.text!r} is not the document text at "
                f"{a.char_start}:{a.char_end} ({span!r}); offsets must index the stored text"
            )
